"""Linux >= 5.4: a pidfd per child, readable once the child has exited.

The pidfd also makes signalling safe: ``pidfd_send_signal`` names the process, not a pid
number that could already belong to somebody else.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import signal
import sys

assert sys.platform == "linux"

from .base import FdWaiter  # noqa: E402
from .posix import waitid_returncode  # noqa: E402

__all__ = ["PidfdWaiter", "available"]


@functools.cache
def available() -> bool:
    """True when both ``pidfd_open`` and ``waitid(P_PIDFD)`` work here."""
    if not hasattr(os, "pidfd_open") or not hasattr(os, "P_PIDFD"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS on old kernels, EPERM under some seccomp filters
        return False
    try:
        # We are not our own child, so a kernel that knows P_PIDFD (5.4+) answers ECHILD;
        # 5.3 has pidfd_open but answers EINVAL here.
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class PidfdWaiter(FdWaiter):
    __slots__ = ()

    def __init__(self, pid: int) -> None:
        super().__init__(pid, os.pidfd_open(pid))

    def poll(self, *, reap: bool) -> int | None:
        return waitid_returncode(os.P_PIDFD, self._fd, reap=reap)

    def send_signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self._fd, sig)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH)) from None
            raise

    def _reap_and_close(self) -> None:
        # Not a blocking waitid(P_PIDFD): an event loop that watched the pidfd may have made
        # it O_NONBLOCK (libuv does), and waitid then fails with EAGAIN. poll() ignores the
        # flag, so wait for readability there and reap without blocking.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while True:
                poller.poll()
                if waitid_returncode(os.P_PIDFD, self._fd, reap=True) is not None:
                    break
        except ChildProcessError:
            pass
        finally:
            self.close()
