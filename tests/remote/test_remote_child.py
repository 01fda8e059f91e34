"""A remote child is a Child: streams, status, signals, environment, quoting.

Every test runs against the real sshd of ``conftest.ssh_server`` (the "remote" host is
127.0.0.1, as another account), on asyncio, uvloop and trio.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import TYPE_CHECKING

import pytest

from anyio_proc import Child, Command, ExitStatus, Stdio
from anyio_proc.remote import RemoteChild, RemoteSpawnContext

from .support import open_host, running

if TYPE_CHECKING:
    from .conftest import SSHServer

HOSTILE_ARGS = [
    "two words",
    "",
    "it's",
    'say "hi"',
    "$HOME and `id` and $(id)",
    "line one\nline two",
    "tab\there",
    "ünïcödé ✓",
    "*",
    "~",
    "a;b|c&d>e<f",
    "\\back\\slash\\",
    "-n",
    "'",
    " leading and trailing ",
]


async def test_arguments_reach_the_program_exactly(ssh_server: SSHServer) -> None:
    # printf '%s\0' prints each argument as it arrived, NUL-separated: nothing may be
    # split, joined, expanded or unquoted on the way through two remote shells.
    async with open_host(ssh_server) as host:
        output = await host.output(Command("printf", "%s\\0").args(HOSTILE_ARGS))
    assert output.status == 0, output
    assert output.stdout.split(b"\0")[:-1] == [a.encode() for a in HOSTILE_ARGS]


async def test_output_status_and_stderr(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        output = await host.output(Command.shell("echo out; echo err >&2; exit 3"))
        status = await host.status(Command("true").stdout(Stdio.NULL))
    assert output.stdout == b"out\n"
    assert output.stderr == b"err\n"
    assert output.status.code == 3
    assert status.success


async def test_stdin_to_stdout_and_lines(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        cmd = Command("cat").stdin_piped().stdout_piped()
        async with host.spawn(cmd) as child:
            assert isinstance(child, Child)
            assert isinstance(child, RemoteChild)
            assert child.stdin is not None
            assert child.stdout is not None
            await child.stdin.send(b"first\nsecond\n")
            await child.stdin.aclose()
            lines = [line async for line in child.stdout.lines()]
            assert await child.wait() == 0
    assert lines == ["first", "second"]


async def test_stderr_into_stdout(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        cmd = Command.shell("echo a; echo b >&2").stderr(Stdio.STDOUT)
        output = await host.output(cmd)
    assert sorted(output.stdout.split()) == [b"a", b"b"]
    assert output.stderr == b""


async def test_environment_and_working_directory(ssh_server: SSHServer) -> None:
    # A directory the test account can enter, with a name that needs quoting.
    workdir = tempfile.mkdtemp(prefix="remote cwd 'q' $x ")
    os.chmod(workdir, 0o755)
    try:
        async with open_host(ssh_server) as host:
            cmd = (
                Command("sh", "-c", 'printf "%s|%s|%s|%s" "$A" "${HOME-unset}" "$B" "$PWD"')
                .env("A", "value with 'quotes' and $dollar\nand a newline")
                .env_remove("HOME")
                .env("B", "x")
                .env_remove("B")
                .current_dir(workdir)
            )
            output = await host.output(cmd)
            cleared = await host.output(
                Command("sh", "-c", "env").env_clear().env("ONLY", "this one")
            )
    finally:
        shutil.rmtree(workdir)
    assert output.status == 0, output
    assert output.stdout.decode() == (
        f"value with 'quotes' and $dollar\nand a newline|unset||{workdir}"
    )
    # dash adds PWD to the environment of what it runs; nothing else may be there.
    names = {line.split("=", 1)[0] for line in cleared.stdout.decode().splitlines()}
    assert names - {"PWD"} == {"ONLY"}


async def test_status_of_a_remote_signal(ssh_server: SSHServer) -> None:
    # ssh itself reports 255 for a remote command killed by a signal: the real status
    # comes from the wrapper.
    async with open_host(ssh_server) as host:
        term = await host.status(Command.shell("kill -TERM $$"))
        usr1 = await host.status(Command.shell("kill -USR1 $$"))
        code = await host.status(Command.shell("exit 7"))
    assert (term.signal, term.code) == (signal.SIGTERM, None)
    assert str(term) == "signal: 15 (SIGTERM)"
    assert usr1.signal == signal.SIGUSR1
    assert code.code == 7


async def test_killed_from_outside_by_sigkill(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        async with host.spawn(Command("sleep", "1000")) as child:
            assert child.remote_pid is not None
            assert child.try_wait() is None
            assert child.returncode is None
            os.kill(child.remote_pid, signal.SIGKILL)  # "remote" is this machine
            status = await child.wait()
            assert status.signal == signal.SIGKILL
            assert child.returncode == -signal.SIGKILL
            assert child.try_wait() == status
        assert not child.escalated


async def test_terminate_and_send_signal_reach_the_command(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        async with host.spawn(Command("sleep", "1000")) as child:
            child.terminate()
            assert (await child.wait()).signal == signal.SIGTERM
        script = "trap 'echo got USR1; exit 4' USR1; echo ready; while :; do sleep 0.01; done"
        async with host.spawn(Command("sh", "-c", script).stdout_piped()) as child:
            assert child.stdout is not None
            lines = child.stdout.lines()
            assert await lines.__anext__() == "ready"
            child.send_signal(signal.SIGUSR1)
            assert await lines.__anext__() == "got USR1"
            assert (await child.wait()).code == 4


async def test_kill_reaches_the_whole_group(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        cmd = Command("sh", "-c", "sleep 1000 & echo $!; wait").stdout_piped()
        async with host.spawn(cmd) as child:
            assert child.stdout is not None
            background = int(await child.stdout.lines().__anext__())
            assert running(background)
            child.kill()
            status = await child.wait()
            assert status.signal == signal.SIGKILL
        assert not running(background)


async def test_await_form_and_wait_with_output(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        spawning = host.spawn(Command("tr", "a-z", "A-Z").stdin_piped().stdout_piped())
        assert isinstance(spawning, RemoteSpawnContext)
        child = await spawning
        try:
            output = await child.wait_with_output(b"shout\n")
        finally:
            await child.aclose()
    assert output.stdout == b"SHOUT\n"
    assert isinstance(output.status, ExitStatus)
    assert "RemoteChild" in repr(child)
    assert "exited" in repr(child)


async def test_missing_program_names_host_and_program(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        with pytest.raises(FileNotFoundError) as caught:
            await host.spawn(Command("no-such-program-xyz", "arg"))
        message = str(caught.value)
        assert ssh_server.destination in message
        assert "no-such-program-xyz" in message
        assert caught.value.filename == "no-such-program-xyz"
        with pytest.raises(FileNotFoundError) as caught:
            await host.output(Command("true").current_dir("/no/such/dir"))
        assert ssh_server.destination in str(caught.value)
        assert caught.value.filename == "/no/such/dir"
        # The host is still usable.
        assert (await host.status(["true"])).success


async def test_options_without_meaning_remotely_are_refused(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        for cmd in (
            Command("true").uid(0),
            Command("true").pass_fds([0]),
            Command("true").pre_exec(lambda: None),
            Command("true").pty(),
            Command("true").kill_tree(),
            Command("true").process_group(5),
        ):
            with pytest.raises(ValueError, match="not available for a remote command"):
                host.spawn(cmd)
        with pytest.raises(ValueError, match="shell identifier"):
            host.spawn(Command("true").env("NOT-AN-IDENTIFIER", "x"))
        with pytest.raises(ValueError, match="empty"):
            host.spawn([])
        assert (await host.status(["true"])).success


def test_spawn_outside_a_loop_is_refused(ssh_server: SSHServer) -> None:
    host = open_host(ssh_server)
    with pytest.raises(RuntimeError, match="running event loop"):
        host.spawn(["true"])


async def test_concurrent_children_and_stdin_chaining(ssh_server: SSHServer) -> None:
    # One remote child's stdout feeds another's stdin through our process.
    async with open_host(ssh_server) as host:
        first = Command("printf", "b\\na\\nc\\n").stdout_piped()
        async with host.spawn(first) as producer:
            assert producer.stdout is not None
            second = Command("sort").stdin(producer.stdout).stdout_piped()
            async with host.spawn(second) as consumer:
                assert consumer.stdout is not None
                out = await consumer.stdout.read_all()
                assert await consumer.wait() == 0
            assert await producer.wait() == 0
    assert out == b"a\nb\nc\n"


async def test_many_quick_commands_in_a_row(ssh_server: SSHServer) -> None:
    async with open_host(ssh_server) as host:
        statuses = [await host.status(Command("sh", "-c", f"exit {i}")) for i in range(20)]
    assert [s.code for s in statuses] == list(range(20))
