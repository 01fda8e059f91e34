"""Per-OS exit waiters behind one interface, chosen once per spawn.

``ANYIO_PROC_WAITER`` forces a mechanism (``pidfd``, ``thread``, ``kqueue``, ``windows``);
otherwise the best one this system supports is used. No waiter installs a ``SIGCHLD``
handler or calls ``waitpid(-1)``, so other code's children are never touched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .base import ExitWaiter

__all__ = ["ExitWaiter", "available_waiters", "select_waiter"]

ENV_VAR = "ANYIO_PROC_WAITER"

WaiterFactory = Callable[[int], ExitWaiter]


def _factories() -> dict[str, WaiterFactory]:
    """Mechanisms usable on this system, best first."""
    found: dict[str, WaiterFactory] = {}
    if sys.platform == "win32":
        from .windows import WindowsWaiter

        found["windows"] = WindowsWaiter
    else:
        if sys.platform == "linux":
            from . import pidfd as _pidfd

            if _pidfd.available():
                found["pidfd"] = _pidfd.PidfdWaiter
        else:
            from . import kqueue as _kqueue

            if _kqueue.available():
                found["kqueue"] = _kqueue.KqueueWaiter
        if sys.platform != "darwin" or sys.version_info >= (3, 13):  # needs waitid(WNOWAIT)
            from .thread import ThreadWaiter

            found["thread"] = ThreadWaiter
    return found


_FACTORIES = _factories()
_KNOWN = ("pidfd", "kqueue", "thread", "windows")


def available_waiters() -> tuple[str, ...]:
    """Names of the waiters this system can run, the automatic choice first."""
    return tuple(_FACTORIES)


def select_waiter() -> WaiterFactory:
    """The factory to use for the next spawn; raises before anything is started."""
    forced = os.environ.get(ENV_VAR)
    if not forced:
        return next(iter(_FACTORIES.values()))
    try:
        return _FACTORIES[forced]
    except KeyError:
        what = "unknown" if forced not in _KNOWN else "not available on this system"
        raise RuntimeError(
            f"{ENV_VAR}={forced!r} is {what}; choose one of {', '.join(_FACTORIES)}"
        ) from None
