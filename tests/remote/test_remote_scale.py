"""Many children on one host, and a lot of data through one.

sshd accepts 10 sessions per connection by default (``MaxSessions``), the agent takes
one: 50 children at once need 6 master connections, which the host opens as needed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import anyio
import pytest

from anyio_proc import Command

from .support import masters, open_host, running

if TYPE_CHECKING:
    from anyio_proc.remote import RemoteChild

    from .conftest import SSHServer


async def test_fifty_children_at_once_past_max_sessions(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        # Each child waits for its stdin to end: all 50 must be running together.
        cmd = Command("sh", "-c", "echo $$; cat >/dev/null; echo done").stdin_piped()
        started: list[RemoteChild] = []

        async def start() -> None:
            started.append(await host.spawn(cmd.stdout_piped()))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(start)
            assert len(started) == 50
            assert all(child.remote_pid is not None for child in started)
            assert all(running(child.remote_pid or 0) for child in started)
            assert len(masters()) == 6  # 9 commands per connection (one session is the agent's)
            outputs: list[bytes] = []

            async def finish(child: RemoteChild) -> None:
                outputs.append((await child.wait_with_output()).stdout)

            async with anyio.create_task_group() as tg:
                for child in started:
                    tg.start_soon(finish, child)
            assert all(out.endswith(b"done\n") for out in outputs)
            assert all(child.returncode == 0 for child in started)
        finally:
            for child in started:
                await child.aclose()


async def test_a_capped_host_queues_spawns(ssh_server: SSHServer) -> None:
    # One connection of 3 sessions (2 for commands): the third spawn waits for a slot.
    async with open_host(ssh_server, max_sessions=3, max_connections=1) as host:
        order: list[str] = []
        cmd = Command("sh", "-c", "cat >/dev/null").stdin_piped()
        async with host.spawn(cmd) as first, host.spawn(cmd) as second:

            async def third() -> None:
                order.append("third waiting")
                assert (await host.status(Command("true"))).success
                order.append("third ran")

            async with anyio.create_task_group() as tg:
                tg.start_soon(third)
                await anyio.wait_all_tasks_blocked()  # the third is waiting for a slot
                order.append("first ends")
                await first.wait()
            await second.wait()
        assert order == ["third waiting", "first ends", "third ran"]
        assert len(masters()) == 1


async def _round_trip(server: SSHServer, size: int) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256()
    received = hashlib.sha256()
    count = 0
    cat = Command("cat").stdin_piped().stdout_piped()
    async with open_host(server) as host, host.spawn(cat) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        stdin, stdout = child.stdin, child.stdout

        async def feed() -> None:
            for _ in range(size // len(chunk)):
                expected.update(chunk)
                await stdin.send(chunk)
            await stdin.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            async for data in stdout:
                received.update(data)
                count += len(data)
        assert await child.wait() == 0
    assert count == size
    assert received.digest() == expected.digest()


async def test_eight_mib_each_way(ssh_server: SSHServer) -> None:
    await _round_trip(ssh_server, 8 * 1024 * 1024)


@pytest.mark.slow
async def test_hundred_mib_each_way(ssh_server: SSHServer) -> None:
    await _round_trip(ssh_server, 100 * 1024 * 1024)
