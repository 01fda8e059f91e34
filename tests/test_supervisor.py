"""Supervisor: restart policies, backoff, restart limit, readiness, ordered shutdown.

Restart timing goes through an injected clock and sleep, so backoff delays are checked as
numbers and no test waits for them. Services are ``python -c`` snippets; the ones meant to
run until stopped block on ``sleep`` and die of SIGTERM.
"""

from __future__ import annotations

import os
import random
import signal
import socket
from pathlib import Path

import anyio
import pytest
from anyio.lowlevel import checkpoint

from anyio_proc import (
    Backoff,
    Command,
    OutputLine,
    ReadyLine,
    ReadyPort,
    Restart,
    ServiceEvent,
    ServiceFailed,
    Supervisor,
)

from .helpers import PY, alive

FOREVER = "import time\nwhile True: time.sleep(3600)"


def pycmd(code: str) -> Command:
    # -I -S: a third of the start-up time, and the services need nothing from site-packages.
    return Command(PY, "-I", "-S", "-c", code)


def forever(greeting: str = "up") -> Command:
    return pycmd(f"print({greeting!r}, flush=True)\n{FOREVER}")


def exits(code: int, text: str = "") -> Command:
    return pycmd(f"import sys; print({text!r}); sys.exit({code})")


def counting(path: Path, fail_times: int) -> Command:
    """A command that fails its first ``fail_times`` runs and then succeeds."""
    code = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(path)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        f"sys.exit(1 if n < {fail_times} else 0)\n"
    )
    return pycmd(code)


class Recorder:
    """Collects output and events, and stands in for the clock and sleep of restarts."""

    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.events: list[ServiceEvent] = []
        self.delays: list[float] = []
        self.now = 0.0
        self.advance_on_sleep = True

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        if self.advance_on_sleep:
            self.now += delay
        await checkpoint()

    def supervisor(self) -> Supervisor:
        return Supervisor(
            on_output=self.lines.append,
            on_event=self.events.append,
            clock=self.clock,
            sleep=self.sleep,
            rng=random.Random(1),
        )

    def kinds(self, *kinds: str) -> list[tuple[str, str]]:
        return [(e.service, e.kind) for e in self.events if e.kind in kinds]

    def pids(self) -> list[int]:
        return [e.pid for e in self.events if e.kind == "spawned" and e.pid is not None]


NO_JITTER = Backoff(initial=0.1, factor=2.0, max=0.3, jitter=0.0)


# -- restart policies and backoff ---------------------------------------------------------


async def test_never_restart_reports_final_status() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        service = await sup.start("job", exits(3, "bye"))
        status = await service.wait()
    assert status.code == 3
    assert service.restarts == 0
    assert not service.stopped
    assert rec.delays == []
    assert OutputLine("job", "stdout", "bye") in rec.lines
    assert rec.kinds("spawned", "exited") == [("job", "spawned"), ("job", "exited")]


async def test_on_failure_restarts_until_success_with_backoff(tmp_path: Path) -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        service = await sup.start(
            "flaky",
            counting(tmp_path / "n", fail_times=3),
            restart="on-failure",
            backoff=NO_JITTER,
            max_restarts=10,
        )
        status = await service.wait()
    assert status.success
    assert service.restarts == 3
    assert (tmp_path / "n").read_text() == "4"
    # 0.1, 0.2, then capped at 0.3.
    assert rec.delays == pytest.approx([0.1, 0.2, 0.3])


async def test_on_failure_does_not_restart_success() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        service = await sup.start("ok", exits(0), restart=Restart.ON_FAILURE)
        assert (await service.wait()).success
    assert service.restarts == 0
    assert rec.delays == []


async def test_always_gives_up_after_limit_and_raises(tmp_path: Path) -> None:
    rec = Recorder()
    rec.advance_on_sleep = False  # every restart falls in the same window
    with pytest.raises(ServiceFailed) as info:
        async with rec.supervisor() as sup:
            await sup.start("other", forever())
            await sup.start(
                "loop",
                counting(tmp_path / "n", fail_times=0),  # always exits 0
                restart="always",
                backoff=NO_JITTER,
                max_restarts=3,
                restart_window=60,
            )
            await anyio.sleep_forever()
    exc = info.value
    assert exc.service == "loop"
    assert exc.status is not None
    assert exc.status.success
    assert "3 restart(s)" in str(exc)
    assert (tmp_path / "n").read_text() == "4"  # the first run and three restarts
    assert rec.delays == pytest.approx([0.1, 0.2, 0.3])
    # The permanent failure stopped the other service.
    assert ("other", "stopping") in rec.kinds("stopping")
    assert not any(alive(pid) for pid in rec.pids())


async def test_restarts_spread_beyond_the_window_do_not_count(tmp_path: Path) -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        service = await sup.start(
            "slowflaky",
            counting(tmp_path / "n", fail_times=2),
            restart="on-failure",
            backoff=Backoff(initial=5.0, factor=1.0, max=5.0, jitter=0.0),
            max_restarts=1,
            restart_window=4.0,  # shorter than the delay: each restart starts a new window
        )
        assert (await service.wait()).success
    assert service.restarts == 2
    assert rec.delays == [5.0] * 2


def test_backoff_jitter_bounds_and_cap() -> None:
    backoff = Backoff(initial=1.0, factor=3.0, max=20.0, jitter=0.25)
    rng = random.Random(7)
    for attempt, base in enumerate([1.0, 3.0, 9.0, 20.0, 20.0]):
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= base * 0.75
        assert max(delays) <= min(20.0, base * 1.25)
        assert len(set(delays)) > 1  # jitter does vary
    assert backoff.delay(10_000, rng) <= 20.0  # no overflow on huge attempts
    with pytest.raises(ValueError):
        Backoff(initial=2.0, max=1.0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


# -- readiness ------------------------------------------------------------------------------


async def test_start_returns_only_once_ready_by_line() -> None:
    rec = Recorder()
    # The ready line comes after a run of other lines: start() must not return on those.
    code = "for i in range(50): print('warming', i)\nprint('READY now', flush=True)\n" + FOREVER
    async with rec.supervisor() as sup:
        await sup.start("db", pycmd(code), ready=ReadyLine(r"^READY"))
        assert OutputLine("db", "stdout", "READY now") in rec.lines
        await sup.start("app", forever())
    order = [(e.service, e.kind) for e in rec.events]
    assert order.index(("db", "ready")) < order.index(("app", "spawned"))


async def test_ready_line_on_a_given_stream_only() -> None:
    rec = Recorder()
    code = (
        "import sys\nprint('ready', flush=True)\n"
        "print('really ready', file=sys.stderr, flush=True)\n" + FOREVER
    )
    async with rec.supervisor() as sup:
        await sup.start("s", pycmd(code), ready=ReadyLine("ready", stream="stderr"))
        assert OutputLine("s", "stderr", "really ready") in rec.lines


async def test_ready_by_port_lets_a_dependant_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = (
        "import socket, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen()\n"
        "while True:\n    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
    )
    client = (
        "import socket\n"
        f"c = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "print(c.recv(5).decode())\n"
    )
    rec = Recorder()
    async with rec.supervisor() as sup:
        await sup.start("server", pycmd(server), ready=ReadyPort(port))
        client_service = await sup.start("client", pycmd(client))
        assert (await client_service.wait()).success
    assert OutputLine("client", "stdout", "hello") in rec.lines


async def test_exit_before_ready_raises_from_start() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        with pytest.raises(ServiceFailed) as info:
            await sup.start("early", exits(2, "oops"), ready=ReadyLine("never printed"))
        assert info.value.status is not None
        assert info.value.status.code == 2
        assert "before it was ready" in str(info.value)
        # The supervisor carries on: later services still start.
        later = await sup.start("later", exits(0))
        assert (await later.wait()).success
    assert OutputLine("early", "stdout", "oops") in rec.lines


async def test_ready_timeout_stops_the_process() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        with pytest.raises(ServiceFailed, match="not ready within"):
            await sup.start("stuck", forever(), ready=ReadyLine("ready"), ready_timeout=0.2)
        assert sup.services == []
    assert rec.kinds("stopping", "exited") == [("stuck", "stopping"), ("stuck", "exited")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_spawn_failure_is_a_service_failure() -> None:
    async with Supervisor() as sup:
        with pytest.raises(ServiceFailed, match="could not be started") as info:
            await sup.start("ghost", Command("/nonexistent/program"))
        assert isinstance(info.value.__cause__, FileNotFoundError)


# -- output ---------------------------------------------------------------------------------


async def test_output_tagged_by_service_and_stream_last_line_kept() -> None:
    rec = Recorder()
    code = (
        "import sys\nprint('out 1', flush=True)\nprint('err 1', file=sys.stderr, flush=True)\n"
        "print('last', end='')"
    )
    async with rec.supervisor() as sup:
        await (await sup.start("a", pycmd(code))).wait()
        await (await sup.start("b", pycmd(code), merge_stderr=True)).wait()
    # Two pipes: the order within each stream is kept, not between them.
    a = [line for line in rec.lines if line.service == "a"]
    assert [x.line for x in a if x.stream == "stdout"] == ["out 1", "last"]
    assert [x.line for x in a if x.stream == "stderr"] == ["err 1"]
    # Merged: one pipe, so the order between the streams is kept, all tagged stdout.
    assert [line for line in rec.lines if line.service == "b"] == [
        OutputLine("b", "stdout", "out 1"),
        OutputLine("b", "stdout", "err 1"),
        OutputLine("b", "stdout", "last"),
    ]


async def test_ready_line_without_output_callback_is_copied(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with Supervisor() as sup:
        await sup.start("s", forever("service says ready"), ready=ReadyLine("ready"))
    assert "service says ready" in capfd.readouterr().out


# -- shutdown ------------------------------------------------------------------------------


async def test_leaving_the_block_stops_in_reverse_start_order() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        for name in ("first", "second", "third"):
            await sup.start(name, forever())
        services = sup.services
    assert rec.kinds("stopping", "exited") == [
        ("third", "stopping"),
        ("third", "exited"),
        ("second", "stopping"),
        ("second", "exited"),
        ("first", "stopping"),
        ("first", "exited"),
    ]
    for service in services:
        assert service.stopped
        assert service.status is not None
        assert service.status.signal is not None
        assert service.ended
    assert not any(alive(pid) for pid in rec.pids())


async def test_cancellation_stops_everything_in_reverse_order() -> None:
    rec = Recorder()
    with anyio.CancelScope() as scope:
        async with rec.supervisor() as sup:
            await sup.start("a", forever(), restart="always")
            await sup.start("b", forever(), restart="always")
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert rec.kinds("stopping") == [("b", "stopping"), ("a", "stopping")]
    assert rec.delays == []  # stopped services are not restarted
    assert not any(alive(pid) for pid in rec.pids())


async def test_cancelled_while_waiting_for_readiness() -> None:
    rec = Recorder()
    scope = anyio.CancelScope()

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.service == "pending" and event.kind == "spawned":
            scope.cancel()  # while start() waits for a ready line that never comes

    with scope:
        async with Supervisor(on_output=rec.lines.append, on_event=on_event) as sup:
            await sup.start("base", forever())
            await sup.start("pending", forever(), ready=ReadyLine("never"))
    assert scope.cancelled_caught
    assert rec.kinds("stopping") == [("pending", "stopping"), ("base", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_shutdown_output_is_not_lost() -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*a):\n    sys.exit(0)\n"  # print outside the handler: no re-entered stdout
        "signal.signal(signal.SIGTERM, bye)\n"
        "try:\n    print('up', flush=True)\n    while True: time.sleep(3600)\n"
        "except SystemExit:\n    print('goodbye')\n    raise\n"
    )
    rec = Recorder()
    async with rec.supervisor() as sup:
        service = await sup.start("polite", pycmd(code), ready=ReadyLine("up"))
    assert OutputLine("polite", "stdout", "goodbye") in rec.lines
    assert service.stopped
    assert service.status is not None
    assert service.status.success


async def test_wait_for_all_services() -> None:
    async with Supervisor(on_output=lambda line: None) as sup:
        a = await sup.start("a", exits(0))
        b = await sup.start("b", exits(4))
        await sup.wait()
        assert a.ended
        assert b.ended
        assert sup["b"].status == 4


async def test_bad_arguments() -> None:
    async with Supervisor() as sup:
        await sup.start("x", exits(0))
        with pytest.raises(ValueError, match="already exists"):
            await sup.start("x", exits(0))
        with pytest.raises(ValueError):
            await sup.start("y", exits(0), restart="sometimes")
        with pytest.raises(KeyError):
            sup["nope"]
    with pytest.raises(RuntimeError):
        await Supervisor().start("z", exits(0))


async def test_a_raising_callback_propagates_and_stops_everything() -> None:
    rec = Recorder()

    def on_output(line: OutputLine) -> None:
        if line.line == "boom":
            raise LookupError("callback failed")

    with pytest.raises(LookupError, match="callback failed"):
        async with Supervisor(on_output=on_output, on_event=rec.events.append) as sup:
            await sup.start("calm", forever())
            await sup.start("loud", pycmd("print('boom', flush=True)\n" + FOREVER))
            await anyio.sleep_forever()
    assert rec.kinds("stopping") == [("loud", "stopping"), ("calm", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_a_grandchild_holding_the_pipe_does_not_hold_up_the_service() -> None:
    # The grandchild inherits the output pipe and outlives its parent, so end-of-file never
    # comes: reading must give up after drain_timeout instead of waiting for it.
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-I', '-S', '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
    )
    lines: list[OutputLine] = []
    grandchild = None
    try:
        with anyio.fail_after(20):
            async with Supervisor(on_output=lines.append, drain_timeout=0.1) as sup:
                service = await sup.start("parent", pycmd(code))
                assert (await service.wait()).success
        grandchild = int(lines[0].line)
        assert alive(grandchild)  # it was still holding the pipe when reading gave up
    finally:
        if grandchild is None and lines:
            grandchild = int(lines[0].line)
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)
