"""User and group names, for ``open_process``/``run_process``'s ``user=`` and ``group=``."""

from __future__ import annotations

import sys

__all__ = ["group_id", "user_id"]


def user_id(name: str) -> int:
    """The uid of user ``name``; :class:`KeyError` for an unknown name, as in subprocess."""
    if sys.platform == "win32":
        raise ValueError("user is only supported on POSIX")
    import pwd

    return pwd.getpwnam(name).pw_uid


def group_id(name: str) -> int:
    """The gid of group ``name``; :class:`KeyError` for an unknown name."""
    if sys.platform == "win32":
        raise ValueError("group is only supported on POSIX")
    import grp

    return grp.getgrnam(name).gr_gid
