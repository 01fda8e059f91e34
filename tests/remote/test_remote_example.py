"""examples/remote.py runs against the test server on every event loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyio_proc import Command

if TYPE_CHECKING:
    from .conftest import SSHServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "remote.py"


async def test_the_example_runs(ssh_server: SSHServer, anyio_backend: Any) -> None:
    name, options = anyio_backend
    backend = "uvloop" if options.get("use_uvloop") else name
    cmd = Command(
        sys.executable,
        str(EXAMPLE),
        backend,
        "--host",
        ssh_server.destination,
        "--config",
        str(ssh_server.config_file),
    )
    output = await cmd.output()
    assert output.status.success, output.stderr.decode()
    lines = output.stdout.decode().splitlines()
    assert lines[0].startswith("1. connected to")
    assert lines[-1].startswith("7. the host block is over")
    assert "signal: 15 (SIGTERM)" in output.stdout.decode()
