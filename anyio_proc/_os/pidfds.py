"""Linux: pidfds for processes that are not our children (descendants, session members).

A pidfd names one process, not a number: a signal sent through it cannot reach a stranger
that got the pid after the process exited, and it turns readable once the process has
exited, whoever its parent is. The exit waiters open pidfds for our own children
(``waiters/pidfd.py``); this is for the others, where a pidfd is a nicety with a fallback
(the pid and its start time), not a requirement.
"""

from __future__ import annotations

import errno
import os
import select
import sys

assert sys.platform == "linux"

__all__ = ["has_exited", "pidfd_or_none"]

# Cleared on the first ENOSYS or EPERM: the kernel (or a seccomp filter) has none for us.
_use_pidfds = hasattr(os, "pidfd_open")


def pidfd_or_none(pid: int) -> int | None:
    """A pidfd for ``pid``, or None where there are none; ProcessLookupError if gone."""
    global _use_pidfds
    if not _use_pidfds:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise ProcessLookupError(pid) from None
        if exc.errno in (errno.ENOSYS, errno.EPERM):  # old kernel, seccomp filter
            _use_pidfds = False
        return None  # EMFILE and the like: this one goes by pid and start time


def has_exited(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has exited (reaped by its parent or not); never
    blocks."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
