"""Cancellation and timeouts at every stage of a child's life (RELIABILITY.md section B).

Spawning is not cancellable half-way, ``wait()`` and the streams are cancel-safe, the exit
policy of a block is shielded, and a cancellation is never turned into another exception.
The autouse ``no_leaks`` fixture fails any test that leaves a child, an fd or a thread.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyio_proc import Child, Command, ExitStatus, spawn
from anyio_proc._os.waiters import available_waiters

from .helpers import alive, children, group_members, proc_state, py

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
    from pathlib import Path

    from anyio.abc import TaskStatus

IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(100)\n"
)


def new_children(before: dict[int, str]) -> dict[int, str]:
    return {pid: state for pid, state in children().items() if pid not in before}


async def first_line(lines: AsyncIterator[str]) -> str:
    with anyio.fail_after(10):
        return await anext(lines)


# -- B1: cancel while spawning ----------------------------------------------------------------


async def test_cancel_while_spawning_a_block() -> None:
    rng = random.Random(20240607)
    before = children()
    entered = 0

    async def run_block() -> None:
        nonlocal entered
        async with spawn(Command("sleep", "100")):
            entered += 1
            await anyio.sleep_forever()

    for _ in range(100):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_block)
            await anyio.sleep(rng.uniform(0, 0.005))
            tg.cancel_scope.cancel()
        assert new_children(before) == {}
    assert entered > 0  # the schedule did reach the body sometimes


async def test_cancel_while_awaiting_spawn() -> None:
    # The awaitable form: once the process exists the caller gets it, so every child that
    # was started is in `got` and nothing is orphaned.
    rng = random.Random(7)
    before = children()
    got: list[Child] = []

    async def start() -> None:
        got.append(await spawn(Command("sleep", "100")))
        await anyio.sleep_forever()

    for _ in range(100):
        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            await anyio.sleep(rng.uniform(0, 0.005))
            tg.cancel_scope.cancel()
        for child in got:
            await child.aclose()
            assert child.returncode == -signal.SIGTERM
        got.clear()
        assert new_children(before) == {}


# -- B2: cancel a blocked wait() --------------------------------------------------------------


async def test_cancelled_wait_leaves_the_process_alone() -> None:
    async with spawn(Command("sleep", "100")) as child:
        for _ in range(3):
            with anyio.move_on_after(0.05) as scope:
                await child.wait()
            assert scope.cancelled_caught
            assert alive(child.pid)
            assert child.returncode is None
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL


async def test_cancelling_one_waiter_does_not_disturb_the_others() -> None:
    results: list[ExitStatus] = []

    async def wait_for(child: Child) -> None:
        results.append(await child.wait())

    async with spawn(Command("sleep", "100")) as child:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                # The first waiter is cancelled after the others joined it, while they are
                # all blocked; the survivors must still see the exit.
                async with anyio.create_task_group() as doomed:
                    doomed.start_soon(wait_for, child)
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(wait_for, child)
                    tg.start_soon(wait_for, child)
                    await anyio.wait_all_tasks_blocked()
                    doomed.cancel_scope.cancel()
                assert alive(child.pid)
                assert results == []
                child.kill()
        assert results == [-signal.SIGKILL] * 2
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL


# -- B3: cancel during the body ---------------------------------------------------------------


async def test_cancel_during_the_block_body() -> None:
    with anyio.move_on_after(0.1) as scope:
        async with spawn(Command("sleep", "100")) as child:
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None


async def test_cancel_during_the_body_stops_the_group() -> None:
    # RELIABILITY C4 through cancellation.
    cmd = Command("sh", "-c", "sleep 100 & sleep 100 & echo ready; wait").stdout_piped()
    with anyio.CancelScope() as scope:
        async with spawn(cmd.process_group(0)) as child:
            assert child.stdout is not None
            assert await first_line(child.stdout.lines()) == "ready"
            members = group_members(child.pid)
            assert len(members) == 3
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert group_members(child.pid) == []
    assert proc_state(child.pid) is None


# -- B4: streams ------------------------------------------------------------------------------

# Prints 'ready', then half a line; the rest of the line comes once stdin says "go".
HALF_LINE = (
    "import sys\n"
    "sys.stdout.write('ready\\npar'); sys.stdout.flush()\n"
    "sys.stdin.readline()\n"
    "sys.stdout.write('tial\\nlast\\n'); sys.stdout.flush()\n"
)


async def test_cancel_while_receiving_loses_nothing() -> None:
    cmd = Command(*py(HALF_LINE)).stdin_piped().stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        received = b""
        with anyio.fail_after(10):
            while b"par" not in received:
                received += await child.stdout.receive()
        assert received == b"ready\npar"
        with anyio.move_on_after(0.1) as scope:
            await child.stdout.receive()  # nothing more until we say go
        assert scope.cancelled_caught
        await child.stdin.send(b"go\n")
        with anyio.fail_after(10):
            rest = await child.stdout.read_all()
            assert await child.wait() == 0
    assert rest == b"tial\nlast\n"


async def test_cancel_while_iterating_lines_resumes_the_partial_line() -> None:
    cmd = Command(*py(HALF_LINE)).stdin_piped().stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        lines = child.stdout.lines()
        assert await first_line(lines) == "ready"
        with anyio.move_on_after(0.1) as scope:
            await anext(lines)  # blocked on the second half of "partial"
        assert scope.cancelled_caught
        await child.stdin.send(b"go\n")
        with anyio.fail_after(10):
            rest = [line async for line in lines]
            assert await child.wait() == 0
    assert rest == ["partial", "last"]


# Blocks SIGUSR1, says ready, waits for it without reading stdin, then reads stdin to EOF
# and reports how much came and how it ended.
READS_STDIN_LATER = (
    "import signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
    "print('ready', flush=True)\n"
    "signal.sigwait({signal.SIGUSR1})\n"
    "data = sys.stdin.buffer.read()\n"
    "print(len(data), data[-3:].decode(), flush=True)\n"
)


async def test_cancel_while_sending_into_a_full_pipe() -> None:
    cmd = Command(*py(READS_STDIN_LATER)).stdin_piped().stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        lines = child.stdout.lines()
        assert await first_line(lines) == "ready"
        # The child does not read, so the pipe fills up and send() blocks (4 MiB: more
        # than a busy pipe grows to).
        for _ in range(2):  # and the stream is not left "busy" by a cancelled send
            with anyio.move_on_after(0.1) as scope:
                await child.stdin.send(b"x" * (4 << 20))
            assert scope.cancelled_caught
        assert alive(child.pid)
        child.send_signal(signal.SIGUSR1)
        with anyio.fail_after(10):
            await child.stdin.send(b"END")  # the stream still works after the cancels
            assert await child.wait() == 0
            report = await first_line(lines)
    count, tail = report.split()
    assert tail == "END"
    assert 3 < int(count) < 2 * (4 << 20) + 3


async def test_cancel_while_sending_to_a_child_that_never_reads() -> None:
    cmd = Command("sleep", "100").stdin_piped()
    with anyio.move_on_after(0.1) as scope:
        async with spawn(cmd) as child:
            assert child.stdin is not None
            await child.stdin.send(b"x" * (4 << 20))
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None


# -- cancelling aclose() ----------------------------------------------------------------------


async def test_cancel_during_the_exit_policy_is_shielded() -> None:
    # The body ends normally; while aclose() waits out the grace period of a child that
    # ignores SIGTERM, another task cancels the enclosing scope. The exit policy still runs
    # to the end (grace, SIGKILL, reap) before the cancellation takes effect.
    cmd = Command(*py(IGNORES_SIGTERM)).stdout_piped().shutdown(timeout=0.2)
    leaving = anyio.Event()
    timing: dict[str, float] = {}
    children_seen: list[Child] = []

    async def owner() -> None:
        with pytest.warns(RuntimeWarning, match="SIGTERM"):
            async with spawn(cmd) as child:
                children_seen.append(child)
                assert child.stdout is not None
                assert await first_line(child.stdout.lines()) == "ready"
                timing["leave"] = time.monotonic()
                leaving.set()
        timing["closed"] = time.monotonic()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(owner)
            await leaving.wait()
            # The owner is inside aclose() now: it ran from set() to its first await.
            tg.cancel_scope.cancel()
    (child,) = children_seen
    assert child.returncode == -signal.SIGKILL
    assert proc_state(child.pid) is None
    assert timing["closed"] - timing["leave"] >= 0.2


async def test_aclose_in_an_already_cancelled_scope_still_reaps() -> None:
    child = await spawn(Command("sleep", "100"))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await child.aclose()
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None

    # The same with a child that makes the exit policy wait for the grace period.
    cmd = Command(*py(IGNORES_SIGTERM)).stdout_piped().shutdown(timeout=0.2)
    child = await spawn(cmd)
    try:
        assert child.stdout is not None
        assert await first_line(child.stdout.lines()) == "ready"
    except BaseException:
        child.kill()
        await child.aclose()
        raise
    with anyio.CancelScope() as scope, pytest.warns(RuntimeWarning):
        scope.cancel()
        await child.aclose()
    assert child.returncode == -signal.SIGKILL
    assert proc_state(child.pid) is None


# -- B5, B6: timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["output", "status"])
async def test_timeout_with_a_grandchild_holding_the_pipes(method: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = f"sleep 30 & echo $$ $! > {pid_file}; wait"
    cmd = Command("sh", "-c", script).process_group(0).stdout_piped()
    run: Callable[..., Coroutine[Any, Any, Any]] = cmd.output if method == "output" else cmd.status
    start = time.monotonic()
    with pytest.raises(TimeoutError), anyio.fail_after(0.5):
        await run()
    assert time.monotonic() - start < 3
    leader, grandchild = map(int, pid_file.read_text().split())
    assert group_members(leader) == []
    assert not alive(grandchild)
    assert proc_state(leader) is None


@pytest.mark.parametrize("timeout", [0, -1])
async def test_zero_or_negative_timeout(timeout: float) -> None:
    before = children()
    cmd = Command("sleep", "100")
    start = time.monotonic()
    with pytest.raises(TimeoutError), anyio.fail_after(timeout):
        async with spawn(cmd):
            await anyio.sleep_forever()
    with pytest.raises(TimeoutError), anyio.fail_after(timeout):
        child = await spawn(cmd)
        try:
            await anyio.sleep_forever()
        finally:
            await child.aclose()
    with pytest.raises(TimeoutError), anyio.fail_after(timeout):
        await cmd.output()
    with pytest.raises(TimeoutError), anyio.fail_after(timeout):
        await cmd.status()
    assert time.monotonic() - start < 2
    assert new_children(before) == {}


# -- B8: a cancellation stays a cancellation --------------------------------------------------


async def _wait(child: Child) -> None:
    await child.wait()


async def _receive(child: Child) -> None:
    assert child.stdout is not None
    await child.stdout.receive()


async def _lines(child: Child) -> None:
    assert child.stdout is not None
    async for _ in child.stdout.lines():
        pass


async def _read_all(child: Child) -> None:
    assert child.stdout is not None
    await child.stdout.read_all()


async def _send(child: Child) -> None:
    assert child.stdin is not None
    await child.stdin.send(b"x" * (4 << 20))


async def _wait_with_output(child: Child) -> None:
    await child.wait_with_output()


async def _sleep(child: Child) -> None:
    await anyio.sleep_forever()


OPERATIONS: dict[str, Callable[[Child], Awaitable[None]]] = {
    "wait": _wait,
    "receive": _receive,
    "lines": _lines,
    "read_all": _read_all,
    "send": _send,
    "wait_with_output": _wait_with_output,
    "body": _sleep,
}


async def test_cancellation_is_not_converted() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    cmd = Command("sleep", "100").stdin_piped().stdout_piped()
    for name, operation in OPERATIONS.items():
        with anyio.move_on_after(0.05) as scope:
            with pytest.raises(cancelled) as info:
                async with spawn(cmd) as child:
                    await operation(child)
            assert type(info.value) is cancelled, name
        assert scope.cancel_called, name
        assert child.returncode == -signal.SIGTERM, name


async def test_cancellation_of_run_to_completion_is_not_converted() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    cmd = Command("sleep", "100")
    runs: list[Callable[..., Coroutine[Any, Any, Any]]] = [cmd.output, cmd.status]
    started: list[Child] = []
    for number, run in enumerate(runs, 1):

        async def go(
            run: Callable[..., Coroutine[Any, Any, Any]] = run,
            *,
            task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
        ) -> None:
            with pytest.raises(cancelled) as info:
                async with anyio.create_task_group() as inner:
                    started.append(await inner.start(run))
                    task_status.started()
            assert type(info.value) is cancelled

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(go)
                tg.cancel_scope.cancel()
        assert len(started) == number
        child = started[-1]
        assert child.returncode == -signal.SIGTERM, run
        assert proc_state(child.pid) is None


# -- Ctrl-C and leaving anyio.run, in a fresh interpreter ---------------------------------------

HARNESS = """\
import signal
import sys
import anyio
from anyio_proc import Command, Stdio, spawn

# Started as a background job of a non-interactive shell, we inherit SIGINT ignored, and
# the test's Ctrl-C would do nothing: take the default back, as an interactive run has it.
signal.signal(signal.SIGINT, signal.default_int_handler)
mode, backend, use_uvloop, pid_file = sys.argv[1:5]
options = {"use_uvloop": True} if use_uvloop == "1" else {}
# Not on our stdout and stderr: those are the test's pipes, which a surviving sleep would
# hold open, so that reading them to the end never finishes.
SLEEP = Command("sleep", "100").stdout(Stdio.NULL).stderr(Stdio.NULL)


async def main():
    if mode == "drop":
        child = await spawn(SLEEP.kill_on_drop())
        with open(pid_file, "w") as f:
            f.write(str(child.pid))
        return  # leaving anyio.run with the child still running
    async with spawn(SLEEP) as child:
        with open(pid_file, "w") as f:
            f.write(str(child.pid))
        if mode == "raise":
            raise KeyboardInterrupt
        print("ready", flush=True)
        await anyio.sleep_forever()


anyio.run(main, backend=backend, backend_options=options)
"""

HARNESS_BACKENDS = {"asyncio": ("asyncio", "0"), "uvloop": ("asyncio", "1"), "trio": ("trio", "0")}


def _wait_until_idle_in_event_loop(pid: int) -> None:
    """Wait until the harness sleeps in epoll: a SIGINT landing between its print() and
    that point hits library code that is not KI-protected (trio raises KeyboardInterrupt
    there, between creating anyio's sleep coroutine and awaiting it, and Python then
    reports the coroutine as never awaited). There is no event for it: poll the kernel's
    view of where the main thread sleeps."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as f:
                if f.read() == "do_epoll_wait":
                    return
        except OSError:
            return  # no wchan here: send at once
        time.sleep(0.001)
    # Never seen asleep there (a kernel that hides wchan shows 0): send anyway.


def _run_harness(mode: str, backend_id: str, tmp_path: Path) -> tuple[int, str, int]:
    """Run the harness; return its returncode, its stderr and the pid of its child."""
    backend, use_uvloop = HARNESS_BACKENDS[backend_id]
    pid_file = tmp_path / "pid"
    argv = [sys.executable, "-X", "dev", "-c", HARNESS, mode, backend, use_uvloop, str(pid_file)]
    if mode != "drop":
        argv[1:1] = ["-W", "error"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if mode == "sigint":
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            _wait_until_idle_in_event_loop(proc.pid)
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            # Not communicate(): it reads to end-of-file, which never comes while anything
            # the harness started still holds the pipes. Killed, it exits at once.
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
    return proc.returncode, stderr.decode(errors="replace"), int(pid_file.read_text())


def _assert_gone(pid: int) -> None:
    # The harness has exited, so a child it left would have been reparented: not ours to
    # reap, and the leak fixture cannot see it. Kill a survivor, then fail.
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"pid {pid} survived the harness")


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("mode", ["raise", "sigint"])
@pytest.mark.parametrize("backend_id", list(HARNESS_BACKENDS))
def test_keyboard_interrupt_in_the_block(
    backend_id: str, mode: str, waiter: str, tmp_path: Path
) -> None:
    del waiter  # in force through the environment, which the harness inherits
    returncode, stderr, pid = _run_harness(mode, backend_id, tmp_path)
    try:
        if mode == "sigint" and backend_id != "trio" and sys.version_info < (3, 11):
            # asyncio before 3.11 (no asyncio.Runner) lets the loop's SIGINT handling
            # surface as CancelledError out of anyio.run(); the child must be gone anyway.
            assert "KeyboardInterrupt" in stderr or "CancelledError" in stderr, stderr
        else:
            assert "KeyboardInterrupt" in stderr
        assert returncode != 0
        assert "Exception ignored" not in stderr, stderr
        assert "Warning" not in stderr, stderr
    finally:
        _assert_gone(pid)


@pytest.mark.parametrize("backend_id", list(HARNESS_BACKENDS))
def test_leaving_anyio_run_with_a_kill_on_drop_child(backend_id: str, tmp_path: Path) -> None:
    returncode, stderr, pid = _run_harness("drop", backend_id, tmp_path)
    try:
        assert returncode == 0, stderr
        assert "Exception ignored" not in stderr, stderr
        assert "ResourceWarning" in stderr  # the drop is reported, not silent
    finally:
        _assert_gone(pid)
