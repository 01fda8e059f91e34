"""Linux: listing a process group's live members from /proc."""

from __future__ import annotations

import os
import sys

assert sys.platform == "linux"

__all__ = ["group_has_members"]


def group_has_members(pgid: int, leader: int) -> bool | None:
    """True if a process other than ``leader`` in group ``pgid`` is still running.

    Zombies do not count: a member that exited waits only for its own parent (often init)
    to reap it, and signals can no longer reach it. The leader is skipped because we keep
    its zombie to pin the group number.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for name in entries:
        if not name.isdigit() or int(name) == leader:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces and parentheses: parse after its last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False
