"""Linux: one listing of ``/proc`` shared by every process group and session waited on.

The exit policy must know when the members of a group or a session (processes that are
not our children, so nothing tells us of their exit) are gone. Listing ``/proc`` for each
of a thousand groups ending at once made shutting them down quadratic, in the event loop's
thread. So one census at a time is taken, in a worker thread, and whoever needs to know
reads the last one, or waits for one begun after the moment that matters to it
(:func:`census_after`).

Only imported on Linux (``groups.py``, ``session.py``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from . import procfs
from .signals import signals_deferred

if TYPE_CHECKING:
    from collections.abc import Iterator

# Type checkers skip the rest of the module for other systems, as the code does.
assert sys.platform == "linux"

__all__ = ["Census", "Member", "Unlisted", "census_after", "last_census", "stats", "take_census"]


class Unlisted(Exception):
    """``/proc`` cannot be listed, or a process may have been missed for lack of fds."""


def stats(skip: int) -> Iterator[tuple[int, procfs.Stat]]:
    """The pid and stat of every process but ``skip``, as far as we may see them."""
    try:
        names = procfs.proc_list("/proc")
    except OSError:
        raise Unlisted from None
    if names is None:
        raise Unlisted
    for name in names:
        if not name.isdigit() or int(name) == skip:
            continue
        try:
            stat = procfs.read_stat(int(name))
        except OSError as exc:
            if exc.errno in procfs.NO_ROOM:
                raise Unlisted from None
            continue  # hidden from us (hidepid): not a process we could signal
        if stat is not None:
            yield int(name), stat


class Member:
    """One live process of a session: what its ``stat`` said when the census was taken."""

    __slots__ = ("pgid", "pid", "start", "stopped")

    def __init__(self, pid: int, pgid: int, start: int, stopped: bool) -> None:
        self.pid = pid
        self.pgid = pgid
        self.start = start  # clock ticks after boot: with the pid, it names one process
        self.stopped = stopped


class Census:
    """One listing of ``/proc``: the live processes (zombies left out: no signal reaches
    them) of every group and every session, when the listing began and how long it took.
    ``groups`` and ``sessions`` are None when ``/proc`` could not be listed."""

    __slots__ = ("groups", "sessions", "taken", "took")

    def __init__(
        self,
        taken: float,
        took: float,
        groups: dict[int, list[int]] | None,
        sessions: dict[int, list[Member]] | None,
    ) -> None:
        self.taken = taken
        self.took = took
        self.groups = groups
        self.sessions = sessions


# The last census, replaced whole (never changed in place), so that threads running event
# loops of their own each see one census or the next.
_last = Census(-math.inf, 0.0, None, None)


def last_census() -> Census:
    """The last census taken, in any thread (one begun at ``-inf`` before the first)."""
    return _last


def take_census() -> Census:
    """List ``/proc`` now, in the caller's thread; the result is the last census too."""
    global _last
    taken = time.monotonic()
    groups: dict[int, list[int]] = {}
    sessions: dict[int, list[Member]] = {}
    try:
        for pid, stat in stats(0):
            if not stat.exited:
                groups.setdefault(stat.pgid, []).append(pid)
                member = Member(pid, stat.pgid, stat.start, stat.stopped)
                sessions.setdefault(stat.sid, []).append(member)
    except Unlisted:
        census = _last = Census(taken, time.monotonic() - taken, None, None)
    else:
        census = _last = Census(taken, time.monotonic() - taken, groups, sessions)
    return census


# Per event loop, the census it is taking (set when done), for the others to wait on.
_taking: RunVar[anyio.Event | None] = RunVar("anyio_proc.census", None)


async def census_after(since: float) -> Census:
    """A census begun after ``since`` (``time.monotonic()``): the last one if it was,
    else the one under way, else a new one, taken in a worker thread. At most half of the
    time goes to listing ``/proc``: a new census waits as long as the last one took.

    **Cancellation:** safe; a census under way is finished first (milliseconds).
    """
    while True:
        census = _last
        if census.taken > since:
            return census
        taking = _taking.get()
        if taking is not None:
            await taking.wait()
            continue
        pause = census.taken + max(2 * census.took, 0.001) - time.monotonic()
        if pause > 0:
            await anyio.sleep(pause)
            continue
        done = anyio.Event()
        try:
            # Inside: an exception landing just after would leave the others waiting on an
            # event nobody sets.
            _taking.set(done)
            await anyio.to_thread.run_sync(_take_census_quietly)
        finally:
            _taking.set(None)
            done.set()


def _take_census_quietly() -> None:
    # Signals meant for the program go to its main thread, not to this worker.
    with signals_deferred():
        take_census()
