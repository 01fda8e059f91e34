"""A Supervisor's service on a remote host: ``Supervisor.start(..., host=host)``.

Against the real sshd of ``conftest.ssh_server`` (the "remote" host is 127.0.0.1, as
another account, so its processes are visible in our ``/proc``), on asyncio, uvloop and
trio. The autouse ``nothing_left`` fixture checks, after each test, that no remote
process and no local ``ssh`` process is left.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from typing import TYPE_CHECKING

import anyio
import pytest

from anyio_proc import Command
from anyio_proc.remote import RemoteChild
from anyio_proc.services import (
    Backoff,
    OutputLine,
    ReadyLine,
    ReadyPort,
    ServiceEvent,
    ServiceFailed,
    Supervisor,
)

from .conftest import local_ssh_processes
from .support import gone, open_host, running

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import SSHServer

SERVER = "echo starting; echo ready; exec sleep 30"
#: Restarts without waiting: the tests are about what is restarted, not when.
QUICK = Backoff(initial=0.01, max=0.05, jitter=0)


def _kinds(events: list[ServiceEvent], name: str) -> list[str]:
    return [e.kind for e in events if e.service == name]


class Respawns:
    """An ``on_event`` that records the events; ``second`` is set once service ``name``
    has been spawned a second time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[ServiceEvent] = []
        self.second = anyio.Event()

    def __call__(self, event: ServiceEvent) -> None:
        self.events.append(event)
        if _kinds(self.events, self.name).count("spawned") == 2:
            self.second.set()


@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A directory both we and the remote test account can write to."""
    path = tempfile.mkdtemp(prefix="anyio-proc-supervisor-")
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


async def test_ready_by_line_and_stopped_when_the_block_ends(ssh_server: SSHServer) -> None:
    events: list[ServiceEvent] = []
    lines: list[OutputLine] = []
    async with open_host(ssh_server) as host:
        async with Supervisor(on_output=lines.append, on_event=events.append) as sup:
            service = await sup.start(
                "web", Command("sh", "-c", SERVER), ready=ReadyLine("^ready$"), host=host
            )
            child = service.child
            assert isinstance(child, RemoteChild)
            assert service.host is host
            assert child.remote_pid is not None
            remote_pid = child.remote_pid
            assert running(remote_pid)
            assert os.stat(f"/proc/{remote_pid}").st_uid == ssh_server.uid  # really remote
            # The events' pid, as Service.pid, is the local ssh session's.
            assert events[0] == ServiceEvent("web", "spawned", pid=child.pid)
            assert service.pid == child.pid != remote_pid
            assert _kinds(events, "web") == ["spawned", "ready"]
        assert await gone([remote_pid], 0) == []
    assert [(r.stream, r.line) for r in lines] == [("stdout", "starting"), ("stdout", "ready")]
    assert _kinds(events, "web") == ["spawned", "ready", "stopping", "exited"]
    assert events[-1].stopped
    assert service.stopped
    assert service.status is not None
    assert service.status.signal == signal.SIGTERM
    assert service.ended


async def test_restarted_on_failure_by_its_policy(ssh_server: SSHServer, shared_dir: str) -> None:
    # The first run exits 3 after becoming ready; the second finds the marker and stays.
    marker = os.path.join(shared_dir, "ran-once")
    script = f"echo ready; if [ -e {marker} ]; then exec sleep 30; fi; touch {marker}; exit 3"
    respawns = Respawns("job")
    events = respawns.events

    async with open_host(ssh_server) as host:
        async with Supervisor(on_output=lambda _: None, on_event=respawns) as sup:
            service = await sup.start(
                "job",
                Command("sh", "-c", script),
                ready=ReadyLine("ready"),
                restart="on-failure",
                backoff=QUICK,
                host=host,
            )
            with anyio.fail_after(10):
                await respawns.second.wait()
            second = service.child
            assert isinstance(second, RemoteChild)
            assert second.remote_pid is not None
            assert running(second.remote_pid)
        kinds = _kinds(events, "job")
        assert kinds == [
            "spawned",
            "ready",
            "exited",
            "restarting",
            "spawned",
            "stopping",
            "exited",
        ]
    spawned = [e.pid for e in events if e.kind == "spawned"]
    assert spawned[1] == second.pid != spawned[0]
    first_exit = next(e for e in events if e.kind == "exited")
    assert first_exit.status is not None
    assert first_exit.status.code == 3
    assert not first_exit.stopped
    assert service.restarts == 1


async def test_gives_up_after_max_restarts(ssh_server: SSHServer) -> None:
    events: list[ServiceEvent] = []
    async with open_host(ssh_server) as host:
        with pytest.raises(ServiceFailed) as caught:
            async with Supervisor(on_output=lambda _: None, on_event=events.append) as sup:
                service = await sup.start(
                    "crashy",
                    Command("sh", "-c", "echo ready; exit 3"),
                    ready=ReadyLine("ready"),
                    restart="on-failure",
                    backoff=QUICK,
                    max_restarts=2,
                    host=host,
                )
                await anyio.sleep_forever()
    assert caught.value.service == "crashy"
    assert caught.value.status is not None
    assert caught.value.status.code == 3
    assert service.restarts == 2
    assert _kinds(events, "crashy").count("spawned") == 3
    assert _kinds(events, "crashy")[-1] == "failed"


@pytest.mark.parametrize(
    "check",
    [ReadyPort(8080), ReadyPort(8080, host="localhost"), ReadyPort(8080, host="::1")],
    ids=["default", "localhost", "ipv6-loopback"],
)
async def test_a_ready_port_on_this_machine_is_refused_before_spawning(
    ssh_server: SSHServer, check: ReadyPort
) -> None:
    events: list[ServiceEvent] = []
    async with open_host(ssh_server) as host:
        async with Supervisor(on_event=events.append) as sup:
            with pytest.raises(ValueError, match="would check this machine"):
                await sup.start("web", Command("sleep", "30"), ready=check, host=host)
            # A Command option without meaning on a host: refused at start() as well.
            with pytest.raises(ValueError, match="not available for a remote command"):
                await sup.start("web", Command("sleep", "30").pass_fds([0]), host=host)
            with pytest.raises(TypeError, match=r"anyio_proc\.remote\.Host"):
                await sup.start("web", Command("sleep", "30"), host="alice@build1")  # type: ignore[arg-type]
            assert sup.services == []
        assert events == []
        # Nothing was spawned: the host runs its agent only.
        assert all("sleep 30" not in cmd for cmd in ssh_server.processes().values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_ready_port_naming_the_host_is_polled(ssh_server: SSHServer) -> None:
    # The remote host is this machine here: its name is an address of it that is not a
    # loopback literal, as a remote host's name would be.
    port = _free_port()
    try:
        socket.getaddrinfo(socket.gethostname(), port)
    except OSError:
        pytest.skip("this machine's name does not resolve")
    server = Command("python3", "-m", "http.server", str(port), "--bind", "0.0.0.0")
    # The Supervisor's block inside the host's, as it must be: one `async with` for both.
    async with open_host(ssh_server) as host, Supervisor(on_output=lambda _: None) as sup:
        service = await sup.start(
            "web",
            server,
            ready=ReadyPort(port, host=socket.gethostname()),
            ready_timeout=10,
            host=host,
        )
        with socket.create_connection((socket.gethostname(), port), timeout=5):
            pass  # it is ready: the port accepts
    assert service.stopped


async def test_local_and_remote_services_stop_in_reverse_order(ssh_server: SSHServer) -> None:
    events: list[ServiceEvent] = []
    local = Command("sh", "-c", SERVER)
    async with (
        open_host(ssh_server) as host,
        Supervisor(on_output=lambda _: None, on_event=events.append) as sup,
    ):
        db = await sup.start("db", local, ready=ReadyLine("ready"))
        web = await sup.start(
            "web", Command("sh", "-c", SERVER), ready=ReadyLine("ready"), host=host
        )
        worker = await sup.start("worker", local, ready=ReadyLine("ready"))
        assert db.host is None
        assert worker.host is None
        assert isinstance(web.child, RemoteChild)
        assert not isinstance(db.child, RemoteChild)
    stops = [(e.service, e.kind) for e in events if e.kind in ("stopping", "exited")]
    assert stops == [
        ("worker", "stopping"),
        ("worker", "exited"),
        ("web", "stopping"),
        ("web", "exited"),
        ("db", "stopping"),
        ("db", "exited"),
    ]
    assert all(s.stopped for s in (db, web, worker))


async def test_a_host_closed_under_a_running_service_fails_it(ssh_server: SSHServer) -> None:
    # The wrong nesting: the host's block ends inside the Supervisor's. The host stops
    # the service's process; the restart cannot start it again: the service fails, and
    # nothing hangs.
    events: list[ServiceEvent] = []
    with anyio.fail_after(15):
        with pytest.raises(ServiceFailed, match="could not be started") as caught:
            async with Supervisor(on_output=lambda _: None, on_event=events.append) as sup:
                async with open_host(ssh_server) as host:
                    await sup.start(
                        "web",
                        Command("sh", "-c", SERVER),
                        ready=ReadyLine("ready"),
                        restart="always",
                        backoff=QUICK,
                        host=host,
                    )
                await anyio.sleep_forever()
    assert caught.value.service == "web"
    assert "anyio-proc-test-server" in str(caught.value)  # names the host
    assert "spawned" in _kinds(events, "web")
    assert _kinds(events, "web")[-1] == "failed"


async def test_a_lost_connection_restarts_the_service_on_a_new_one(
    ssh_server: SSHServer,
) -> None:
    # The master ssh dies under the service: its process is lost (the agent stops it on
    # the host), the restart policy starts it again over a new master connection.
    respawns = Respawns("web")
    events = respawns.events

    async with (
        open_host(ssh_server) as host,
        Supervisor(on_output=lambda _: None, on_event=respawns) as sup,
    ):
        service = await sup.start(
            "web",
            Command("sh", "-c", SERVER),
            ready=ReadyLine("ready"),
            restart="on-failure",
            backoff=QUICK,
            host=host,
        )
        first = service.child
        assert isinstance(first, RemoteChild)
        assert first.remote_pid is not None
        masters = [
            pid
            for pid, cmd in local_ssh_processes(str(ssh_server.workdir)).items()
            if "ControlMaster=yes" in cmd
        ]
        assert len(masters) == 1
        os.kill(masters[0], signal.SIGKILL)
        with anyio.fail_after(10):
            await respawns.second.wait()
        second = service.child
        assert isinstance(second, RemoteChild)
        assert second.remote_pid is not None
        assert running(second.remote_pid)
        assert await gone([first.remote_pid], 10) == []
    lost = next(e for e in events if e.kind == "exited")
    assert not lost.stopped
    assert lost.status is not None
    assert not lost.status.success
    assert service.restarts == 1
