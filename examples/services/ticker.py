"""A worker for the Procfile demo: prints a tick now and then until it is stopped."""

from __future__ import annotations

import itertools
import time

for n in itertools.count(1):
    print(f"tick {n}")
    time.sleep(0.4)
