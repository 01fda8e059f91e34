"""Per-OS exit waiters behind one interface, chosen once per spawn.

``ANYIO_PROC_WAITER`` forces a mechanism (``pidfd``, ``thread``, ``kqueue``, ``windows``);
otherwise the best one this system supports is used. No waiter installs a ``SIGCHLD``
handler or calls ``waitpid(-1)``, so other code's children are never touched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ._base import ExitWaiter

__all__ = [
    "SIGKILL",
    "ExitWaiter",
    "available_waiters",
    "group_has_members",
    "grow_pipe",
    "select_waiter",
    "set_blocking",
    "signal_group",
]

ENV_VAR = "ANYIO_PROC_WAITER"

WaiterFactory = Callable[[int], ExitWaiter]


def _factories() -> dict[str, WaiterFactory]:
    """Mechanisms usable on this system, best first."""
    found: dict[str, WaiterFactory] = {}
    if sys.platform == "win32":
        from ._windows import WindowsWaiter

        found["windows"] = WindowsWaiter
    else:
        if sys.platform == "linux":
            from . import _pidfd

            if _pidfd.available():
                found["pidfd"] = _pidfd.PidfdWaiter
        else:
            from . import _kqueue

            if _kqueue.available():
                found["kqueue"] = _kqueue.KqueueWaiter
        if sys.platform != "darwin" or sys.version_info >= (3, 13):  # needs waitid(WNOWAIT)
            from ._thread import ThreadWaiter

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


# The few process calls that differ by OS, so no other module needs a platform check.
if sys.platform == "win32":
    import signal as _signal

    SIGKILL = int(_signal.SIGTERM)  # Windows terminates for every signal

    def set_blocking(fd: int, blocking: bool) -> None:
        raise NotImplementedError("pipes to a child are not supported on Windows yet")

    def signal_group(pgid: int, sig: int) -> None:
        raise ProcessLookupError("Windows has no process groups to signal")

    def group_has_members(pgid: int, leader: int) -> bool | None:
        return False

    def grow_pipe(fd: int) -> None:
        pass

else:
    import signal as _signal

    SIGKILL = int(_signal.SIGKILL)
    set_blocking = os.set_blocking
    signal_group = os.killpg

    if sys.platform == "linux":
        from ._pipe_linux import grow_pipe
        from ._proc_linux import group_has_members
    else:

        def grow_pipe(fd: int) -> None:
            """Pipe capacity is fixed outside Linux."""

        def group_has_members(pgid: int, leader: int) -> bool | None:
            """Without /proc the members of a group cannot be listed: unknown."""
            return None
