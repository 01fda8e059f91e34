"""Reading exit statuses with waitid(2), shared by the POSIX waiters."""

from __future__ import annotations

import os
import sys

assert sys.platform != "win32"

__all__ = ["waitid_returncode"]


if sys.platform != "darwin" or sys.version_info >= (3, 13):

    def waitid_returncode(idtype: int, ident: int, *, reap: bool) -> int | None:
        """The returncode of the child named by ``(idtype, ident)`` if it exited, else None."""
        flags = os.WEXITED | os.WNOHANG
        if not reap:
            flags |= os.WNOWAIT
        result = os.waitid(idtype, ident, flags)
        if result is None or result.si_pid == 0:
            # Some systems return a zeroed siginfo instead of None when nothing has exited.
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status

else:

    def waitid_returncode(idtype: int, ident: int, *, reap: bool) -> int | None:
        """macOS before Python 3.13 has no waitid, hence no WNOWAIT: this always reaps, so a
        group leader's zombie cannot be kept to pin its group number there."""
        pid, status = os.waitpid(ident, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)
