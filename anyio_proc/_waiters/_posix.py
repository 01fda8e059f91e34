"""Reading exit statuses with waitid(2), shared by the POSIX waiters."""

from __future__ import annotations

import os
import sys

assert sys.platform != "win32"

__all__ = ["waitid_returncode"]


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
