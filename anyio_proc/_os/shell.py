"""The system shell's command line for ``Command.shell``."""

from __future__ import annotations

import os
import sys

__all__ = ["shell_argv"]


def shell_argv(line: str) -> tuple[str, ...]:
    """``/bin/sh -c line``, or ``cmd.exe /c line`` on Windows."""
    if sys.platform == "win32":
        return (os.environ.get("COMSPEC", "cmd.exe"), "/c", line)
    return ("/bin/sh", "-c", line)
