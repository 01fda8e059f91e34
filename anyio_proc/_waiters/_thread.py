"""Portable POSIX fallback: one thread per child, blocked in ``waitid(WNOWAIT)``.

The thread never reaps: when the child exits it closes the write end of a pipe, the read
end turns readable (EOF) for good, and the event-loop side reaps with ``WNOHANG``. The
thread starts on the first wait, so a child that is only polled costs no thread.
"""

from __future__ import annotations

import os
import sys
import threading

assert sys.platform != "win32"
assert sys.platform != "darwin" or sys.version_info >= (3, 13)  # it needs waitid(WNOWAIT)

from ._base import FdWaiter  # noqa: E402
from ._posix import waitid_returncode  # noqa: E402

__all__ = ["ThreadWaiter"]


class ThreadWaiter(FdWaiter):
    __slots__ = ("_thread", "_write_fd")

    def __init__(self, pid: int) -> None:
        # Made at spawn, not at first wait, so fd exhaustion surfaces while spawning.
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        super().__init__(pid, read_fd)
        self._write_fd: int | None = write_fd
        self._thread: threading.Thread | None = None

    def poll(self, *, reap: bool) -> int | None:
        return waitid_returncode(os.P_PID, self.pid, reap=reap)

    async def wait(self) -> None:
        if self._thread is None:
            write_fd, self._write_fd = self._write_fd, None
            assert write_fd is not None
            self._thread = threading.Thread(
                target=self._watch,
                args=(write_fd,),
                name=f"anyio_proc waiter {self.pid}",
                daemon=True,
            )
            self._thread.start()
        await super().wait()

    def _watch(self, write_fd: int) -> None:
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped already, by us or by a foreign reaper: wake the loop either way
        finally:
            # The thread owns this end, so no other code can close a recycled fd number.
            os.close(write_fd)

    def send_signal(self, sig: int) -> None:
        # A foreign reaper (a SIGCHLD handler calling waitpid(-1)) may have freed the pid
        # for reuse; waitid then answers ECHILD and we must not signal a stranger.
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            raise ProcessLookupError(f"process {self.pid} was reaped elsewhere") from None
        os.kill(self.pid, sig)

    def close(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        if self._thread is not None:
            # The child has been reaped, so the thread's waitid has returned or is about to.
            self._thread.join(timeout=1.0)
        super().close()
