"""Bad input and faults: each gives a clear error naming the host and leaves nothing.

No local ssh process, no private directory, no remote process: ``nothing_left`` (the
autouse fixture of conftest.py) and the no-leak fixture of tests/conftest.py check the
processes and descriptors after each test.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import anyio
import pytest

from anyio_proc import Command
from anyio_proc.remote import (
    AuthenticationFailed,
    HostKeyRejected,
    HostUnreachable,
    SSHError,
    ssh_host,
)

from .support import masters, open_host, private_dirs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio_proc.remote import RemoteChild

    from .conftest import SSHServer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def _refused(server: SSHServer, kind: type[SSHError], **kwargs: object) -> SSHError:
    before = private_dirs()
    started = time.monotonic()
    with pytest.raises(kind) as caught:
        async with open_host(server, **kwargs):
            pytest.fail("the connection should not open")
    assert time.monotonic() - started < 10  # BatchMode: nothing waits for a prompt
    assert private_dirs() == before
    error = caught.value
    assert str(error).startswith(f"{server.destination}: ")
    assert error.host == server.destination
    assert error.returncode == 255
    return error


async def test_unreachable_host(ssh_server: SSHServer) -> None:
    error = await _refused(ssh_server, HostUnreachable, port=_closed_port())
    assert "Connection refused" in error.detail


async def test_refused_authentication(ssh_server: SSHServer) -> None:
    config = ssh_server.client_config("wrong-key", IdentityFile=str(ssh_server.wrong_key))
    error = await _refused(ssh_server, AuthenticationFailed, config_file=config)
    assert "Permission denied" in error.detail


async def test_unknown_host_key(ssh_server: SSHServer) -> None:
    empty = ssh_server.workdir / "known_hosts.empty"
    empty.write_text("")
    config = ssh_server.client_config("unknown-key", UserKnownHostsFile=str(empty))
    error = await _refused(ssh_server, HostKeyRejected, config_file=config)
    assert "Host key verification failed" in error.detail
    assert empty.read_text() == ""  # never learnt behind the user's back


async def test_changed_host_key(ssh_server: SSHServer) -> None:
    changed = ssh_server.workdir / "known_hosts.changed"
    public = ssh_server.other_host_key.read_text().strip()
    changed.write_text(f"[127.0.0.1]:{ssh_server.port} {public}\n")
    config = ssh_server.client_config("changed-key", UserKnownHostsFile=str(changed))
    error = await _refused(ssh_server, HostKeyRejected, config_file=config)
    assert "HOST IDENTIFICATION HAS CHANGED" in error.detail


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word (no SSH banner)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_server_that_never_answers_times_out(
    ssh_server: SSHServer, silent_server: int
) -> None:
    started = time.monotonic()
    with pytest.raises(SSHError) as caught:
        async with open_host(ssh_server, port=silent_server, connect_timeout=1):
            pass
    assert time.monotonic() - started < 1 + 5
    assert ssh_server.destination in str(caught.value)


async def test_cancelled_while_connecting(ssh_server: SSHServer, silent_server: int) -> None:
    before = private_dirs()
    with anyio.move_on_after(0.3) as scope:
        async with open_host(ssh_server, port=silent_server):
            pass
    assert scope.cancelled_caught
    assert private_dirs() == before


async def test_bad_arguments_are_refused_before_anything_starts() -> None:
    before = private_dirs()
    for kwargs, match in (
        ({"port": 0}, "port"),
        ({"port": "22"}, "port"),
        ({"options": {"Bad Name": "x"}}, "option name"),
        ({"options": {"User": "a\nb"}}, "one-line"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"max_sessions": 1}, "max_sessions"),
        ({"max_connections": 0}, "max_connections"),
    ):
        with pytest.raises(ValueError, match=match):
            ssh_host("somewhere", **kwargs)
    for destination in ("", "-oProxyCommand=touch /tmp/pwned"):
        with pytest.raises(ValueError, match="not a host"):
            ssh_host(destination)
    assert private_dirs() == before


async def test_spawn_after_the_host_closed(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        assert not host.closed
    assert host.closed
    with pytest.raises(RuntimeError, match="closed"):
        await host.spawn(Command("true"))


async def test_a_session_the_server_refuses_moves_to_another_connection(
    ssh_server: SSHServer,
) -> None:
    # Told the server allows 12 sessions a connection when it allows 10 (sshd's default):
    # the tenth command's session is refused; the host learns the limit and opens a
    # second connection for it, and for the eleventh.
    cmd = Command("sh", "-c", "cat >/dev/null").stdin_piped()
    async with open_host(ssh_server, max_sessions=12, max_connections=2) as host:
        children: list[RemoteChild] = []
        try:
            for _ in range(11):
                children.append(await host.spawn(cmd))  # noqa: PERF401 (one at a time)
            assert len(masters()) == 2
        finally:
            for child in children:
                assert await child.wait() == 0
                await child.aclose()


async def test_a_session_refused_with_nowhere_else_to_go(ssh_server: SSHServer) -> None:
    # The same, with one connection allowed: the tenth spawn waits for a session to end.
    cmd = Command("sh", "-c", "cat >/dev/null").stdin_piped()
    async with open_host(ssh_server, max_sessions=12, max_connections=1) as host:
        children = [await host.spawn(cmd) for _ in range(9)]
        try:
            async with anyio.create_task_group() as tg:
                tenth: list[RemoteChild] = []

                async def spawn_tenth() -> None:
                    tenth.append(await host.spawn(cmd))

                tg.start_soon(spawn_tenth)
                await anyio.wait_all_tasks_blocked()
                assert not tenth  # waiting for a slot
                assert await children[0].wait() == 0
            assert await tenth[0].wait() == 0
            await tenth[0].aclose()
        finally:
            for child in children:
                assert await child.wait() == 0
                await child.aclose()
