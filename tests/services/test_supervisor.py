"""Supervisor: restart policies, backoff, restart limit, readiness, ordered shutdown.

Restart timing goes through an injected clock and sleep, so backoff delays are checked as
numbers and no test waits for them. Services are ``python -c`` snippets; the ones meant to
run until stopped block on ``sleep`` and die of SIGTERM.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
import sniffio
from anyio.lowlevel import checkpoint

from anyio_proc import Command
from anyio_proc._os.waiters import available_waiters
from anyio_proc.services import (
    Backoff,
    OutputLine,
    ReadyLine,
    ReadyPort,
    RestartPolicy,
    ServiceEvent,
    ServiceFailed,
    Supervisor,
)

from ..helpers import PY, alive, group_members

if TYPE_CHECKING:
    from collections.abc import Callable

if sys.version_info < (3, 11):
    # A dependency on 3.10 only, so it may be missing where the type checker runs.
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

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
        service = await sup.start("ok", exits(0), restart=RestartPolicy.ON_FAILURE)
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


async def test_start_cancelled_just_as_the_service_is_ready() -> None:
    # Cancelled before start() could return the service (no ready check: it is ready as soon
    # as it exists): anyio's TaskGroup.start() then waits for the service's task, which used
    # to wait in turn for its place in the ordered shutdown, which never came. A hang.
    rec = Recorder()
    scope = anyio.CancelScope()

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.service == "quick" and event.kind == "spawned":
            scope.cancel()

    with anyio.fail_after(20):
        async with Supervisor(on_output=rec.lines.append, on_event=on_event) as sup:
            await sup.start("base", forever())
            with scope:
                await sup.start("quick", forever())
            assert scope.cancelled_caught
            assert [s.name for s in sup.services] == ["base"]
            # The one being started is stopped at once; the supervisor carries on.
            assert rec.kinds("stopping") == [("quick", "stopping")]
            assert (await (await sup.start("later", exits(0))).wait()).success
    assert rec.kinds("stopping") == [("quick", "stopping"), ("base", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_callback_raising_while_a_service_starts() -> None:
    # The same race through the supervisor's own cancellation: used to hang as well.
    def on_event(event: ServiceEvent) -> None:
        if event.service == "b" and event.kind == "spawned":
            raise LookupError("callback failed")

    pids: list[int] = []
    with anyio.fail_after(20), pytest.raises(LookupError, match="callback failed"):
        async with Supervisor(on_event=on_event) as sup:
            pids.append((await sup.start("a", forever())).pid or 0)
            await sup.start("b", forever())
            await anyio.sleep_forever()
    assert not any(alive(pid) for pid in pids)


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


# -- piped stdin: the supervisor's own waits leave it to the user --------------------------


async def test_piped_stdin_stays_open_and_reaches_the_service() -> None:
    # The supervisor watches the process with wait(); a plain wait() closes our end of
    # stdin, and cat would see end-of-file and exit 0 at once.
    rec = Recorder()
    echoed = anyio.Event()

    def on_output(line: OutputLine) -> None:
        rec.lines.append(line)
        if line.line == "hello":
            echoed.set()

    async with Supervisor(on_output=on_output, on_event=rec.events.append) as sup:
        service = await sup.start("cat", Command("cat").stdin_piped())
        child = service.child  # how a user reaches a service's process, and its stdin
        assert child is not None
        assert child.stdin is not None
        await child.stdin.send(b"hello\n")
        with anyio.fail_after(10):
            await echoed.wait()
        assert service.child is child
        assert child.returncode is None
        await child.stdin.aclose()  # the user's to close: now cat ends by itself
        status = await service.wait()
    assert status.success
    assert not service.stopped
    assert rec.kinds("stopping") == []


async def test_piped_stdin_stays_open_while_waiting_for_readiness() -> None:
    # The readiness wait races the process's exit with wait() too; the service prints its
    # ready line only after start() has returned, and then needs its stdin.
    code = (
        "import sys\nprint('ready', flush=True)\n"
        "print('got', sys.stdin.readline().strip() or 'EOF', flush=True)\n" + FOREVER
    )
    got = anyio.Event()
    lines: list[OutputLine] = []

    def on_output(line: OutputLine) -> None:
        lines.append(line)
        if line.line.startswith("got"):
            got.set()

    async with Supervisor(on_output=on_output) as sup:
        service = await sup.start("reader", pycmd(code).stdin_piped(), ready=ReadyLine("ready"))
        assert service.child is not None
        assert service.child.stdin is not None
        await service.child.stdin.send(b"line\n")
        with anyio.fail_after(10):
            await got.wait()
    assert OutputLine("reader", "stdout", "got line") in lines
    assert service.stopped


# -- what comes out of the block ------------------------------------------------------------


async def test_body_exception_comes_out_bare_after_stopping_everything() -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="from the body") as info:
        async with rec.supervisor() as sup:
            await sup.start("a", forever())
            raise ValueError("from the body")
    assert type(info.value) is ValueError
    assert rec.kinds("stopping") == [("a", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_service_failed_from_start_comes_out_bare() -> None:
    rec = Recorder()
    with pytest.raises(ServiceFailed, match="before it was ready") as info:
        async with rec.supervisor() as sup:
            await sup.start("a", forever())
            await sup.start("early", exits(2), ready=ReadyLine("never printed"))
    assert type(info.value) is ServiceFailed
    assert info.value.service == "early"
    assert rec.kinds("stopping") == [("a", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_keyboard_interrupt_in_the_body_comes_out_bare() -> None:
    rec = Recorder()
    with pytest.raises(KeyboardInterrupt) as info:
        async with rec.supervisor() as sup:
            await sup.start("a", forever())
            raise KeyboardInterrupt
    assert type(info.value) is KeyboardInterrupt
    assert rec.kinds("stopping") == [("a", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_give_up_during_the_body_is_the_same_bare_type() -> None:
    rec = Recorder()
    rec.advance_on_sleep = False
    with pytest.raises(ServiceFailed, match="gave up") as info:
        async with rec.supervisor() as sup:
            await sup.start("loop", exits(0), restart="always", max_restarts=1)
            await anyio.sleep_forever()
    assert type(info.value) is ServiceFailed
    assert info.value.service == "loop"


async def test_body_exception_and_a_give_up_at_once_come_out_together() -> None:
    rec = Recorder()
    rec.advance_on_sleep = False
    gave_up = anyio.Event()

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.kind == "failed":
            gave_up.set()

    supervisor = Supervisor(on_event=on_event, sleep=rec.sleep, clock=rec.clock)
    with pytest.raises(ExceptionGroup) as info:
        async with supervisor as sup:
            await sup.start("other", forever())
            await sup.start("loop", exits(0), restart="always", max_restarts=1)
            # Shielded: the body is not cancelled by the give-up, and fails by itself.
            with anyio.CancelScope(shield=True):
                await gave_up.wait()
                raise ValueError("from the body")
    body, failure = info.value.exceptions
    assert isinstance(body, ValueError)
    assert isinstance(failure, ServiceFailed)
    assert failure.service == "loop"
    assert ("other", "stopping") in rec.kinds("stopping")
    assert not any(alive(pid) for pid in rec.pids())


async def test_outer_cancellation_and_a_give_up_at_once_keep_the_failure() -> None:
    rec = Recorder()
    rec.advance_on_sleep = False
    scope = anyio.CancelScope()

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.kind == "failed":
            scope.cancel()  # the caller's timeout strikes just as the service gives up

    supervisor = Supervisor(on_event=on_event, sleep=rec.sleep, clock=rec.clock)
    with pytest.raises(ServiceFailed, match="gave up"), scope:
        async with supervisor as sup:
            await sup.start("other", forever())
            await sup.start("loop", exits(0), restart="always", max_restarts=1)
            await anyio.sleep_forever()
    assert not any(alive(pid) for pid in rec.pids())


async def test_outer_cancellation_alone_stays_a_cancellation() -> None:
    with anyio.CancelScope() as scope:
        async with Supervisor() as sup:
            await sup.start("a", forever())
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    with anyio.move_on_after(0.05) as timer:  # a plain cancellation of the body, by a timeout
        async with Supervisor() as sup:
            await sup.start("a", forever())
            await anyio.sleep_forever()
    assert timer.cancelled_caught


async def test_own_stdout_failing_is_a_bare_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without on_output, a ReadyLine service's lines are copied to our stdout; a failure to
    # write there stops everything like a raising callback, not as nested ExceptionGroups.
    closed = open(os.devnull, "w")  # noqa: SIM115
    closed.close()
    monkeypatch.setattr("sys.stdout", closed)
    with pytest.raises(ValueError, match="closed file"):
        async with Supervisor() as sup:
            await sup.start("s", forever("ready"), ready=ReadyLine("ready"), ready_timeout=10)
            await anyio.sleep_forever()


# -- bad values are refused where they are given ---------------------------------------------


async def test_bad_numbers_are_refused_before_anything_runs() -> None:
    for port in (0, -1, 70000):
        with pytest.raises(ValueError, match="out of range"):
            ReadyPort(port)
    with pytest.raises(TypeError):
        ReadyPort("80")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ReadyLine("(")
    with pytest.raises(ValueError):
        ReadyLine("x", stream="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=float("nan"))
    with pytest.raises(ValueError, match="drain_timeout"):
        Supervisor(drain_timeout=float("nan"))
    async with Supervisor() as sup:
        for timeout in (float("nan"), -1.0):
            with pytest.raises(ValueError, match="ready_timeout"):
                await sup.start("x", forever(), ready=ReadyLine("up"), ready_timeout=timeout)
        with pytest.raises(TypeError, match="max_restarts"):
            await sup.start("x", forever(), max_restarts=float("nan"))  # type: ignore[arg-type]
        assert sup.services == []


# -- escalation --------------------------------------------------------------------------------


async def test_exited_event_reports_an_escalation_the_status_does_not_show() -> None:
    # The group's leader dies of SIGTERM, a member it started ignores it: the status says
    # SIGTERM, but the exit policy had to SIGKILL the group after the grace period.
    line = "trap '' TERM; sleep 60 & trap - TERM; echo up $!; exec sleep 60"
    cmd = Command.shell(line).process_group(0).shutdown(signal.SIGTERM, 0.2)
    rec = Recorder()
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        async with rec.supervisor() as sup:
            service = await sup.start("stubborn", cmd, ready=ReadyLine("^up"))
    (exited,) = [e for e in rec.events if e.kind == "exited"]
    assert exited.status is not None
    assert exited.status.signal == signal.SIGTERM
    assert exited.stopped
    assert exited.escalated
    assert str(exited) == (
        "stopped: signal: 15 (SIGTERM); escalated to SIGKILL after the grace period"
    )
    member = int(next(r.line for r in rec.lines if r.line.startswith("up")).split()[1])
    assert not alive(member)
    assert service.pid is None
    assert group_members(rec.pids()[0]) == []


async def test_no_escalation_is_reported_for_a_clean_stop() -> None:
    rec = Recorder()
    async with rec.supervisor() as sup:
        await sup.start("calm", forever())
    (exited,) = [e for e in rec.events if e.kind == "exited"]
    assert exited.stopped
    assert not exited.escalated
    assert "SIGKILL" not in str(exited)


def test_restart_delay_reads_as_a_number_even_when_huge() -> None:
    assert str(ServiceEvent("s", "restarting", delay=0.5)) == "restarting in 0.50 s"
    # Backoff accepts any finite delay; it used to print as 300 digits.
    assert str(ServiceEvent("s", "restarting", delay=1e300)) == "restarting in 1e+300 s"


# -- a real Ctrl-C, in a fresh interpreter ------------------------------------------------------

CTRL_C_HARNESS = """\
import sys
import anyio
from anyio_proc import Command
from anyio_proc.services import Supervisor

backend, use_uvloop = sys.argv[1:3]
options = {"use_uvloop": True} if use_uvloop == "1" else {}


async def main():
    async with Supervisor() as sup:
        for name in ("a", "b"):
            print((await sup.start(name, Command("sleep", "100"))).pid, flush=True)
        print("ready", flush=True)
        await anyio.sleep_forever()


try:
    anyio.run(main, backend=backend, backend_options=options)
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
"""


@pytest.mark.parametrize(
    ("backend", "use_uvloop"), [("asyncio", "0"), ("asyncio", "1"), ("trio", "0")]
)
def test_ctrl_c_comes_out_as_keyboard_interrupt(backend: str, use_uvloop: str) -> None:
    # Under trio, a Ctrl-C used to come out of the block as a BaseExceptionGroup.
    argv = [PY, "-X", "dev", "-W", "error", "-c", CTRL_C_HARNESS, backend, use_uvloop]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == "ready\n":
                break
            pids.append(int(line))
        # Once it sleeps in the event loop's wait, not while library code that is not
        # protected from KeyboardInterrupt runs (see test_cancel); bounded, then sent anyway.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{proc.pid}/wchan") as f:
                if f.read() == "do_epoll_wait":
                    break
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in pids:  # reparented once the harness exits: not ours to reap
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert out.splitlines()[-1] == "raised KeyboardInterrupt", out + err
    assert "Warning" not in err, err
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)  # stopped by the block before it returned


# -- a callback that raises a BaseException: SystemExit, KeyboardInterrupt, GeneratorExit ----

CALLBACK_KINDS = ["spawned", "ready", "restarting", "failed", "stopping", "exited", "output"]


async def raising_callback_scenario(kind: str, error: BaseException, rec: Recorder) -> None:
    """Two services; a callback raises ``error`` at ``kind`` of the second one (``output``:
    at its first line). Leaves only by raising. (Also run by the KeyboardInterrupt harness.)"""

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.service == "second" and event.kind == kind:
            raise error

    def on_output(line: OutputLine) -> None:
        rec.lines.append(line)
        if kind == "output" and line.service == "second":
            raise error

    async with Supervisor(on_output=on_output, on_event=on_event) as sup:
        await sup.start("first", forever())
        if kind == "ready":
            await sup.start("second", forever(), ready=ReadyLine("^up$"))
        elif kind == "restarting":
            await sup.start("second", exits(1), restart="on-failure")
        elif kind == "failed":
            await sup.start("second", exits(0), restart="always", max_restarts=0)  # gives up
        else:
            await sup.start("second", forever())
        if kind in ("stopping", "exited"):
            return  # leaving the block: the shutdown raises it
        await anyio.sleep_forever()


class Abort(BaseException):
    """A BaseException of the user's own: not an Exception, not a known one."""


@pytest.mark.parametrize(
    "make_error",
    [lambda: SystemExit(5), GeneratorExit, Abort],
    ids=["SystemExit", "GeneratorExit", "Abort"],
)
@pytest.mark.parametrize("kind", CALLBACK_KINDS)
async def test_a_callback_raising_a_base_exception_stops_everything_and_it_comes_out(
    kind: str, make_error: Callable[[], BaseException]
) -> None:
    # These used to escape from wherever the callback was called: at "spawned" the new
    # process was left to nobody; at "stopping"/"exited" the ordered shutdown stopped half
    # way and the block waited for ever, shielded, for a service nobody would close.
    error = make_error()
    rec = Recorder()
    with anyio.fail_after(30), pytest.raises(type(error)) as info:
        await raising_callback_scenario(kind, error, rec)
    assert info.value is error  # bare: no group, no replacement
    pids = rec.pids()
    assert len(pids) >= 2
    assert not any(alive(pid) for pid in pids)
    # Every process was stopped by the supervisor or exited by itself, and "first", which
    # runs until stopped, was stopped last: the ordered shutdown went to its end.
    assert len(rec.kinds("exited")) == len(pids)
    assert rec.kinds("stopping")[-1] == ("first", "stopping")


async def test_a_base_exception_from_a_callback_outranks_an_earlier_error() -> None:
    # A request to end the program (sys.exit() in a callback, a Ctrl-C landing in one on
    # trio) is not dropped because a callback raised an ordinary error first.
    rec = Recorder()

    def on_output(line: OutputLine) -> None:
        rec.lines.append(line)
        if line.service == "second":
            raise LookupError("first, an error")

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.kind == "stopping":
            raise SystemExit(3)

    with anyio.fail_after(30), pytest.raises(SystemExit) as info:
        async with Supervisor(on_output=on_output, on_event=on_event) as sup:
            await sup.start("first", forever())
            await sup.start("second", forever())
            await anyio.sleep_forever()
    assert info.value.code == 3
    assert rec.kinds("stopping") == [("second", "stopping"), ("first", "stopping")]
    assert not any(alive(pid) for pid in rec.pids())


async def test_an_interrupt_through_the_shield_still_stops_the_other_services() -> None:
    # A native asyncio Task.cancel() (what asyncio's first Ctrl-C does) gets through the
    # shielded shutdown while the first service is being stopped: that one is killed at
    # once, and the shutdown still stops the other before the cancellation propagates. It
    # used to leave the ordered shutdown there, and the block waited for ever, shielded,
    # for the other service's turn.
    if sniffio.current_async_library() != "asyncio":
        pytest.skip("a native Task.cancel() is asyncio's")
    import asyncio

    task = asyncio.current_task()
    assert task is not None
    rec = Recorder()
    # It ignores SIGTERM: only the cut-short policy's SIGKILL ends it.
    ignore_term = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    stubborn = pycmd(f"{ignore_term}print('up', flush=True)\n{FOREVER}")

    def on_event(event: ServiceEvent) -> None:
        rec.events.append(event)
        if event.service == "second" and event.kind == "stopping":
            task.cancel()

    with anyio.fail_after(30), pytest.raises(asyncio.CancelledError):
        async with Supervisor(on_event=on_event) as sup:
            await sup.start("first", forever())
            await sup.start("second", stubborn, ready=ReadyLine("^up$"))
    if sys.version_info >= (3, 11):
        task.uncancel()  # caught here: the test's task goes on as if never cancelled
    assert rec.kinds("stopping", "exited") == [
        ("second", "stopping"),
        ("second", "exited"),
        ("first", "stopping"),
        ("first", "exited"),
    ]
    assert sup["second"].status == -signal.SIGKILL  # its grace period was cut short
    assert [e.escalated for e in rec.events if e.kind == "exited"] == [True, False]
    assert sup["first"].status == -signal.SIGTERM  # stopped as usual
    assert all(service.ended for service in sup.services)
    assert not any(alive(pid) for pid in rec.pids())


# KeyboardInterrupt, in a fresh interpreter: if it ever escaped again, it would end the
# test run itself. Every scenario runs in turn; the harness checks its children after each.
KEYBOARD_INTERRUPT_HARNESS = """\
import ast, sys
import anyio
from tests.helpers import alive, children
from tests.services.test_supervisor import Recorder, raising_callback_scenario

backend, options = sys.argv[1], ast.literal_eval(sys.argv[2])
for kind in sys.argv[3:]:
    rec = Recorder()
    try:
        anyio.run(
            raising_callback_scenario, kind, KeyboardInterrupt(), rec,
            backend=backend, backend_options=options,
        )
    except BaseException as exc:
        outcome = type(exc).__name__
    else:
        outcome = "nothing"
    left = sorted({pid for pid in rec.pids() if alive(pid)} | set(children()))
    print(kind, outcome, "left", *left, flush=True)
"""

HARNESS_BACKENDS = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
REPO = Path(__file__).resolve().parents[2]
MARKER = "ANYIO_PROC_SUPERVISOR_TEST"


def harness(script: str, token: str, backend_id: str, *args: str) -> subprocess.Popen[str]:
    """``script`` in a fresh interpreter; what it starts inherits ``token`` (see strays())."""
    backend, options = HARNESS_BACKENDS[backend_id]
    # The exit waiter the test runs with is in our environment (ANYIO_PROC_WAITER).
    env = {**os.environ, "PYTHONPATH": str(REPO), MARKER: token}
    argv = [PY, "-X", "dev", "-W", "error", "-c", script, backend, repr(options), *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """stdout and stderr of a harness, killed (and noted in stderr) past ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err + f"\nhung for {timeout} s"


def strays(token: str) -> list[int]:
    """Live processes a finished harness left behind (found by the marker in their
    environment, wherever they were re-parented), killed here so a failure costs nothing."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                marked = needle in f.read().split(b"\0")
        except OSError:
            continue  # not a process, gone, or not ours to read
        if marked and alive(int(name)):
            os.kill(int(name), signal.SIGKILL)
            found.append(int(name))
    return found


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
def test_keyboard_interrupt_from_a_callback_comes_out_after_stopping_everything(
    waiter: str,
) -> None:
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    procs = {  # all at once: a hang costs the wait once
        backend_id: harness(KEYBOARD_INTERRUPT_HARNESS, token, backend_id, *CALLBACK_KINDS)
        for backend_id in HARNESS_BACKENDS
    }
    deadline = time.monotonic() + 40
    problems = []
    for backend_id, proc in procs.items():
        out, err = finish(proc, max(0.1, deadline - time.monotonic()))
        expected = [f"{kind} KeyboardInterrupt left" for kind in CALLBACK_KINDS]
        if out.splitlines() != expected or proc.returncode != 0:
            problems.append(f"{backend_id}: rc={proc.returncode}\n{out}{err[-1500:]}")
    left = strays(token)
    assert problems == []
    assert left == []


# A real Ctrl-C, while a callback is slow (blocks): on trio it raises KeyboardInterrupt in
# the callback; asyncio's first Ctrl-C only asks the blocked loop to cancel the main task,
# so the user presses again, and that one raises it in the callback.
CTRL_C_IN_A_CALLBACK = """\
import ast, signal, sys, time
import anyio
from anyio_proc import Command, Stdio
from anyio_proc.services import ReadyLine, Supervisor

backend, options, kind = sys.argv[1], ast.literal_eval(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGINT, signal.default_int_handler)  # as run from a terminal


def slow():
    print("in callback", flush=True)
    time.sleep(60)


def on_event(event):
    if event.kind == "spawned":
        print("pid", event.pid, flush=True)
    if event.service == "second" and event.kind == kind:
        slow()


def on_output(line):
    if kind == "output" and line.service == "second":
        slow()


async def main():
    loops_handler = signal.getsignal(signal.SIGINT)  # the event loop's own, installed by now

    def told(signum, frame):
        loops_handler(signum, frame)
        print("sigint handled", flush=True)  # and nothing raised

    signal.signal(signal.SIGINT, told)
    cmd = Command("sh", "-c", "echo up; exec sleep 100").stdin(Stdio.NULL)
    async with Supervisor(on_output=on_output, on_event=on_event) as sup:
        await sup.start("first", cmd)
        await sup.start("second", cmd, ready=ReadyLine("^up$"))
        if kind not in ("stopping", "exited"):
            await anyio.sleep_forever()


try:
    anyio.run(main, backend=backend, backend_options=options)
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
"""


class Lines:
    """A harness's stdout, line by line, each wait bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.seen: list[str] = []

    def next(self, deadline: float) -> str | None:
        """The next line, or None at end of file or past the deadline."""
        while b"\n" not in self.buffer:
            ready = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            data = os.read(self.fd, 4096) if ready[0] else b""
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.seen.append(line.decode())
        return self.seen[-1]


def ctrl_c_in_a_callback(backend_id: str, kind: str) -> str:
    """Run the harness, Ctrl-C it in its slow callback; what went wrong, or ''."""
    token = f"{os.getpid()}-{time.monotonic_ns()}-{backend_id}"
    proc = harness(CTRL_C_IN_A_CALLBACK, token, backend_id, kind)
    lines = Lines(proc)
    pids: list[int] = []
    presses = 0
    out = err = ""
    try:
        deadline = time.monotonic() + 20
        while (line := lines.next(deadline)) is not None:
            if line.startswith("pid "):
                pids.append(int(line.split()[1]))
            elif line == "in callback" or (line == "sigint handled" and backend_id != "trio"):
                proc.send_signal(signal.SIGINT)
                presses += 1
            elif line.startswith("raised"):
                break
        out, err = finish(proc, max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        left = strays(token)  # orphans: re-parented, not ours to reap
    ok = lines.seen[-1:] == ["raised KeyboardInterrupt"] and len(pids) == 2 and not left
    if ok and presses == (1 if backend_id == "trio" else 2):
        return ""
    return f"{backend_id}: presses={presses} left={left} {lines.seen} {out}{err[-1500:]}"


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("kind", ["spawned", "ready", "output", "stopping", "exited"])
def test_ctrl_c_landing_in_a_slow_callback(kind: str, waiter: str) -> None:
    with ThreadPoolExecutor(len(HARNESS_BACKENDS)) as pool:  # at once: a hang costs once
        problems = list(pool.map(ctrl_c_in_a_callback, HARNESS_BACKENDS, [kind] * 3))
    assert [p for p in problems if p] == []
