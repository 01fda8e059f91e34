"""A service for the Procfile demo that takes a while to become ready.

It prints ``ready`` once warmed up (the Procfile's ``#@ready warmup=re:^ready``), and says
goodbye when asked to stop with SIGTERM, as a well-behaved server does.
"""

from __future__ import annotations

import signal
import time


def stop(signum: int, frame: object) -> None:
    # Only raise here: the handler may run in the middle of a print(), and printing from it
    # would re-enter stdout's buffer (RuntimeError: reentrant call).
    raise SystemExit(0)


signal.signal(signal.SIGTERM, stop)
try:
    print("warming up the caches...")
    time.sleep(1.0)
    print("ready")
    while True:
        time.sleep(3600)
except SystemExit:
    print("SIGTERM: finishing up, bye")
    raise
