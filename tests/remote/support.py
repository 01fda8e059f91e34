"""Helpers of the remote tests: opening the test host, looking at its processes."""

from __future__ import annotations

import glob
import os
import tempfile
from typing import TYPE_CHECKING, Any

import anyio

from anyio_proc.remote import Host, ssh_host

from ..helpers import children, group_members, proc_state

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .conftest import SSHServer


def open_host(server: SSHServer, **kwargs: Any) -> Host:
    """The test server, reached through its own client config only."""
    kwargs.setdefault("config_file", server.config_file)
    return ssh_host(server.destination, **kwargs)


def private_dirs() -> set[str]:
    """The hosts' private directories (control sockets, ssh logs) that exist now."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "anyio-proc-ssh-*")))


def running(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != "Z"


async def gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs (zombies count as gone); those left at the end.

    Nothing notifies a process that is not the parent of a death: /proc is polled."""
    left = [pid for pid in pids if running(pid)]
    delay = 0.002
    with anyio.move_on_after(timeout):
        while True:
            left = [pid for pid in left if running(pid)]
            if not left:
                break
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
    return left


async def members_when(pgid: int, count: int, timeout: float = 10.0) -> list[int]:
    """The members of remote group ``pgid`` once it has at least ``count`` of them."""
    with anyio.fail_after(timeout):
        while True:
            members = group_members(pgid)
            if len(members) >= count:
                return members
            await anyio.sleep(0.005)


def masters() -> list[int]:
    """Our children that are ssh control masters (one per connection a host opened)."""
    found = []
    for pid in children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ControlMaster=yes" in f.read():
                    found.append(pid)
        except OSError:
            pass  # exited meanwhile
    return found
