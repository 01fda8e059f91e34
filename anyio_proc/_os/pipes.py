"""Pipe calls that differ by OS: blocking mode, capacity."""

from __future__ import annotations

import os
import sys

__all__ = ["grow_pipe", "set_blocking"]

if sys.platform == "win32":

    def set_blocking(fd: int, blocking: bool) -> None:
        raise NotImplementedError("pipes to a child are not supported on Windows yet")

    def grow_pipe(fd: int) -> None:
        """Windows pipes are not grown."""

elif sys.platform == "linux":
    import fcntl

    set_blocking = os.set_blocking

    #: 1 MiB: well past the point where larger buffers stop paying (measured in benchmarks/),
    #: and within the default per-user budget (pipe-user-pages-soft) for dozens of busy pipes.
    _BUSY_PIPE_SIZE = 1 << 20

    def grow_pipe(fd: int) -> None:
        """Enlarge a pipe that has proved busy, so reader and writer wake up less often.

        A 64 KiB pipe makes the writer block and the reader wait on every 64 KiB; with 1 MiB
        each side does sixteen times fewer round trips through the scheduler. Only pipes that
        filled up are grown, so a thousand quiet children do not eat the user's pipe budget.
        """
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _BUSY_PIPE_SIZE)
        except OSError:
            pass  # EPERM past the user's pipe budget, EBUSY: the pipe works as it is

else:
    set_blocking = os.set_blocking

    def grow_pipe(fd: int) -> None:
        """Pipe capacity is fixed outside Linux."""
