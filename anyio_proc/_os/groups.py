"""Process groups: signalling one, asking whether any member but the leader is left, and
in which session a group is."""

from __future__ import annotations

import os
import sys
import time

from anyio.lowlevel import checkpoint

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

    from .._polling import POLL_FIRST, POLL_MOST
    from .census import Census, Unlisted, census_after, last_census, stats, take_census

    signal_group = os.killpg

    def _members(census: Census, pgid: int, leader: int) -> bool | None:
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
        return _members(take_census(), pgid, leader)

    def group_members_seen(pgid: int, leader: int, since: float) -> bool | None:
        """As :func:`group_has_members`, from the last census if it was begun after
        ``since``; True (members may be left) if it was not. Never lists ``/proc``.

        ``since`` must come after the leader's exit was seen: an older census may miss what
        the leader started last (it is listed in one go, but read one process at a time).
        """
        census = last_census()
        if census.taken <= since:
            return True
        return _members(census, pgid, leader)

    async def wait_group_empty(pgid: int, leader: int, since: float) -> None:
        """Return once no process but ``leader`` is left in group ``pgid`` (or ``/proc``
        cannot tell), as told by a census begun after ``since`` (see
        :func:`group_members_seen`), then by later ones, at growing intervals.

        The many groups of one shutdown share each census, taken in a worker thread
        (``census.py``): listing ``/proc`` with thousands of processes takes milliseconds,
        which the event loop's thread must not spend.

        **Cancellation:** safe; a census under way is finished first (milliseconds).
        """
        delay = POLL_FIRST
        while True:
            census = await census_after(since)
            if _members(census, pgid, leader) is not True:
                return
            since = time.monotonic()
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MOST)

    def group_in_session(pgid: int, sid: int) -> bool | None:
        """Whether process group ``pgid`` is in session ``sid`` (False when no process is
        in it); None if ``/proc`` cannot be read."""
        try:
            for _, stat in stats(0):
                if stat.pgid == pgid:
                    return stat.sid == sid  # a group never spans two sessions
        except Unlisted:
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
