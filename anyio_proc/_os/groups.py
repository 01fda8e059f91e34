"""Process groups: signalling one, asking whether any member but the leader is left, and
in which session a group is."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING

from anyio.lowlevel import checkpoint

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "group_has_members",
    "group_in_session",
    "group_members_seen",
    "signal_group",
    "wait_group_empty",
]

if sys.platform == "win32":

    def signal_group(pgid: int, sig: int) -> None:
        raise ProcessLookupError("Windows has no process groups to signal")

    def group_has_members(pgid: int, leader: int) -> bool | None:
        return False

    def group_in_session(pgid: int, sid: int) -> bool | None:
        return None

    def group_members_seen(pgid: int, leader: int, since: float) -> bool | None:
        return False

    async def wait_group_empty(pgid: int, leader: int, since: float) -> None:
        await checkpoint()

elif sys.platform == "linux":
    import anyio
    import anyio.to_thread
    from anyio.lowlevel import RunVar

    from .._polling import POLL_FIRST, POLL_MOST
    from .procfs import NO_ROOM, Stat, proc_list, read_stat
    from .signals import signals_deferred

    signal_group = os.killpg

    class _Unlisted(Exception):
        """``/proc`` cannot be listed, or a process may have been missed for lack of fds."""

    def _stats(skip: int) -> Iterator[tuple[int, Stat]]:
        """The pid and stat of every process but ``skip``, as far as we may see them."""
        try:
            names = proc_list("/proc")
        except OSError:
            raise _Unlisted from None
        if names is None:
            raise _Unlisted
        for name in names:
            if not name.isdigit() or int(name) == skip:
                continue
            try:
                stat = read_stat(int(name))
            except OSError as exc:
                if exc.errno in NO_ROOM:
                    raise _Unlisted from None
                continue  # hidden from us (hidepid): not a process we could signal
            if stat is not None:
                yield int(name), stat

    class _Census:
        """One listing of ``/proc``: the live processes of every group, when the listing
        began and how long it took; ``groups`` is None when ``/proc`` could not be listed."""

        __slots__ = ("groups", "taken", "took")

        def __init__(self, taken: float, took: float, groups: dict[int, list[int]] | None):
            self.taken = taken
            self.took = took
            self.groups = groups

    # The last census, replaced whole (never changed in place), so that threads running
    # event loops of their own each see one census or the next.
    _last = _Census(-math.inf, 0.0, None)

    def _take_census() -> _Census:
        global _last
        taken = time.monotonic()
        groups: dict[int, list[int]] = {}
        try:
            for pid, stat in _stats(0):
                if not stat.exited:
                    groups.setdefault(stat.pgid, []).append(pid)
        except _Unlisted:
            census = _last = _Census(taken, time.monotonic() - taken, None)
        else:
            census = _last = _Census(taken, time.monotonic() - taken, groups)
        return census

    def _members(census: _Census, pgid: int, leader: int) -> bool | None:
        if census.groups is None:
            return None
        return any(pid != leader for pid in census.groups.get(pgid, ()))

    def group_has_members(pgid: int, leader: int) -> bool | None:
        """True if a process other than ``leader`` in group ``pgid`` is still running; None
        if ``/proc`` cannot be read (not mounted, or no fd even with the reserve's).

        Zombies do not count: a member that exited waits only for its own parent (often
        init) to reap it, and signals can no longer reach it. The leader is skipped because
        we keep its zombie to pin the group number. ``/proc`` is listed anew.
        """
        return _members(_take_census(), pgid, leader)

    def group_members_seen(pgid: int, leader: int, since: float) -> bool | None:
        """As :func:`group_has_members`, from the last census if it was begun after
        ``since``; True (members may be left) if it was not. Never lists ``/proc``.

        ``since`` must come after the leader's exit was seen: an older census may miss what
        the leader started last (it is listed in one go, but read one process at a time).
        """
        census = _last
        if census.taken <= since:
            return True
        return _members(census, pgid, leader)

    async def wait_group_empty(pgid: int, leader: int, since: float) -> None:
        """Return once no process but ``leader`` is left in group ``pgid`` (or ``/proc``
        cannot tell), as told by a census begun after ``since`` (see
        :func:`group_members_seen`), then by later ones, at growing intervals.

        The many groups of one shutdown share each census, which is taken in a worker
        thread: listing ``/proc`` with thousands of processes takes milliseconds, which the
        event loop's thread must not spend.

        **Cancellation:** safe; a census under way is finished first (milliseconds).
        """
        delay = POLL_FIRST
        while True:
            census = await _census_after(since)
            if _members(census, pgid, leader) is not True:
                return
            since = time.monotonic()
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MOST)

    # Per event loop, the census it is taking (set when done), for the others to wait on.
    _taking: RunVar[anyio.Event | None] = RunVar("anyio_proc.census", None)

    async def _census_after(since: float) -> _Census:
        while True:
            census = _last
            if census.taken > since:
                return census
            taking = _taking.get()
            if taking is not None:
                await taking.wait()
                continue
            # At most half of the time goes to listing /proc.
            pause = census.taken + max(2 * census.took, 0.001) - time.monotonic()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            done = anyio.Event()
            try:
                # Inside: an exception landing just after would leave the others waiting
                # on an event nobody sets.
                _taking.set(done)
                await anyio.to_thread.run_sync(_take_census_quietly)
            finally:
                _taking.set(None)
                done.set()

    def _take_census_quietly() -> None:
        # Signals meant for the program go to its main thread, not to this worker.
        with signals_deferred():
            _take_census()

    def group_in_session(pgid: int, sid: int) -> bool | None:
        """Whether process group ``pgid`` is in session ``sid`` (False when no process is
        in it); None if ``/proc`` cannot be read."""
        try:
            for _, stat in _stats(0):
                if stat.pgid == pgid:
                    return stat.sid == sid  # a group never spans two sessions
        except _Unlisted:
            return None
        return False

else:
    signal_group = os.killpg

    def group_has_members(pgid: int, leader: int) -> bool | None:
        """Without /proc the members of a group cannot be listed: unknown."""
        return None

    def group_in_session(pgid: int, sid: int) -> bool | None:
        """Without /proc the members of a group cannot be listed: unknown."""
        return None

    def group_members_seen(pgid: int, leader: int, since: float) -> bool | None:
        """Without /proc the members of a group cannot be listed: unknown."""
        return None

    async def wait_group_empty(pgid: int, leader: int, since: float) -> None:
        """Without /proc the members of a group cannot be listed: nothing to wait for."""
        await checkpoint()
