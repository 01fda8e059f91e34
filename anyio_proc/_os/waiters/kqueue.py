"""macOS and the BSDs: a kqueue per child with ``EVFILT_PROC``/``NOTE_EXIT``.

The kqueue fd turns readable when the exit event is queued and stays readable, since the
event is never drained. Not run on this project's CI (Linux); type-checked with
``mypy --platform darwin``.
"""

from __future__ import annotations

import os
import select
import sys

assert sys.platform != "linux"
assert sys.platform != "win32"

from .base import FdWaiter  # noqa: E402
from .posix import waitid_returncode  # noqa: E402

__all__ = ["KqueueWaiter", "available"]


def available() -> bool:
    return hasattr(select, "kqueue")


class KqueueWaiter(FdWaiter):
    __slots__ = ("_kqueue",)

    def __init__(self, pid: int) -> None:
        kq = select.kqueue()
        event = select.kevent(
            pid,
            select.KQ_FILTER_PROC,
            select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
            select.KQ_NOTE_EXIT,
        )
        try:
            kq.control([event], 0)
        except ProcessLookupError:
            # Already exited and reaped is impossible (we are the only reaper); ESRCH here
            # means it exited before registration, and poll() will find the zombie.
            pass
        except BaseException:
            kq.close()
            raise
        self._kqueue = kq
        super().__init__(pid, kq.fileno())

    def poll(self, *, reap: bool) -> int | None:
        return waitid_returncode(os.P_PID, self.pid, reap=reap)

    async def wait(self) -> None:
        if self.poll(reap=False) is not None:
            return  # covers the ESRCH case above, where no event will ever be queued
        await super().wait()

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def close(self) -> None:
        try:
            super().close()
        finally:
            # super() closed the number; detach the object so it does not close it again.
            self._kqueue = None  # type: ignore[assignment]
