"""Process groups: signalling one, asking whether any member but the leader is left, and
in which session a group is."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["group_has_members", "group_in_session", "signal_group"]

if sys.platform == "win32":

    def signal_group(pgid: int, sig: int) -> None:
        raise ProcessLookupError("Windows has no process groups to signal")

    def group_has_members(pgid: int, leader: int) -> bool | None:
        return False

    def group_in_session(pgid: int, sid: int) -> bool | None:
        return None

elif sys.platform == "linux":
    from .procfs import NO_ROOM, Stat, proc_list, read_stat

    signal_group = os.killpg

    class _Unlisted(Exception):
        """``/proc`` cannot be listed, or a process may have been missed for lack of fds."""

    def _stats(skip: int) -> Iterator[Stat]:
        """The stat of every process but ``skip``, as far as we may see them."""
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
                yield stat

    def group_has_members(pgid: int, leader: int) -> bool | None:
        """True if a process other than ``leader`` in group ``pgid`` is still running; None
        if ``/proc`` cannot be read (not mounted, or no fd even with the reserve's).

        Zombies do not count: a member that exited waits only for its own parent (often
        init) to reap it, and signals can no longer reach it. The leader is skipped because
        we keep its zombie to pin the group number.
        """
        try:
            return any(stat.pgid == pgid and not stat.exited for stat in _stats(leader))
        except _Unlisted:
            return None

    def group_in_session(pgid: int, sid: int) -> bool | None:
        """Whether process group ``pgid`` is in session ``sid`` (False when no process is
        in it); None if ``/proc`` cannot be read."""
        try:
            for stat in _stats(0):
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
