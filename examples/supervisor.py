"""Supervising services: named processes, readiness checks, restarts and one ordered
shutdown, with anyio_proc.services.Supervisor (docs/services.md).

A web server is started and waited for until its port accepts connections; a flaky job
fails twice and is restarted until it succeeds; a client fetches a page from the server.
Leaving the block stops what still runs (the server), and everything is reaped.

Run it with ``python examples/supervisor.py`` (asyncio) or add ``trio`` / ``uvloop``.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

import anyio

from anyio_proc import Command
from anyio_proc.services import Backoff, OutputLine, ReadyPort, ServiceEvent, Supervisor

PY = sys.executable

# Fails on its first two runs, succeeds on the third: it counts its runs in a file.
FLAKY = """
import pathlib, sys
runs = pathlib.Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
print(f"run {n}: {'done' if n >= 3 else 'failing'}")
sys.exit(0 if n >= 3 else 1)
"""

CLIENT = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    print(f"GET {sys.argv[1]} -> {response.status}, {len(response.read())} bytes")
"""


def free_port() -> int:
    """A port nobody listens on now (the server takes it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def show_output(record: OutputLine) -> None:
    print(f"  {record.service:<6} | {record.line}")


def show_event(event: ServiceEvent) -> None:
    print(f"  {event.service:<6} * {event}")


async def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        await anyio.Path(folder, "index.html").write_text("<title>hello</title>\n")
        web = Command(PY, "-m", "http.server", str(port), "--bind", "127.0.0.1")
        web = web.current_dir(folder).env("PYTHONUNBUFFERED", "1")

        async with Supervisor(on_output=show_output, on_event=show_event) as sup:
            # start() returns once the service is ready: here, once the port accepts.
            server = await sup.start("web", web, ready=ReadyPort(port))
            flaky = await sup.start(
                "flaky",
                Command(PY, "-c", FLAKY, str(Path(folder, "runs"))),
                restart="on-failure",
                backoff=Backoff(initial=0.05),  # quick restarts for the demo
            )
            client = await sup.start(
                "client", Command(PY, "-c", CLIENT, f"http://127.0.0.1:{port}/")
            )
            fetched = await client.wait()
            done = await flaky.wait()
            print(f"1. client: {fetched}; flaky: {done} after {flaky.restarts} restarts")
            assert fetched.success
            assert done.success
            assert flaky.restarts == 2
        # Leaving the block stopped the server (SIGTERM, then SIGKILL after the grace
        # period if it had not exited), and reaped it.
        print(f"2. web stopped by the supervisor: {server.stopped}, {server.status}")
        assert server.ended
        assert server.stopped


if __name__ == "__main__":
    choice = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[choice]
    print(f"anyio_proc services on {choice}")
    anyio.run(main, backend=backend, backend_options=options)
