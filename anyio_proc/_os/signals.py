"""The signal that cannot be caught, per OS."""

from __future__ import annotations

import signal
import sys

__all__ = ["SIGKILL"]

if sys.platform == "win32":
    SIGKILL = int(signal.SIGTERM)  # Windows terminates the process for every signal
else:
    SIGKILL = int(signal.SIGKILL)
