"""The exit policy's promises: every aclose() returns with the child gone, escalations are
reported at the user's line, dropped children are reaped whatever the event loop did to
their fds, and nothing is printed at interpreter exit.

The interrupt cases (Ctrl-C, native asyncio cancellation inside the policy) run in
subprocesses: see test_interrupts.py.
"""

from __future__ import annotations

import gc
import os
import subprocess
import textwrap
from functools import partial

import anyio
import pytest

from anyio_proc import Child, Command, PipelineChild, open_process, spawn

from .helpers import PY, alive, join_our_threads, poll_until, proc_state, py


# A child that takes a moment to die of SIGTERM, and says when the signal arrived, so a
# second closer surely arrives while the first is inside the grace period.
def slow_term(report_to: str = "stdout") -> list[str]:
    return py(
        "import signal, sys, time\n"
        "def on_term(*_):\n"
        f"    print('term', file=sys.{report_to}, flush=True); time.sleep(0.3); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(1)\n"
    )


SLOW_TERM = slow_term()


async def _read_line(child: Child | PipelineChild) -> str:
    assert child.stdout is not None
    async for line in child.stdout.lines():
        return line
    raise AssertionError("no line")


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "group"])
async def test_concurrent_aclose_returns_only_once_the_child_is_reaped(grouped: bool) -> None:
    cmd = Command(*SLOW_TERM).stdout_piped()
    if grouped:
        cmd = cmd.process_group(0)
    async with anyio.create_task_group() as tg:
        async with spawn(cmd) as child:
            with anyio.fail_after(10):
                assert await _read_line(child) == "up"
                tg.start_soon(child.aclose)  # a watchdog closing it meanwhile
                assert await _read_line(child) == "term"
        # The block's own aclose() waited for the watchdog's: gone and reaped.
        assert child.returncode == 3
        assert proc_state(child.pid) is None


async def test_concurrent_aclose_of_a_pipeline() -> None:
    # The last stage (cat) dies at once, and its stdout with it: "term" comes on stderr.
    pipeline = (Command(*slow_term("stderr")) | Command("cat")).stdout_piped().stderr_piped()
    async with anyio.create_task_group() as tg:
        async with spawn(pipeline) as running:
            assert running.stderr is not None
            with anyio.fail_after(10):
                assert await _read_line(running) == "up"
                tg.start_soon(running.aclose)
                assert (await running.stderr.receive()).startswith(b"term")
        assert [child.returncode for child in running.children] == [3, -15]
        assert all(proc_state(pid) is None for pid in running.pids)


async def _close_first(child: Child, started: anyio.Event) -> None:
    started.set()  # no checkpoint between this and the policy's start
    await child.aclose()


async def test_concurrent_aclose_of_an_open_process_child() -> None:
    # anyio's policy: the first aclose() waits for the natural exit; so must the second.
    # It outlives its stdin by a moment, so the second aclose() surely finds it running.
    child = await open_process(py("import sys, time; sys.stdin.read(); time.sleep(0.3)"))
    assert isinstance(child, Child)
    async with anyio.create_task_group() as tg:
        started = anyio.Event()
        tg.start_soon(_close_first, child, started)
        await started.wait()
        with anyio.fail_after(10):
            await child.aclose()
            assert child.returncode == 0
    assert proc_state(child.pid) is None


async def test_cancelled_second_aclose_of_an_open_process_child_kills_it() -> None:
    child = await open_process(py("import time; time.sleep(100)"))
    assert isinstance(child, Child)
    async with anyio.create_task_group() as tg:
        started = anyio.Event()
        tg.start_soon(_close_first, child, started)  # waits for an exit that never comes
        await started.wait()
        with anyio.fail_after(10), anyio.move_on_after(0.2) as scope:
            await child.aclose()
        assert scope.cancelled_caught
        # Killed by the cancelled closer, reaped by the first: both have returned.
        assert child.returncode == -9
    assert proc_state(child.pid) is None


async def test_escalation_warns_at_the_users_line_and_sets_escalated() -> None:
    cmd = Command("sh", "-c", "trap '' TERM; echo up; sleep 60").stdout_piped()
    async with spawn(cmd.shutdown(timeout=0.2)) as child:
        with anyio.fail_after(5):
            assert await _read_line(child) == "up"
        assert not child.escalated
        with pytest.warns(
            RuntimeWarning, match=r"was still running 0\.2 s after SIGTERM"
        ) as record:
            await child.aclose()
    assert child.escalated
    assert child.returncode == -9
    assert record[0].filename == __file__


async def test_escalation_in_a_group_member_is_reported() -> None:
    # The leader dies of SIGTERM at once, but a member of its group ignores it: the status
    # says SIGTERM, and only `escalated` tells that SIGKILL was needed.
    member = "trap '' TERM; echo up; sleep 60"
    cmd = Command("sh", "-c", f'sh -c "{member}" & wait').stdout_piped().process_group(0)
    async with spawn(cmd.shutdown(timeout=0.2)) as child:
        with anyio.fail_after(5):
            assert await _read_line(child) == "up"
        # The warning says that the child itself had gone.
        with pytest.warns(RuntimeWarning, match="had exited, but what it started") as record:
            await child.aclose()
    assert child.escalated
    assert child.returncode == -15
    assert record[0].filename == __file__


async def test_pipeline_escalation_warns_once_at_the_users_line() -> None:
    stage = Command("sh", "-c", "trap '' TERM; echo up; sleep 60").shutdown(timeout=0.2)
    pipeline = stage | stage.stdout_piped()
    with pytest.warns(RuntimeWarning) as record:
        async with spawn(pipeline) as running:
            with anyio.fail_after(5):
                assert await _read_line(running) == "up"
    assert len(record) == 1
    assert record[0].filename == __file__
    assert running.escalated


async def test_wait_without_closing_stdin() -> None:
    async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(child.wait, close_stdin=False))  # as a watcher would
            await child.stdin.send(b"still open\n")
            with anyio.fail_after(5):
                assert await child.stdout.receive() == b"still open\n"
            await child.stdin.aclose()
        assert await child.wait() == 0


async def _wait_briefly(child: Child) -> None:
    with anyio.move_on_after(0.05):
        await child.wait()


async def test_dropped_child_after_a_cancelled_wait_is_reaped() -> None:
    # The cancelled wait made the event loop watch the pidfd (libuv switches such fds to
    # O_NONBLOCK, and a blocking waitid on it then fails with EAGAIN in the reaper thread).
    read_fd, write_fd = os.pipe()
    try:
        child = await spawn(Command("cat").stdin(read_fd))
    finally:
        os.close(read_fd)
    pid = child.pid
    try:
        # In a task of its own: the cancelled wait's traceback then dies with the task
        # instead of keeping the Child alive from this frame.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_wait_briefly, child)
        with pytest.warns(ResourceWarning):
            del child
            gc.collect()
        assert alive(pid)
    finally:
        os.close(write_fd)  # cat sees EOF and exits: the reaper thread reaps it
    await poll_until(lambda: proc_state(pid) is None)
    assert join_our_threads(timeout=5) == []


def _run_script(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-c", code, *args], capture_output=True, text=True, timeout=30, check=False
    )


def _kill_if_alive(pid: int) -> None:
    """Clean up after a failed check: the process is not ours to reap, only to stop."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


_EXIT_WITH_A_CHILD = """
import sys, anyio
from anyio_proc import Command, Stdio, spawn

kept = []

async def main() -> None:
    # No stdio of ours: one left running must not hold the test's pipes open.
    quiet = Command("sleep", "60").stdout(Stdio.NULL).stderr(Stdio.NULL)
    child = await spawn(quiet.kill_on_drop(sys.argv[2] == "kill"))
    print(child.pid, flush=True)
    kept.append(child)
    kept.append(kept)  # a cycle: collected only by the last collection at exit

anyio.run(main, backend=sys.argv[1])
"""


@pytest.mark.parametrize("kill_on_drop", [True, False], ids=["kill_on_drop", "plain"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_exiting_with_a_child_running_prints_no_traceback(backend: str, kill_on_drop: bool) -> None:
    # Default warning filters, as a user runs a script: the ResourceWarning is not shown,
    # and the Child collected during shutdown must not print a traceback either.
    result = _run_script(_EXIT_WITH_A_CHILD, backend, "kill" if kill_on_drop else "keep")
    pid = int(result.stdout)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        # kill_on_drop holds at exit; without it the child is left running, as documented.
        assert alive(pid) is not kill_on_drop
    finally:
        _kill_if_alive(pid)


_FORKED_WORKER = """
import os, sys, anyio
from anyio_proc import Command, spawn

kept = []

async def start() -> int:
    child = await spawn(Command("sleep", "60").kill_on_drop())
    kept.append(child)
    return child.pid

worker = os.fork()
if worker == 0:
    print(anyio.run(start, backend=sys.argv[1]), flush=True)
    sys.exit(0)  # a normal exit: the exit hook runs in the worker too
_, status = os.waitpid(worker, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_forked_workers_kill_on_drop_children_die_with_it(backend: str) -> None:
    result = _run_script(textwrap.dedent(_FORKED_WORKER), backend)
    pid = int(result.stdout)
    try:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert not alive(pid)
    finally:
        _kill_if_alive(pid)
