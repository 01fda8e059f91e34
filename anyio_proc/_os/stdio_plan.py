"""The child's stdio, made safe to install whatever the parent's fds 0-2 are.

A launch gets, for each of stdin, stdout and stderr: ``None`` (inherit), ``DEVNULL``,
``STDOUT`` (stderr only) or an fd of ours to install there. :func:`plan_stdio` turns that
into what both launch paths can install in any order, even when the parent has free slots
among 0-2 (a daemon, ``prog <&-``), where the pipes, terminals and files made for the spawn
land.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CLOSED", "DEVNULL", "STDOUT", "close_all", "plan_stdio", "reaches_child"]

DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
#: In a planned stdio (never given to subprocess): the child must not have this fd open.
CLOSED = -100
_STREAMS = ("stdin", "stdout", "stderr")


def reaches_child(fd: int, pass_fds: Sequence[int]) -> bool:
    """Whether the child gets our ``fd`` at the same number when nothing is installed
    there: open and inheritable, or kept with ``pass_fds``."""
    if fd in pass_fds:
        return True
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False  # closed


def plan_stdio(
    stdio: tuple[int | None, ...], pass_fds: Sequence[int], terminal: int | None = None
) -> tuple[tuple[int | None, ...], list[int]]:
    """``stdio`` made safe to install in any order, and the fds made for it, ours to close
    (:func:`close_all`) once the child exists (or not).

    With a free slot among 0-2 in the parent (a daemon, ``prog <&-``), a pipe, terminal
    or file for the spawn lands there. At its own target it still needs installing, since
    our fds are close-on-exec; at another it may be overwritten by an earlier dup2
    (bpo-32844); so every such source moves to a close-on-exec copy above 2. Left as it
    is: a source at its target that the child gets anyway (the parent's own stdio passed
    on), and ``terminal``, which the child opens by name.

    stderr sent to an inherited stdout goes where the child's fd 1 goes: to the parent's
    fd 1 when the child gets it, else nowhere (:data:`CLOSED`), never to whatever of ours
    sits on 1. A ``pass_fds`` entry among 0-2 keeps its number, so it is refused (with
    :class:`ValueError`) as the target of a stream set otherwise.
    """
    if sys.platform == "win32":
        return stdio, []  # handles, not fd numbers: subprocess maps them
    for fd in pass_fds:
        if fd <= 2 and stdio[fd] is not None and stdio[fd] != fd:
            raise ValueError(
                f"pass_fds keeps fd {fd} for the child, which is also its {_STREAMS[fd]}, "
                "set to something else"
            )
    sources = list(stdio)
    if sources[2] == STDOUT and sources[1] is None:
        sources[2] = 1 if reaches_child(1, pass_fds) else CLOSED
    copies: dict[int, int] = {}
    try:
        for target, source in enumerate(sources):
            if source is None or not 0 <= source <= 2 or source == terminal:
                continue
            if source == target and reaches_child(source, pass_fds):
                continue
            if source not in copies:
                copies[source] = _copy_above_stdio(source)
            sources[target] = copies[source]
    except BaseException:
        close_all(list(copies.values()))
        raise
    return tuple(sources), list(copies.values())


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


if sys.platform == "win32":

    def _copy_above_stdio(fd: int) -> int:
        raise NotImplementedError  # plan_stdio leaves Windows' stdio to subprocess

else:
    import fcntl

    def _copy_above_stdio(fd: int) -> int:
        """A close-on-exec copy of ``fd`` above 2 (``os.dup`` would take a free slot)."""
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
