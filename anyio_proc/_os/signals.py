"""Signals, per OS: the one that cannot be caught, and holding back the ones that can."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator

__all__ = ["SIGKILL", "signals_deferred", "start_quiet_thread"]

if sys.platform == "win32":
    SIGKILL = int(signal.SIGTERM)  # Windows terminates the process for every signal

    def signals_deferred() -> contextlib.AbstractContextManager[None]:
        """Nothing to hold back: Windows has no signal masks."""
        return contextlib.nullcontext()

else:
    SIGKILL = int(signal.SIGKILL)

    # The signals a Python handler (or an event loop's) may turn into an exception raised
    # anywhere: Ctrl-C, a terminal's hangup or quit, kill's default, timers, the user's own.
    _DEFERRED = {
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGALRM,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }

    @contextlib.contextmanager
    def signals_deferred() -> Iterator[None]:
        """Hold those signals back in this thread for the block; they arrive at its end.

        For the exit policy's last resort, which must not be cut short half way (an fd
        opened but not yet closed, a child signalled but not yet reaped). Synchronous
        faults (SIGSEGV, SIGBUS) are never held back.
        """
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def start_quiet_thread(thread: threading.Thread) -> None:
    """Start one of our helper threads (waiters, reapers) with those signals held back.

    A thread inherits its creator's mask. The kernel gives a signal meant for the process
    to any thread that does not hold it back, and picks another than the main one when the
    main one has a signal pending already: a second Ctrl-C could then land in a waiter
    thread, and a blocking call in the main thread (a ``time.sleep`` in a callback) would go
    on as if nothing had been pressed. Python runs handlers in the main thread anyway.

    Never for a thread that starts programs: they would inherit the mask across exec.
    """
    with signals_deferred():
        thread.start()
