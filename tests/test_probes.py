"""Hostile-user probes (issue 11, "Probe beyond this list").

Scenarios a hurried or hostile user runs into, beyond the ones the other test modules
cover: cancellation at many points of the run-to-completion helpers, ``SystemExit`` and
``GeneratorExit`` inside a block, callbacks that misbehave, fd exhaustion while shutting
down, children that close their pipes and keep running, ``fork()`` during a wait, huge
arguments, ``SIGCHLD`` ignored mid-run, odd programs and odd wiring, and, in fresh
interpreters, Ctrl-C while spawning and ``sys.exit()`` from a Supervisor callback. Each
asserts what README.md, docs/ and DESIGN.md promise: no zombie, no orphan, no leaked fd,
no data lost, and a clear exception. The autouse ``no_leaks`` fixture (conftest.py) checks
the first three after every test; the whole-program scenarios find what a harness left
behind by an environment marker its children inherit.
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from anyio_proc import Child, Command, ExitStatus, Stdio, run_process, spawn

from .helpers import alive, children, poll_until, proc_state, py

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the probes watch processes and fds through /proc"
)

# Deadlines that land at different awaits of a run: before the spawn, during it, while
# output flows, while waiting, and in the exit policy.
DEADLINES = (0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03)


def new_children(before: dict[int, str]) -> dict[int, str]:
    return {pid: state for pid, state in children().items() if pid not in before}


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def is_trio() -> bool:
    import sniffio

    return sniffio.current_async_library() == "trio"


# -- cancellation at many points of the run-to-completion helpers ---------------------------


async def test_wait_with_output_cancelled_at_many_points() -> None:
    # cat echoes a megabyte back while we feed it: the deadline lands while feeding,
    # draining or waiting. The block then stops and reaps cat; the cancellation stays one.
    before = children()
    data = b"x" * (1 << 20)
    for deadline in DEADLINES:
        got: list[Child] = []
        with anyio.move_on_after(deadline) as scope:
            async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
                got.append(child)
                out = await child.wait_with_output(data)
                assert out.stdout == data
        for child in got:
            if scope.cancelled_caught:
                assert child.returncode in (0, -signal.SIGTERM), deadline
            assert child.stdout is not None
            assert child.stdout.closed
        assert new_children(before) == {}


async def test_output_cancelled_at_many_points() -> None:
    before = children()
    cmd = Command("sh", "-c", "head -c 300000 /dev/zero; echo done >&2; exec sleep 100")
    for deadline in DEADLINES:
        with anyio.move_on_after(deadline) as scope:
            await cmd.output()
        assert scope.cancelled_caught, deadline
        assert new_children(before) == {}


async def test_status_cancelled_at_many_points() -> None:
    before = children()
    cmd = Command("sleep", "100")
    for deadline in DEADLINES:
        with anyio.move_on_after(deadline) as scope:
            await cmd.status()
        assert scope.cancelled_caught, deadline
        assert new_children(before) == {}


async def test_run_process_cancelled_at_many_points() -> None:
    before = children()
    argv = ["sh", "-c", "head -c 300000 /dev/zero; exec sleep 100"]
    for deadline in DEADLINES:
        with anyio.move_on_after(deadline) as scope:
            await run_process(argv, input=b"ignored")
        assert scope.cancelled_caught, deadline
        assert new_children(before) == {}


async def test_cancelled_from_another_task_when_the_child_prints_a_marker() -> None:
    # The cancel arrives exactly when the child reaches a point of its run, not at a
    # guessed time: a watcher task reads the marker and cancels the scope of the reader.
    script = (
        "import sys, time\nprint('marker', flush=True)\nsys.stdout.write('x' * 200000 + '\\n')\n"
    )
    script += "sys.stdout.flush()\ntime.sleep(100)\n"
    async with spawn(Command(*py(script)).stdout_piped()) as child:
        assert child.stdout is not None
        lines = child.stdout.lines()
        with anyio.CancelScope() as scope:
            assert await anext(lines) == "marker"
            scope.cancel()
            await child.wait()
        assert scope.cancelled_caught
        # Cancelled mid-way, the stream still has every byte after the marker.
        with anyio.fail_after(10):
            assert await anext(lines) == "x" * 200000
        assert child.returncode is None
    assert child.returncode == -signal.SIGTERM


async def test_native_cancellation_of_wait_receive_and_lines() -> None:
    # The event loop's own timeouts (asyncio.timeout / trio.move_on_after) rather than
    # anyio's: the child is untouched, and nothing read so far is lost.
    async def natively_timed_out(coro: Any) -> None:
        if is_trio():
            import trio

            with trio.move_on_after(0.05):
                await coro
            return
        import asyncio

        try:
            await asyncio.wait_for(coro, 0.05)
        except asyncio.TimeoutError:
            pass

    script = "import time\nprint('one', flush=True)\ntime.sleep(100)\n"
    async with spawn(Command(*py(script)).stdout_piped()) as child:
        assert child.stdout is not None
        lines = child.stdout.lines()
        assert await anext(lines) == "one"
        await natively_timed_out(child.wait())
        await natively_timed_out(child.stdout.receive())
        await natively_timed_out(anext(lines))
        assert child.try_wait() is None
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
        assert await child.stdout.read_all() == b""


# -- SystemExit and GeneratorExit inside a block -----------------------------------------------


async def test_system_exit_in_the_block() -> None:
    with pytest.raises(SystemExit) as info:
        async with spawn(Command("sleep", "100").stdout_piped()) as child:
            raise SystemExit(3)
    assert info.value.code == 3
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None


async def _lines_of_yes(count: int, pids: list[int]) -> AsyncGenerator[str, None]:
    async with spawn(Command("yes").stdout_piped()) as child:
        pids.append(child.pid)
        assert child.stdout is not None
        async for line in child.stdout.lines():
            yield line
            count -= 1
            if not count:
                return


async def test_async_generator_closed_early_stops_its_child() -> None:
    pids: list[int] = []
    gen = _lines_of_yes(1000, pids)
    assert await anext(gen) == "y"
    await gen.aclose()  # GeneratorExit at the yield, inside the block
    assert proc_state(pids[0]) is None


# trio's finaliser warns about the abandoned generator itself; that warning is not ours.
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_async_generator_dropped_unclosed_stops_its_child() -> None:
    # Abandoned after one item: the event loop's async-generator finaliser closes it
    # (asyncio's loop hooks, trio's system task), which runs the exit policy.
    pids: list[int] = []
    gen = _lines_of_yes(1000, pids)
    assert await anext(gen) == "y"
    del gen
    gc.collect()
    await poll_until(lambda: proc_state(pids[0]) is None)


# -- callbacks that misbehave -------------------------------------------------------------------


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


async def test_pre_exec_raising_a_base_exception_or_exiting() -> None:
    before = children()
    fds = len(os.listdir("/proc/self/fd"))
    cmd = Command("sleep", "100").stdin_piped().stdout_piped()
    with pytest.raises(subprocess.SubprocessError):
        await spawn(cmd.pre_exec(_raise_keyboard_interrupt))
    assert new_children(before) == {}
    assert len(os.listdir("/proc/self/fd")) == fds
    # A hook that ends the child before exec: the spawn "succeeds" with a dead child.
    async with spawn(cmd.pre_exec(lambda: os._exit(7))) as child:
        with anyio.fail_after(5):
            assert await child.wait() == 7


async def test_deliver_cancel_that_is_not_a_coroutine_function() -> None:
    # A hurried user passes a plain function: the process is killed and reaped all the
    # same, and the mistake is reported.
    killed: list[Child] = []

    def deliver(child: Child) -> None:
        killed.append(child)

    with pytest.raises(BaseException) as info:
        with anyio.move_on_after(0.2):
            await run_process(["sleep", "100"], deliver_cancel=deliver)  # type: ignore[arg-type]
    # As from trio's run_process: the callback's error, in the group of its task.
    assert [type(exc) for exc in leaves(info.value)] == [TypeError]
    assert killed
    assert proc_state(killed[0].pid) is None


# -- fd exhaustion while shutting down --------------------------------------------------------


class FullFdTable:
    """Fill every free fd slot (the rlimit is lowered first so that stays cheap), so
    whatever needs a new fd fails with EMFILE until the block ends."""

    def __init__(self) -> None:
        self._held: list[int] = []
        self._limits = resource.getrlimit(resource.RLIMIT_NOFILE)

    def __enter__(self) -> FullFdTable:
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 64, self._limits[1]))
        try:
            while True:
                self._held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for fd in self._held:
            os.close(fd)
        self._held.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, self._limits)


@pytest.mark.parametrize("reach", ["group", "tree"])
async def test_what_the_policy_reaches_is_stopped_when_the_fd_table_is_full(reach: str) -> None:
    # docs/security.md: "Resource exhaustion is an error, not a leak." With the fd table
    # full when the block ends, the exit policy must still reach "anything left in its
    # group" (here the leader has exited and a member runs on) and, with kill_tree, a
    # descendant that left the group (setsid), although /proc cannot be read (EMFILE).
    if reach == "group":
        script = "sleep 100 & echo $!; exit 0"
        cmd = Command("sh", "-c", script).process_group(0)
    else:
        script = "setsid sleep 100 & echo $!; exec sleep 100"
        cmd = Command("sh", "-c", script).kill_tree()
    async with spawn(cmd.stdout_piped()) as child:
        assert child.stdout is not None
        escaped = int(await anext(child.stdout.lines()))
        if reach == "group":
            with anyio.fail_after(5):
                assert await child.wait() == 0
        else:
            await poll_until(lambda: _comm(escaped) == "sleep")  # setsid has exec'd
        with FullFdTable():
            await child.aclose()
    try:
        await poll_until(lambda: not alive(escaped), timeout=1)
    finally:
        if alive(escaped):
            os.kill(escaped, signal.SIGKILL)


SLOW_TO_DIE = (
    "import signal, sys, time\n"
    "def term(*args):\n"
    "    time.sleep(0.2)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('up', flush=True)\n"
    "time.sleep(100)\n"
)


async def test_exit_policy_with_a_second_waiter_when_the_fd_table_is_full() -> None:
    # A task is already in wait() when the block ends; the policy's own wait must not
    # need a new fd: no EMFILE out of the block, and the grace period is honoured (the
    # child exits by itself, 0.2 s after SIGTERM, without SIGKILL).
    statuses: list[ExitStatus] = []

    async def watch(child: Child) -> None:
        statuses.append(await child.wait(close_stdin=False))

    with anyio.fail_after(10):
        async with (
            anyio.create_task_group() as tg,
            spawn(Command(*py(SLOW_TO_DIE)).stdout_piped()) as child,
        ):
            assert child.stdout is not None
            assert await anext(child.stdout.lines()) == "up"
            tg.start_soon(watch, child)
            await anyio.wait_all_tasks_blocked()
            with FullFdTable():
                await child.aclose()
    assert child.returncode == 0
    assert not child.escalated
    assert statuses == [0]


# -- children that close their pipes and keep running ----------------------------------------


async def test_child_closes_stdout_and_keeps_running() -> None:
    script = "import os, time\nos.write(1, b'a\\nb')\nos.close(1)\ntime.sleep(100)\n"
    async with spawn(Command(*py(script)).stdout_piped()) as child:
        assert child.stdout is not None
        with anyio.fail_after(10):
            assert [line async for line in child.stdout.lines()] == ["a", "b"]
            assert await child.stdout.read_all() == b""
        assert child.try_wait() is None
        with anyio.move_on_after(0.1) as scope:
            await child.wait()
        assert scope.cancelled_caught  # wait() is about the process, not the pipe
    assert child.returncode == -signal.SIGTERM


async def test_child_closes_stdin_and_keeps_running_while_we_send() -> None:
    script = "import os, time\nos.close(0)\nprint('closed', flush=True)\ntime.sleep(100)\n"
    async with spawn(Command(*py(script)).stdin_piped().stdout_piped()) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        assert await anext(child.stdout.lines()) == "closed"
        for _ in range(2):  # and again: still broken, not another error
            with pytest.raises(anyio.BrokenResourceError):
                await child.stdin.send(b"x" * 100_000)
        assert child.try_wait() is None
    assert child.returncode == -signal.SIGTERM


async def test_child_exits_while_we_are_blocked_sending() -> None:
    # Our send waits on a full pipe when the reader exits: it must wake with
    # BrokenResourceError, on every event loop (uvloop reports EPOLLERR differently).
    script = "import sys, time\nsys.stdin.buffer.read(1000)\ntime.sleep(0.2)\n"
    async with spawn(Command(*py(script)).stdin_piped()) as child:
        assert child.stdin is not None
        with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
            await child.stdin.send(b"x" * (8 << 20))
        assert await child.wait() == 0


# -- fork() during a wait ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "group", "tree"])
async def test_forked_copy_cannot_signal_the_parents_child(kind: str) -> None:
    # README: "A forked copy of the program never kills, reaps or waits for its parent's
    # children, whatever it does with the Child objects it inherited." Here the parent
    # is in wait() when it forks, and the copy signals the inherited Child.
    cmd = Command("sleep", "100")
    if kind == "group":
        cmd = cmd.process_group(0)
    elif kind == "tree":
        cmd = cmd.kill_tree()
    statuses: list[ExitStatus] = []
    async with spawn(cmd) as child:

        async def watch() -> None:
            statuses.append(await child.wait())

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.wait_all_tasks_blocked()
            with warnings.catch_warnings():
                # 3.12+: "use of fork() may lead to deadlocks" (the thread waiter's
                # threads); the copy only makes a few system calls before _exit.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the copy
                try:
                    child.kill()
                    child.terminate()
                    child.send_signal(signal.SIGINT)
                finally:
                    os._exit(0)
            _, raw = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(raw) == 0
            assert proc_state(child.pid) in ("S", "R"), "the copy signalled our child"
            assert child.try_wait() is None
            child.send_signal(signal.SIGUSR1)
    assert statuses == [-signal.SIGUSR1]


# -- huge arguments and environments -----------------------------------------------------------

# One string over MAX_ARG_STRLEN (32 pages), and argv + env over ARG_MAX in total.
HUGE_STRING = "x" * (200 * 1024)
ARG_MAX = os.sysconf("SC_ARG_MAX")
MANY_ARGS = ["y" * 1000] * (2 * ARG_MAX // 1000)


@pytest.mark.parametrize("path", ["posix_spawn", "fork"])
@pytest.mark.parametrize("what", ["env value", "argv total", "env total"])
async def test_e2big_names_the_program_and_leaks_nothing(path: str, what: str) -> None:
    before = children()
    cmd = Command("true")
    if what == "env value":
        cmd = cmd.env("HUGE", HUGE_STRING)
    elif what == "argv total":
        cmd = cmd.args(MANY_ARGS)
    else:
        cmd = cmd.envs({f"V{i}": "z" * 1000 for i in range(2 * ARG_MAX // 1000)})
    if path == "fork":
        cmd = cmd.current_dir("/")  # posix_spawn cannot chdir: Popen's fork path
    cmd = cmd.stdin_piped().stdout_piped().stderr_piped()
    with pytest.raises(OSError) as info:
        await spawn(cmd)
    assert info.value.errno == errno.E2BIG
    assert "true" in str(info.value)
    assert new_children(before) == {}


# -- the host program changes things under us ------------------------------------------------


async def test_sigchld_ignored_while_a_wait_is_pending() -> None:
    # Set to SIG_IGN after the spawn, while a task waits and another child runs on: the
    # kernel reaps the first child itself; wait() must return (status unknown, or known)
    # rather than hang until every child has exited.
    cmd = Command("sh", "-c", "read x; exit 3").stdin_piped()
    async with spawn(Command("sleep", "100")) as other, spawn(cmd) as child:
        assert child.stdin is not None
        statuses: list[ExitStatus] = []

        async def watch() -> None:
            statuses.append(await child.wait(close_stdin=False))

        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    await anyio.wait_all_tasks_blocked()
                    await child.stdin.send(b"go\n")
        finally:
            signal.signal(signal.SIGCHLD, previous)
        assert statuses[0] == 3 or not statuses[0].known
        assert other.try_wait() is None
    assert other.returncode == -signal.SIGTERM


async def test_child_that_execs_into_a_program_ignoring_sigterm() -> None:
    # SIG_IGN survives exec: the pid is the same process, now `sleep`, deaf to SIGTERM.
    script = (
        "import os, signal\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "os.execvp('sh', ['sh', '-c', 'echo exec; exec sleep 100'])\n"
    )
    cmd = Command(*py(script)).stdout_piped().shutdown(timeout=0.2)
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        async with spawn(cmd) as child:
            assert child.stdout is not None
            assert await anext(child.stdout.lines()) == "exec"
            await poll_until(lambda: _comm(child.pid) == "sleep")  # sh has exec'd too
    assert child.returncode == -signal.SIGKILL
    assert child.escalated


async def test_daemonised_grandchild_in_the_group_is_stopped() -> None:
    # A double fork (the subshell exits at once) re-parents `sleep` away from us, but it
    # stays in the group, so the exit policy reaches it.
    cmd = Command("sh", "-c", "(sleep 100 & echo $!); exec sleep 100")
    async with spawn(cmd.stdout_piped().process_group(0)) as child:
        assert child.stdout is not None
        daemon = int(await anext(child.stdout.lines()))
        await poll_until(lambda: _ppid(daemon) != child.pid)
    await poll_until(lambda: not alive(daemon), timeout=5)


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


# -- signals, waits and statuses racing each other -------------------------------------------


async def test_signals_to_an_exited_group_leader_are_no_ops() -> None:
    async with spawn(Command("true").process_group(0)) as child:
        with anyio.fail_after(5):
            assert await child.wait() == 0
        assert proc_state(child.pid) == "Z"  # kept, to pin the group number
        child.kill()
        child.terminate()
        child.send_signal(signal.SIGUSR1)
    child.kill()
    assert child.returncode == 0
    assert proc_state(child.pid) is None


async def test_two_waiters_and_a_killer() -> None:
    statuses: list[ExitStatus] = []
    async with spawn(Command("sleep", "100")) as child:

        async def watch() -> None:
            statuses.append(await child.wait())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                tg.start_soon(watch)
                await anyio.wait_all_tasks_blocked()
                child.kill()
    assert statuses == [-signal.SIGKILL, -signal.SIGKILL]
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("group", [False, True])
async def test_try_wait_in_a_tight_loop_while_the_child_exits(group: bool) -> None:
    cmd = Command("sh", "-c", "exit 5")
    if group:
        cmd = cmd.process_group(0)
    async with spawn(cmd) as child:
        deadline = time.monotonic() + 5
        polls = 0
        while (status := child.try_wait()) is None:
            polls += 1
            assert time.monotonic() < deadline
        assert status == 5
        assert child.try_wait() is status
        assert await child.wait() == 5
    assert child.returncode == 5
    assert proc_state(child.pid) is None


async def test_returncode_after_aclose() -> None:
    async with spawn(Command("true")) as done:
        await done.wait()
    async with spawn(Command("sleep", "100")) as stopped:
        pass
    killed = await spawn(Command("sleep", "100"))
    killed.kill()
    await killed.aclose()
    assert (done.returncode, stopped.returncode, killed.returncode) == (
        0,
        -signal.SIGTERM,
        -signal.SIGKILL,
    )
    for child in (done, stopped, killed):
        assert isinstance(child.returncode, int)
        assert not isinstance(child.returncode, bool)
        assert proc_state(child.pid) is None


# -- reuse and odd inputs ----------------------------------------------------------------------


async def test_one_command_for_100_concurrent_spawns() -> None:
    cmd = Command("cat").stdin_piped().stdout_piped()
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        async with spawn(cmd) as child:
            results[i] = (await child.wait_with_output(b"%d" % i)).stdout

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
    assert results == {i: b"%d" % i for i in range(100)}


async def test_the_same_pipe_stream_given_to_two_commands() -> None:
    before = children()
    async with spawn(Command("echo", "hi").stdout_piped()) as source:
        assert source.stdout is not None
        sink = Command("cat").stdin(source.stdout).stdout_piped()
        async with spawn(sink) as first:
            assert (await first.wait_with_output()).stdout == b"hi\n"
        # Our copy went to the first sink: a second one cannot have it.
        with pytest.raises((ValueError, anyio.ClosedResourceError)):
            await spawn(sink)
        assert set(new_children(before)) <= {source.pid}


async def test_async_with_on_an_already_closed_child() -> None:
    child = await spawn(Command("sleep", "100"))
    await child.aclose()
    async with child:
        pass
    await child.aclose()
    assert child.returncode == -signal.SIGTERM
    context = spawn(Command("true"))
    async with context as first:
        await first.wait()
    with pytest.raises(RuntimeError):
        async with context:
            pass
    assert first.returncode == 0


async def test_cwd_deleted_between_build_and_spawn(tmp_path: Path) -> None:
    before = children()
    gone = tmp_path / "gone"
    gone.mkdir()
    cmd = Command("true").current_dir(gone).stdin_piped().stdout_piped().stderr_piped()
    gone.rmdir()
    with pytest.raises(FileNotFoundError) as info:
        await spawn(cmd)
    assert "true" in str(info.value)
    assert new_children(before) == {}


async def test_unicode_bytes_and_pathlike_programs(tmp_path: Path) -> None:
    before = children()
    missing = b"/nonexistent/\xff\xfeprog"
    with pytest.raises(FileNotFoundError) as info:
        await spawn(Command(missing).stdout_piped())
    assert info.value.filename in (missing, os.fsdecode(missing))
    # A lone surrogate cannot be encoded for the OS: a ValueError, before anything runs.
    with pytest.raises(ValueError):
        await spawn(Command("echo", "\ud800").stdout_piped())
    script = tmp_path / "skript ü \N{SNOWMAN}.sh"
    script.write_text('#!/bin/sh\necho "$0"\n')
    script.chmod(0o755)
    for program in (script, os.fsencode(script), str(script)):
        out = await Command(program).output()
        assert out.stdout == os.fsencode(script) + b"\n"
    assert new_children(before) == {}


@pytest.mark.parametrize("mistake", ["busy", "handed on"])
async def test_wait_with_output_on_a_stream_in_use_raises_a_plain_error(mistake: str) -> None:
    # A stream another task is reading, or one already handed to another command: the
    # error that says so (BusyResourceError, ClosedResourceError), as receive() raises
    # it, rather than an ExceptionGroup of the helper's internal tasks; and the child is
    # still stopped by its block.
    expected: type[Exception]
    # It writes nothing: once its stdout has been handed on and that reader is gone, a
    # write would kill it with SIGPIPE before its block's SIGTERM.
    async with spawn(Command("sleep", "100").stdout_piped()) as child:
        assert child.stdout is not None
        async with anyio.create_task_group() as tg:
            if mistake == "busy":
                expected = anyio.BusyResourceError
                tg.start_soon(child.stdout.read_all)
                await anyio.wait_all_tasks_blocked()
            else:
                expected = anyio.ClosedResourceError
                async with spawn(Command("cat").stdin(child.stdout).stdout(Stdio.NULL)):
                    pass
            with pytest.raises(expected):
                await child.wait_with_output()
            tg.cancel_scope.cancel()
    assert child.returncode == -signal.SIGTERM


# -- whole programs: Ctrl-C while spawning, callbacks ending the program ------------------------

HARNESS_BACKENDS = {"asyncio": ("asyncio", {}), "uvloop": ("asyncio", {"use_uvloop": True})}
HARNESS_BACKENDS["trio"] = ("trio", {})
REPO = Path(__file__).resolve().parent.parent
MARKER = "ANYIO_PROC_PROBE"


def marked_processes(token: str) -> list[int]:
    """Live processes whose environment carries our marker with ``token``: whatever a
    harness left behind, wherever it was re-parented."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(name)):
            found.append(int(name))
    return found


def start_harness(script: str, backend_id: str, token: str, *args: str) -> subprocess.Popen[bytes]:
    backend, options = HARNESS_BACKENDS[backend_id]
    env = {**os.environ, MARKER: token, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-X", "dev", "-c", script, backend, repr(options), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def finish_harness(
    proc: subprocess.Popen[bytes], token: str, timeout: float, settle: float = 2.0
) -> tuple[str, list[int]]:
    """Wait for the harness (killing it past ``timeout``); its output (stdout, then
    stderr) and what it left, which is killed here, so that a failure leaves nothing
    running. What the harness stopped may take up to ``settle`` s to die."""
    try:
        out, err = proc.communicate(timeout=timeout)
        output = (out + err).decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        output = f"harness hung for {timeout:.1f} s"
        settle = 0  # what a hung harness left is not on its way out
    deadline = time.monotonic() + settle
    while (left := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()  # (once the leftovers, which may hold its pipes, are dead)
    return output, left


SPAWN_LOOP = """\
import ast, signal, sys
import anyio
from anyio_proc import Command, Stdio, spawn

signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C
cmd = Command("sleep", "100").stdin(Stdio.NULL).stdout(Stdio.NULL).stderr(Stdio.NULL)
cmd = cmd.shutdown(signal.SIGKILL)  # the shortest exit policy: most of the time is spawning


async def main():
    print("spawning", flush=True)
    while True:
        async with spawn(cmd):
            pass


anyio.run(main, backend=sys.argv[1], backend_options=ast.literal_eval(sys.argv[2]))
"""


def test_ctrl_c_while_spawning_never_orphans_a_child() -> None:
    # DESIGN: "a cancellation that lands during spawn never orphans a child". Ctrl-C is
    # sent at random moments of a loop that spends most of its time spawning; no child
    # may survive the program. (On trio, Ctrl-C raises KeyboardInterrupt wherever the
    # program is, in the middle of the spawn too: before the fix, 3 runs in 10 were left
    # with an orphan.) The backends run side by side, to keep the test short.
    import random

    rng = random.Random(11)
    for attempt in range(4):
        procs = {}
        for backend_id in HARNESS_BACKENDS:
            token = f"{os.getpid()}-{backend_id}-{attempt}"
            procs[backend_id] = (token, start_harness(SPAWN_LOOP, backend_id, token))
        for _, proc in procs.values():
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"spawning\n"
        time.sleep(rng.uniform(0.2, 0.4))
        for _, proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for backend_id, (token, proc) in procs.items():
            output, left = finish_harness(proc, token, timeout=20)
            assert "KeyboardInterrupt" in output or "CancelledError" in output, output
            assert left == [], f"{backend_id}, attempt {attempt}: orphaned {left}:\n{output}"


SUPERVISOR_EXIT = """\
import ast, sys
import anyio
from anyio_proc import Command, Stdio
from anyio_proc.services import Supervisor


def on_event(event):
    if event.kind == sys.argv[3]:
        sys.exit(5)  # a hurried user's way out of a callback


async def main():
    sleeper = Command("sleep", "100").stdin(Stdio.NULL).stdout(Stdio.NULL).stderr(Stdio.NULL)
    async with Supervisor(on_event=on_event) as sup:
        await sup.start("first", sleeper)
        await sup.start("second", sleeper)
    print("left the block", flush=True)


try:
    anyio.run(main, backend=sys.argv[1], backend_options=ast.literal_eval(sys.argv[2]))
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
    raise
"""


@pytest.mark.parametrize("kind", ["spawned", "stopping", "exited"])
def test_supervisor_callback_raising_system_exit(kind: str) -> None:
    # Supervisor: "an exception from one [callback] stops every service and is raised out
    # of the block". sys.exit() in a callback (or Ctrl-C landing in one, on trio) is a
    # BaseException: the program must still end, promptly, with every service stopped.
    procs = {}
    for backend_id in HARNESS_BACKENDS:  # all at once: a hang costs the timeout once
        token = f"{os.getpid()}-sup-{kind}-{backend_id}"
        procs[backend_id] = (token, start_harness(SUPERVISOR_EXIT, backend_id, token, kind))
    problems = []
    deadline = time.monotonic() + 5  # each one takes well under a second
    for backend_id, (token, proc) in procs.items():
        remaining = max(0.1, deadline - time.monotonic())
        stderr, left = finish_harness(proc, token, remaining, settle=remaining)
        if "hung" in stderr or left or "SystemExit" not in stderr:
            problems.append(f"{backend_id}: rc={proc.returncode} left={left} {stderr[-800:]}")
    assert problems == []


# -- more races and odd wiring -------------------------------------------------------------------


def test_one_child_waited_from_two_event_loops_in_two_threads() -> None:
    # A Child is not tied to a loop: trio in one thread and asyncio in another wait on it
    # at once (the second waiter shares the exit notification), a third thread kills it.
    statuses: list[int] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(3)

    async def start() -> Child:
        return await spawn(Command("sleep", "100"))

    async def wait_for(child: Child) -> None:
        async def signal_ready() -> None:
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(ready.wait, 10.0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(signal_ready)
            with anyio.fail_after(10):
                statuses.append(await child.wait())

    child = anyio.run(start, backend="trio")
    try:

        def run(backend: str, options: dict[str, Any]) -> None:
            try:
                anyio.run(wait_for, child, backend=backend, backend_options=options)
            except BaseException as exc:  # reported in the test's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=("trio", {})),
            threading.Thread(target=run, args=("asyncio", {"use_uvloop": True})),
        ]
        for thread in threads:
            thread.start()
        ready.wait(10.0)
        child.kill()
        for thread in threads:
            thread.join(20)
        assert errors == []
        assert statuses == [-signal.SIGKILL, -signal.SIGKILL]
    finally:
        anyio.run(child.aclose)
    assert proc_state(child.pid) is None


async def test_kill_from_another_task_during_the_grace_period() -> None:
    # The policy waits after SIGTERM (ignored); the user kills: the block ends at once,
    # without an escalation warning, since the policy did not need SIGKILL.
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    script += "print('up', flush=True)\ntime.sleep(100)\n"
    cmd = Command(*py(script)).stdout_piped().shutdown(timeout=30)
    started = time.monotonic()
    async with anyio.create_task_group() as tg, spawn(cmd) as child:
        assert child.stdout is not None
        assert await anext(child.stdout.lines()) == "up"

        async def kill_soon() -> None:
            await anyio.sleep(0.1)
            child.kill()

        tg.start_soon(kill_soon)
    assert time.monotonic() - started < 10
    assert child.returncode == -signal.SIGKILL


def _kill_from_a_plain_thread(child: Child) -> None:
    child.kill()


async def test_kill_from_a_plain_thread_wakes_the_wait() -> None:
    async with spawn(Command("sleep", "100")) as child:
        thread = threading.Timer(0.05, _kill_from_a_plain_thread, (child,))
        thread.start()
        try:
            with anyio.fail_after(5):
                assert await child.wait() == -signal.SIGKILL
        finally:
            thread.join()


async def test_pipeline_output_cancelled_at_many_points() -> None:
    before = children()
    pipeline = Command("sh", "-c", "head -c 300000 /dev/zero; exec sleep 100") | Command("cat")
    for deadline in DEADLINES:
        with anyio.move_on_after(deadline) as scope:
            await pipeline.output()
        assert scope.cancelled_caught, deadline
        assert new_children(before) == {}


async def test_decode_error_in_the_body_comes_out_unchanged() -> None:
    cmd = Command("sh", "-c", "printf 'ok\\n\\377\\n'; exec sleep 100").stdout_piped()
    with pytest.raises(UnicodeDecodeError):
        async with spawn(cmd) as child:
            assert child.stdout is not None
            async for _ in child.stdout.lines():
                pass
    assert child.returncode == -signal.SIGTERM


async def test_wait_with_output_twice() -> None:
    async with spawn(
        Command("sh", "-c", "echo out; echo err >&2").stdout_piped().stderr_piped()
    ) as child:
        first = await child.wait_with_output()
        second = await child.wait_with_output()
    assert (first.stdout, first.stderr, first.status) == (b"out\n", b"err\n", 0)
    assert (second.stdout, second.stderr, second.status) == (b"", b"", 0)


async def test_many_cancelled_waits_accumulate_nothing() -> None:
    # Each cancelled wait, first or extra (a dup of the exit fd), must give back what it
    # took; the thread waiter starts one thread per child, however often it is waited.
    async with spawn(Command("sleep", "100")) as child:
        for _ in range(100):
            with anyio.move_on_after(0):
                await child.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(child.wait)
                tg.start_soon(child.wait)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        threads = [t for t in threading.enumerate() if t.name.startswith("anyio_proc")]
        assert len(threads) <= 1
    assert child.returncode == -signal.SIGTERM


async def test_reading_after_the_block_is_a_clear_error() -> None:
    async with spawn(Command("echo", "lost").stdout_piped()) as child:
        await child.wait()
    assert child.stdout is not None
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdout.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdout.read_all()


async def test_one_childs_stdin_as_another_childs_stdout() -> None:
    # The write end of cat's stdin given as echo's stdout: echo writes straight to cat.
    async with spawn(Command("cat").stdin_piped().stdout_piped()) as cat:
        assert cat.stdin is not None
        assert cat.stdout is not None
        async with spawn(Command("echo", "through").stdout(cat.stdin)) as echo:
            assert await echo.wait() == 0
        assert cat.stdin.closed  # handed over: our copy is closed, so cat sees EOF
        with anyio.fail_after(5):
            assert await cat.stdout.read_all() == b"through\n"
            assert await cat.wait() == 0


async def test_a_failed_spawn_gives_the_handed_stream_back() -> None:
    async with spawn(Command("sh", "-c", "echo still here").stdout_piped()) as source:
        assert source.stdout is not None
        with pytest.raises(FileNotFoundError):
            await spawn(Command("/nonexistent/program").stdin(source.stdout))
        assert not source.stdout.closed
        with anyio.fail_after(5):
            assert await source.stdout.read_all() == b"still here\n"


async def test_stopped_child_at_block_exit_is_bounded() -> None:
    # A stopped process does not act on SIGTERM until continued; the policy must still
    # end within its bounds and reap it.
    cmd = Command("sleep", "100").shutdown(timeout=0.2)
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        async with spawn(cmd) as child:
            child.send_signal(signal.SIGSTOP)
            await poll_until(lambda: proc_state(child.pid) == "T")
    assert time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL


async def test_run_process_input_that_the_child_does_not_read() -> None:
    # subprocess.run(input=...), trio.run_process, anyio.run_process on asyncio and our own
    # wait_with_output() all treat a child that exits without reading its input as a
    # normal run: the result, not BrokenResourceError.
    result = await run_process(["true"], input=b"x" * (4 << 20))
    assert result.returncode == 0
    assert result.stdout == b""
    async with spawn(Command("true").stdin_piped().stdout_piped()) as child:
        output = await child.wait_with_output(b"x" * (4 << 20))
    assert output.status == 0


def _poll_returncode(child: Child, seen: list[object], stop: threading.Event) -> None:
    """A plain thread's view of ``child``: poll ``returncode`` until it is known."""
    try:
        while not stop.is_set():
            if (code := child.returncode) is not None:
                seen.append(code)
                seen.append(child.try_wait())
                return
    except BaseException as exc:  # reported by the test
        seen.append(exc)


async def test_returncode_read_from_another_thread_while_the_loop_waits() -> None:
    # A status display or watchdog thread polls `returncode` (as code written for
    # subprocess.Popen does: its poll() and wait() are safe across threads, bpo-21291)
    # while the event loop waits. Whoever reaps, both must see the real status: never
    # "reaped elsewhere", never an error from a pidfd the other side just closed.
    for _ in range(30):
        seen: list[object] = []
        stop = threading.Event()
        async with spawn(Command("sleep", "100")) as child:
            thread = threading.Thread(target=_poll_returncode, args=(child, seen, stop))
            thread.start()
            try:
                child.kill()
                status = await child.wait()
            finally:
                stop.set()
                thread.join()
        assert status == -signal.SIGKILL
        assert status.known
        for value in seen:
            assert value == -signal.SIGKILL, seen
            assert getattr(value, "known", True), seen
