"""``anyio-proc run -H host1 -H host2 -- command``: the fan-out, against the test server.

The second "host" is another name for the same server (an alias in a copy of the client
config), the third one cannot be reached.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

from anyio_proc import Command, spawn

from ..helpers import poll_until
from .support import gone

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import SSHServer


def _config_with_alias(server: SSHServer) -> Path:
    path = server.workdir / "ssh_config.alias"
    text = server.config_file.read_text()
    path.write_text(text.replace(f"Host {server.destination}", f"Host {server.destination} alias"))
    return path


def _cli(server: SSHServer, anyio_backend: Any, *args: str) -> Command:
    name, options = anyio_backend
    backend = "uvloop" if options.get("use_uvloop") else name
    config = str(_config_with_alias(server))
    return Command(
        sys.executable, "-m", "anyio_proc", "run", "--backend", backend, "--color", "never"
    ).args(["--ssh-config", config, *args])


async def test_fan_out_prefixes_lines_and_names_the_failed_hosts(
    ssh_server: SSHServer, anyio_backend: Any
) -> None:
    host = ssh_server.destination
    cmd = _cli(
        ssh_server,
        anyio_backend,
        *("-H", host, "-H", "alias", "-H", "no-such-host.invalid"),
        "--names",
        "greet,fail",
        "--",
        "echo hello from $USER",
        "exit 3",
    )
    output = await cmd.output()
    lines = output.stdout.decode().splitlines()
    # Each host's lines carry its name; host 0 and 1 fail (exit 3), host 2 is unreachable.
    assert any(
        f"{host}/greet" in line and f"hello from {ssh_server.account}" in line for line in lines
    )
    assert any("alias/greet" in line and "hello from" in line for line in lines)
    assert any("no-such-host.invalid" in line and "failed:" in line for line in lines)
    assert "failed:" in lines[-1]
    assert output.status.code == 0b111, output


async def test_fan_out_success_is_zero(ssh_server: SSHServer, anyio_backend: Any) -> None:
    cmd = _cli(ssh_server, anyio_backend, "-H", ssh_server.destination, "-H", "alias", "--", "true")
    output = await cmd.output()
    assert output.status.code == 0, output
    assert output.stdout.decode().count("exited: exit status: 0") == 2


async def test_sigterm_stops_every_host(ssh_server: SSHServer, anyio_backend: Any) -> None:
    cmd = _cli(
        ssh_server,
        anyio_backend,
        *("-H", ssh_server.destination, "-H", "alias"),
        "--",
        "echo started; exec sleep 1000",
    )
    async with spawn(cmd.stdout_piped()) as cli:
        assert cli.stdout is not None
        lines = cli.stdout.lines()
        for _ in range(2):
            assert "started" in await lines.__anext__()

        def sleeping() -> list[int]:
            running = ssh_server.processes().items()
            return [pid for pid, line in running if line.startswith("sleep 1000")]

        await poll_until(lambda: len(sleeping()) == 2)  # each echoed, then became sleep
        remote = sleeping()
        cli.terminate()
        status = await cli.wait()
        assert status.code == 128 + signal.SIGTERM
    # The CLI stopped its host blocks: each stopped its group before the CLI exited.
    assert await gone(remote, 0) == []
