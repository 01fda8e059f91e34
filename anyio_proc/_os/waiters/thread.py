"""Portable POSIX fallback: one thread per child, blocked in ``waitid(WNOWAIT)``.

The thread never reaps: when the child exits it closes the write end of a pipe, the read
end turns readable (EOF) for good, and the event-loop side reaps with ``WNOHANG``. The
thread starts on the first wait, so a child that is only polled costs no thread.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

from ..._polling import poll_until
from ..signals import start_quiet_thread

assert sys.platform != "win32"
assert sys.platform != "darwin" or sys.version_info >= (3, 13)  # it needs waitid(WNOWAIT)

from .base import FdWaiter  # noqa: E402
from .posix import waitid_returncode  # noqa: E402

if sys.platform == "linux":
    from ..procfs import read_stat

__all__ = ["ThreadWaiter"]

#: What :func:`_start_time` says of a process that is not even a zombie: reaped, by somebody.
_GONE = -1


#: The newest waiter made for each pid: an older one names a process reaped elsewhere.
_newest: weakref.WeakValueDictionary[int, ThreadWaiter] = weakref.WeakValueDictionary()


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (Linux: from /proc/<pid>/stat), ``_GONE`` if it is not there;
    None where that cannot be known."""
    if sys.platform != "linux":
        return None
    try:
        stat = read_stat(pid)
    except OSError:
        return None  # EMFILE, EACCES and the like say nothing about the process
    return _GONE if stat is None else stat.start


class ThreadWaiter(FdWaiter):
    __slots__ = ("_started", "_thread", "_write_fd")

    def __init__(self, pid: int) -> None:
        # Made at spawn, not at first wait, so fd exhaustion surfaces while spawning.
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        super().__init__(pid, read_fd)
        self._write_fd: int | None = write_fd
        self._thread: threading.Thread | None = None
        # The pid alone cannot tell our child from a process that got its number after a
        # foreign reaper freed it (another child of ours would even pass waitid): a later
        # spawn of ours with that pid, or on Linux a different start time, tells them apart.
        self._started = _start_time(pid)
        _newest[pid] = self

    def _check_same_process(self) -> None:
        if _newest.get(self.pid) is not self:
            raise ChildProcessError(f"process {self.pid} was reaped elsewhere")
        if self._started is not None:
            now = _start_time(self.pid)
            if now is not None and now != self._started:
                raise ChildProcessError(f"process {self.pid} was reaped elsewhere")

    def poll(self, *, reap: bool) -> int | None:
        self._check_same_process()
        return waitid_returncode(os.P_PID, self.pid, reap=reap)

    async def wait(self) -> None:
        if self._thread is None:
            write_fd = self._write_fd
            assert write_fd is not None
            thread = threading.Thread(
                target=self._watch,
                args=(write_fd,),
                name=f"anyio_proc waiter {self.pid}",
                daemon=True,
            )
            try:
                start_quiet_thread(thread)
            except RuntimeError:
                # No thread can be made now (RLIMIT_NPROC reached, say): poll for the exit
                # instead; a later wait() tries a thread again.
                await poll_until(self._exited)
                return
            self._write_fd = None
            self._thread = thread
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
            self._check_same_process()
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
