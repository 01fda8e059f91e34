"""Process groups: signalling one, and asking whether any member but the leader is left."""

from __future__ import annotations

import os
import sys

__all__ = ["group_has_members", "signal_group"]

if sys.platform == "win32":

    def signal_group(pgid: int, sig: int) -> None:
        raise ProcessLookupError("Windows has no process groups to signal")

    def group_has_members(pgid: int, leader: int) -> bool | None:
        return False

else:
    signal_group = os.killpg

    if sys.platform == "linux":
        from .procfs import group_has_members
    else:

        def group_has_members(pgid: int, leader: int) -> bool | None:
            """Without /proc the members of a group cannot be listed: unknown."""
            return None
