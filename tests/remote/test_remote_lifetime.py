"""The guarantee: however the block ends, the remote process tree is stopped.

Normal exit, an exception, a cancellation, a command that ignores SIGTERM, a tree of
processes, the host's own block, the local program SIGKILLed, the master connection
killed. The remote host is this machine (as another account), so what is left of a
remote command is read in our own ``/proc``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyio_proc import Command, spawn

from ..helpers import group_members, poll_until
from .conftest import local_ssh_processes
from .support import gone, masters, members_when, open_host, private_dirs

if TYPE_CHECKING:
    from anyio_proc.remote import RemoteChild

    from .conftest import SSHServer

#: A shell whose two background sleeps stay in its process group: three processes of the
#: command, and the wrapper, which leads the group.
TREE = Command("sh", "-c", "sleep 1000 & sleep 1000 & wait")


class Boom(Exception):
    pass


@pytest.mark.parametrize("how", ["normal", "exception", "cancelled"])
async def test_leaving_the_block_stops_the_remote_tree(ssh_server: SSHServer, how: str) -> None:
    async with open_host(ssh_server) as host:
        members: list[int] = []
        with anyio.CancelScope() as scope:
            try:
                async with host.spawn(TREE) as child:
                    assert child.remote_pgid is not None
                    members = await members_when(child.remote_pgid, 4)
                    if how == "exception":
                        raise Boom
                    if how == "cancelled":
                        scope.cancel()
                        await anyio.sleep_forever()
            except Boom:
                pass
        # The policy waits for the agent to see the group empty: nothing to poll for.
        assert child.remote_pgid is not None
        assert [pid for pid in members if pid in group_members(child.remote_pgid)] == []
        assert child.returncode == -signal.SIGTERM
        assert not child.escalated


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    ssh_server: SSHServer,
) -> None:
    script = "trap '' TERM; sleep 1000 & echo ready; wait"
    cmd = Command("sh", "-c", script).stdout_piped().shutdown(timeout=0.5)
    async with open_host(ssh_server) as host:
        with pytest.warns(RuntimeWarning, match="killed with SIGKILL"):
            async with host.spawn(cmd) as child:
                assert child.stdout is not None
                assert await child.stdout.lines().__anext__() == "ready"
                assert child.remote_pgid is not None
                members = await members_when(child.remote_pgid, 3)
                started = time.monotonic()
        elapsed = time.monotonic() - started
        assert child.escalated
        assert child.returncode == -signal.SIGKILL
        assert 0.5 <= elapsed < 0.5 + 3
        assert [pid for pid in members if pid in group_members(child.remote_pgid)] == []


async def test_members_left_after_the_command_exited_are_stopped(ssh_server: SSHServer) -> None:
    # The command exits at once; what it left in its group (with its output elsewhere,
    # so the session ends) is stopped when the block ends, as for a local group.
    cmd = Command("sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!").stdout_piped()
    async with open_host(ssh_server) as host:
        async with host.spawn(cmd) as child:
            assert child.stdout is not None
            left = int(await child.stdout.lines().__anext__())
            assert (await child.wait()).success
            assert await gone([left], 0.2) == [left]  # still running after the exit
        assert await gone([left], 0) == []


async def test_the_host_block_stops_children_nobody_closed(ssh_server: SSHServer) -> None:
    with anyio.CancelScope() as scope:
        async with open_host(ssh_server) as host:
            owned = await host.spawn(TREE)  # the caller's to close, and it does not
            assert owned.remote_pgid is not None
            members = await members_when(owned.remote_pgid, 4)
            scope.cancel()
            await anyio.sleep_forever()
    assert owned.returncode == -signal.SIGTERM
    assert await gone(members, 0) == []


async def test_quick_block_after_wait_sends_nothing_and_warns_nothing(
    ssh_server: SSHServer,
) -> None:
    async with open_host(ssh_server) as host:
        started = time.monotonic()
        for _ in range(5):
            async with host.spawn(Command("true")) as child:
                assert (await child.wait()).success
        assert time.monotonic() - started < 5
        assert not child.escalated


VICTIM = """
import sys
import anyio
from anyio_proc import Command
from anyio_proc.remote import ssh_host

async def main(config: str, destination: str) -> None:
    async with ssh_host(destination, config_file=config) as host:
        tree = await host.spawn(
            Command("sh", "-c", "sleep 1000 & sleep 1000 & wait").shutdown(timeout=1)
        )
        stubborn = await host.spawn(
            Command("sh", "-c", "trap '' TERM; sleep 1000").shutdown(timeout=1)
        )
        print(tree.remote_pgid, stubborn.remote_pgid, flush=True)
        await anyio.sleep_forever()

backend, _, options = sys.argv[3].partition("+")
anyio.run(main, sys.argv[1], sys.argv[2], backend=backend,
          backend_options={"use_uvloop": True} if options else {})
"""


def _backend_name(anyio_backend: Any) -> str:
    name, options = anyio_backend
    return f"{name}+uvloop" if options.get("use_uvloop") else name


async def test_local_program_killed_leaves_nothing_remote(
    ssh_server: SSHServer, anyio_backend: Any
) -> None:
    # The program is SIGKILLed: no code of it runs. The kernel closes its end of the
    # agent's stdin, and the agent stops both groups (the second ignores SIGTERM, so it
    # takes the grace period and SIGKILL).
    config = str(ssh_server.config_file)
    backend = _backend_name(anyio_backend)
    dirs_before = private_dirs()
    cmd = Command(sys.executable, "-c", VICTIM, config, ssh_server.destination, backend)
    async with spawn(cmd.stdout_piped()) as victim:
        assert victim.stdout is not None
        line = await victim.stdout.lines().__anext__()
        tree, stubborn = (int(n) for n in line.split())
        # All three of the stubborn group: its sleep exists once its shell ignores SIGTERM.
        members = await members_when(tree, 4) + await members_when(stubborn, 3)
        victim.kill()
        killed = time.monotonic()
        assert (await victim.wait()).signal == signal.SIGKILL
    # Grace period (1 s) plus a bound for the agent's polling and sshd.
    assert await gone(members, 1 + 4) == []
    assert time.monotonic() - killed >= 0.9  # the stubborn one had its grace period
    await poll_until(lambda: not local_ssh_processes(str(ssh_server.workdir)))
    # What a SIGKILLed program cannot remove: its private directory (ssh's logs; the
    # control socket went with the master). Ours to tidy.
    (left,) = private_dirs() - dirs_before
    shutil.rmtree(left)


async def test_master_killed_stops_the_remote_side(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        async with host.spawn(TREE.shutdown(timeout=1)) as child:
            assert child.remote_pgid is not None
            members = await members_when(child.remote_pgid, 4)
            (master,) = masters()
            os.kill(master, signal.SIGKILL)
            status = await child.wait()
            # Nobody is left to tell how it ended, and the status says so.
            assert not status.known
            assert str(status) == "exit status: unknown (connection lost)"
            # sshd sees the connection close; the agent stops the group.
            assert await gone(members, 1 + 4) == []
        # The host opens a new connection for what comes next.
        assert (await host.status(["true"])).success


async def test_nothing_left_locally_after_the_host_block(ssh_server: SSHServer) -> None:
    before = private_dirs()
    async with open_host(ssh_server) as host:
        assert len(private_dirs() - before) == 1
        assert masters()
        await host.status(["true"])
    assert private_dirs() == before
    assert masters() == []


async def test_cancellation_at_any_moment_of_a_spawn_leaves_nothing(
    ssh_server: SSHServer,
) -> None:
    # Cancelled before the session exists, while it opens, while the command starts, or
    # once it runs: the caller either never gets a child, or the block stops it.
    child: RemoteChild | None = None
    async with open_host(ssh_server) as host:
        for delay in (0, 0.001, 0.003, 0.005, 0.008, 0.012, 0.02, 0.05):
            with anyio.move_on_after(delay):
                async with host.spawn(TREE) as child:
                    await anyio.sleep_forever()
            if child is not None:
                assert child.returncode is not None
            child = None
        # Still usable afterwards, with every session slot given back.
        assert (await host.status(["true"])).success
    assert masters() == []


async def test_a_dropped_child_is_killed_with_kill_on_drop(ssh_server: SSHServer) -> None:
    import gc

    async with open_host(ssh_server) as host:
        child = await host.spawn(Command("sleep", "1000").kill_on_drop())
        remote_pid = child.remote_pid
        assert remote_pid is not None
        with pytest.warns(ResourceWarning, match="garbage-collected while running"):
            del child
            gc.collect()
        assert await gone([remote_pid], 5) == []
