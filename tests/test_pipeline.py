"""Pipelines (issue 7): ``Command | Command`` joined by OS pipes, all-or-nothing spawn,
pipefail status, shutdown of every stage, redirections.

Every async test runs on asyncio, uvloop and trio under each exit waiter; the autouse
``no_leaks`` fixture fails a test that leaves a process, an fd or a waiter thread behind.
"""

from __future__ import annotations

import os
import pickle
import signal
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest

import anyio_proc
from anyio_proc import (
    Child,
    Command,
    ExitStatus,
    Pipeline,
    PipelineChild,
    PipelineStatus,
    ProcessFailed,
    Stdio,
    spawn,
)

from .helpers import children, open_fds, proc_state, py

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MISSING = "anyio-proc-no-such-program"
# Prints "ready" once its SIGTERM handler is in place... and ignores SIGTERM.
IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(100)\n"
)


def exits(code: int) -> Command:
    return Command("sh", "-c", f"exit {code}")


def pipe_inode(pid: int, fd: int) -> str:
    """What fd ``fd`` of process ``pid`` points at (``pipe:[12345]``)."""
    return os.readlink(f"/proc/{pid}/fd/{fd}")


# -- building (no process) ---------------------------------------------------------------


def test_or_builds_an_immutable_pipeline() -> None:
    a, b, c = Command("a"), Command("b", "-x"), Command("c")
    ab = a | b
    abc = ab | c
    assert isinstance(ab, Pipeline)
    assert ab.commands == (a, b)
    assert abc.commands == (a, b, c)
    assert len(abc) == 3
    assert a | (b | c) == abc  # Command | Pipeline, and associativity
    assert (a | b) | (c | a) == Pipeline(a, b, c, a)
    assert hash(a | b) == hash(Pipeline(a, b))
    # Builder methods return new pipelines and leave the original alone.
    piped = abc.stdin_piped().stdout_piped().pipefail(False)
    assert abc.commands == (a, b, c)
    assert piped != abc
    assert piped.commands[0] == a.stdin_piped()
    assert piped.commands[-1] == c.stdout_piped()
    assert repr(ab) == "Command('a') | Command('b', '-x')"
    assert repr(Pipeline(a)) == "Pipeline(Command('a'))"
    assert "PipelineSpawnContext" not in anyio_proc.__all__  # SpawnContext[PipelineChild]
    for name in ("Pipeline", "PipelineChild", "PipelineStatus"):
        assert name in anyio_proc.__all__
        assert getattr(anyio_proc, name).__module__ == "anyio_proc"


def test_redirections_replace_the_end_settings() -> None:
    cmd = Command("a")
    assert Pipeline(cmd.stdin_piped()).stdin_file("x").commands[0] == cmd
    assert Pipeline(cmd.stdout_piped()).stdout_file("x").commands[0] == cmd
    # and setting the stream again drops the redirection
    assert Pipeline(cmd).stdin_bytes(b"x").stdin(Stdio.NULL) == Pipeline(cmd.stdin(Stdio.NULL))
    assert Pipeline(cmd).stdout_file("x").stdout(Stdio.NULL) == Pipeline(cmd.stdout(Stdio.NULL))


BAD_TYPES: list[Callable[[], object]] = [
    lambda: Command("a") | "b",  # type: ignore[operator]
    lambda: "a" | Command("b"),  # type: ignore[operator]
    lambda: Command("a") | ["b"],  # type: ignore[operator]
    lambda: Pipeline("a"),  # type: ignore[arg-type]
    lambda: Pipeline(Command("a")).stdin_bytes("text"),  # type: ignore[arg-type]
    lambda: Pipeline(Command("a")).stdout_file(3),  # type: ignore[arg-type]
    lambda: Pipeline(Command("a")).stderr("somewhere"),  # type: ignore[arg-type]
]

BAD_VALUES: list[Callable[[], object]] = [
    lambda: Pipeline(),
    # A stage's stdin/stdout where the pipeline joins it is a contradiction.
    lambda: Command("a").stdout_piped() | Command("b"),
    lambda: Command("a") | Command("b").stdin(Stdio.NULL),
    lambda: Pipeline(Command("a")).stdout_file("out") | Command("b"),
    lambda: Command("a") | Pipeline(Command("b")).stdin_bytes(b"x"),
    lambda: Command("a").pty() | Command("b"),
    lambda: Command("a") | Command("b").stderr(Stdio.PTY),
    lambda: (Command("a") | Command("b")).stdout(Stdio.PTY),
    lambda: (Command("a") | Command("b")).stdin(Stdio.PTY),
    lambda: (Command("a") | Command("b")).stderr(Stdio.PTY),
    lambda: Pipeline(Command("a")).stdout_file("a\0b"),
    lambda: Pipeline(Command("a")).stdin(Stdio.STDOUT),
    lambda: (
        Pipeline(Command("a")).stderr_file("x").stderr_file("y")
        | Pipeline(Command("b")).stderr_file("z")
    ),
]


def test_bad_input_raises_before_anything_runs() -> None:
    for index, build in enumerate(BAD_TYPES):
        with pytest.raises(TypeError):
            build()
            pytest.fail(f"BAD_TYPES[{index}] was accepted")
    for index, build in enumerate(BAD_VALUES):
        with pytest.raises(ValueError):
            build()
            pytest.fail(f"BAD_VALUES[{index}] was accepted")


def test_pipefail_rule() -> None:
    ok, one, two = ExitStatus(0), ExitStatus(1), ExitStatus(2)
    killed = ExitStatus(-signal.SIGPIPE)
    assert PipelineStatus([ok, ok]) == 0
    assert PipelineStatus([one, two, ok]) == 2  # the last failure
    assert PipelineStatus([two, one]) == 1
    assert PipelineStatus([killed, ok]).signal == signal.SIGPIPE
    assert PipelineStatus([one, two, ok], pipefail=False) == 0  # the last stage's
    assert PipelineStatus([ok, one], pipefail=False) == 1
    status = PipelineStatus([one, ok])
    assert status.statuses == (one, ok)
    assert not status.success
    assert "statuses=" in repr(status)
    assert repr(status).startswith("PipelineStatus(")
    with pytest.raises(ValueError):
        PipelineStatus([])

    status = PipelineStatus([ExitStatus(3, args=["a"]), ExitStatus(0, args=["b"])])
    copy = pickle.loads(pickle.dumps(status))
    assert isinstance(copy, PipelineStatus)
    assert copy == 3
    assert copy.args == ("a",)
    assert copy.statuses == status.statuses
    assert copy.pipefail


# -- running -------------------------------------------------------------------------------


async def test_output_of_a_three_stage_pipeline() -> None:
    pipeline = Command("printf", "b\\na\\nc\\n") | Command("sort") | Command("tr", "a-z", "A-Z")
    out = await pipeline.output()
    assert out.stdout == b"A\nB\nC\n"
    assert out.stderr == b""
    assert isinstance(out.status, PipelineStatus)
    assert out.status.success
    assert out.check() is out
    assert [int(s) for s in out.status.statuses] == [0, 0, 0]

    size = 32 << 20
    pipeline = Command("head", "-c", str(size), "/dev/zero") | Command("cat") | Command("wc", "-c")
    with anyio.fail_after(30):
        out = await pipeline.output()
    assert int(out.stdout) == size


async def test_stages_are_joined_kernel_to_kernel() -> None:
    """Each stage's stdout is the same pipe as the next stage's stdin, and the parent holds
    no end of it: there is no way for a byte to pass through Python."""
    pipeline = Command("sleep", "100") | Command("sleep", "100") | Command("sleep", "100")
    async with spawn(pipeline.stdin(Stdio.NULL).stdout(Stdio.NULL)) as running:
        ours = set(open_fds().values())
        first, middle, last = running.pids
        joints = [
            (pipe_inode(first, 1), pipe_inode(middle, 0)),
            (pipe_inode(middle, 1), pipe_inode(last, 0)),
        ]
        for writer, reader in joints:
            assert writer.startswith("pipe:")
            assert writer == reader
            assert writer not in ours
        assert running.stdin is None
        assert running.stdout is None
        assert running.stderr is None


async def test_stdin_and_stdout_are_the_ends() -> None:
    pipeline = (Command("cat") | Command("tr", "a-z", "A-Z")).stdin_piped().stdout_piped()
    async with spawn(pipeline) as running:
        assert isinstance(running, PipelineChild)
        assert running.stdin is not None
        assert running.stdout is not None
        assert isinstance(running, anyio.abc.Process)
        assert all(isinstance(c, Child) for c in running.children)
        assert running.stdin is running.children[0].stdin
        assert running.stdout is running.children[-1].stdout
        assert running.pid == running.children[-1].pid
        assert running.returncode is None
        assert running.try_wait() is None
        assert "running" in repr(running)
        await running.stdin.send(b"hello\nworld\n")
        with anyio.fail_after(10):
            # wait() closes the first stdin, so cat sees end-of-file, and tr after it.
            status = await running.wait()
            assert [line async for line in running.stdout.lines()] == ["HELLO", "WORLD"]
        with pytest.raises(anyio.BrokenResourceError):
            await running.stdin.send(b"late")
    assert status == 0
    assert running.returncode == 0


async def test_wait_with_output_feeds_and_drains() -> None:
    data = b"".join(b"line %d\n" % i for i in range(20000))  # far more than a pipe holds
    pipeline = (Command("cat") | Command("cat") | Command("wc", "-l")).stdin_piped().stdout_piped()
    async with spawn(pipeline) as running:
        with anyio.fail_after(20):
            out = await running.wait_with_output(data)
    assert int(out.stdout) == 20000
    assert out.status.success
    async with spawn(Command("true") | Command("true")) as running:
        with pytest.raises(ValueError, match="not piped"):
            await running.wait_with_output(b"x")


async def test_awaited_or_started_pipeline_belongs_to_the_caller() -> None:
    running = await spawn(Command("sleep", "100") | Command("sleep", "100"))
    try:
        assert all(proc_state(pid) not in (None, "Z") for pid in running.pids)
    finally:
        await running.aclose()
    assert [c.returncode for c in running.children] == [-signal.SIGTERM] * 2
    await running.aclose()  # a second close does nothing

    pipeline = Command("sleep", "100") | Command("sleep", "100")
    async with anyio.create_task_group() as tg:
        started = await tg.start(pipeline.status)
        assert isinstance(started, PipelineChild)
        started.terminate()
    assert started.try_wait() is not None


# -- exit status ---------------------------------------------------------------------------


async def test_status_follows_pipefail() -> None:
    status = await (exits(3) | exits(4) | exits(0)).status()
    assert status == 4
    assert [int(s) for s in status.statuses] == [3, 4, 0]
    assert status.args == ("sh", "-c", "exit 4")  # the stage whose status it is

    status = await (exits(3) | exits(4) | exits(0)).pipefail(False).status()
    assert status == 0
    assert status.success
    assert [int(s) for s in status.statuses] == [3, 4, 0]

    out = await (exits(0) | Command("sh", "-c", "echo oops >&2; exit 5") | Command("cat")).output()
    assert out.stderr == b"oops\n"
    with pytest.raises(ProcessFailed) as info:
        out.check()
    assert info.value.returncode == 5
    assert "exit 5" in str(info.value)
    assert "oops" in str(info.value)


async def test_an_early_exit_downstream_kills_upstream_with_sigpipe() -> None:
    # The shell rule hides it; pipefail shows it, as in bash.
    pipeline = (Command("yes") | Command("head", "-n", "1")).stdout(Stdio.NULL)
    with anyio.fail_after(10):
        status = await pipeline.status()
    assert status.signal == signal.SIGPIPE
    assert status.statuses[0].signal == signal.SIGPIPE
    assert status.statuses[1] == 0
    with anyio.fail_after(10):
        assert await pipeline.pipefail(False).status() == 0


# -- lifetime ------------------------------------------------------------------------------


async def test_leaving_the_block_shuts_every_stage_down() -> None:
    pipeline = Command("sleep", "100") | Command("sleep", "100") | Command("sleep", "100")
    async with spawn(pipeline) as running:
        pids = running.pids
        assert len(set(pids)) == 3
    assert [c.returncode for c in running.children] == [-signal.SIGTERM] * 3
    assert running.returncode == -signal.SIGTERM
    assert "exited" in repr(running)
    assert all(proc_state(pid) is None for pid in pids)  # reaped

    async with spawn(Command("sleep", "100") | Command("sleep", "100")) as running:
        running.kill()
        with anyio.fail_after(10):
            status = await running.wait()
        assert [s.signal for s in status.statuses] == [signal.SIGKILL] * 2
    async with spawn(Command("sleep", "100") | Command("sleep", "100")) as running:
        running.send_signal(signal.SIGUSR1)
        with anyio.fail_after(10):
            status = await running.wait()
        assert [s.signal for s in status.statuses] == [signal.SIGUSR1] * 2


async def test_each_stage_gets_its_own_exit_policy() -> None:
    pipeline = (
        Command("sleep", "100").shutdown(signal.SIGINT)
        | Command(*py(IGNORES_SIGTERM)).shutdown(timeout=0.2)
        | Command("cat")
    ).stdout_piped()
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        async with spawn(pipeline) as running:
            assert running.stdout is not None
            with anyio.fail_after(10):
                assert await anext(running.stdout.lines()) == "ready"
    statuses = [c.returncode for c in running.children]
    # cat may see end-of-file (the writer was killed) before its own SIGTERM arrives.
    assert statuses[:2] == [-signal.SIGINT, -signal.SIGKILL]
    assert statuses[2] in (0, -signal.SIGTERM)


async def test_cancellation_shuts_everything_down_and_propagates() -> None:
    async with spawn(Command("sleep", "100") | Command("sleep", "100")) as running:
        with anyio.move_on_after(0.05):
            await running.wait()
        assert running.try_wait() is None  # a cancelled wait leaves it running

    pipeline = (Command("sleep", "100") | Command("cat") | Command("cat")).stdout_piped()
    with anyio.CancelScope() as scope:
        async with spawn(pipeline) as running:
            scope.cancel()
            await running.wait()
        pytest.fail("the cancellation did not propagate")  # pragma: no cover
    assert scope.cancelled_caught
    assert running.children[0].returncode == -signal.SIGTERM
    assert all(c.try_wait() is not None for c in running.children)


# -- spawning: all or nothing ------------------------------------------------------------


async def test_a_stage_that_cannot_start_leaves_nothing_behind() -> None:
    fds = open_fds()
    kids = children()
    for where in range(3):
        stages = [Command("sleep", "100") for _ in range(3)]
        stages[where] = Command(MISSING)
        pipeline = Pipeline(*stages).stdin_piped().stdout_piped().stderr_piped()
        with pytest.raises(FileNotFoundError, match=MISSING):
            async with spawn(pipeline):
                pytest.fail("the block ran although spawning failed")  # pragma: no cover
        with pytest.raises(FileNotFoundError):
            await spawn(pipeline)
        assert children() == kids
        assert open_fds() == fds


async def test_a_bad_redirection_fails_before_any_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyio_proc._spawn import start_child
    from anyio_proc._spec import Spec

    started: list[Spec] = []

    def counting(spec: Spec) -> Child:
        started.append(spec)
        return start_child(spec)

    monkeypatch.setattr("anyio_proc._pipeline_run.start_child", counting)
    base = Command("sleep", "100") | Command("sleep", "100")
    with pytest.raises(FileNotFoundError):
        await spawn(base.stdout_file(tmp_path / "missing-dir" / "out"))
    with pytest.raises(FileNotFoundError):
        await spawn(base.stdin_file(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        await spawn(base.stderr_file(tmp_path / "missing-dir" / "err"))
    assert started == []
    # A closed fd is only found when its stage starts: the first one ran, and was undone.
    with pytest.raises(ValueError, match="not open"):
        await spawn(base.stdout(987))
    assert len(started) == 2


# -- redirections --------------------------------------------------------------------------


async def test_file_and_bytes_redirections(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old contents\n")
    pipeline = Command("echo", "one") | Command("tr", "a-z", "A-Z")
    assert (await pipeline.stdout_file(target).status()).success
    assert target.read_bytes() == b"ONE\n"
    assert (await pipeline.stdout_file(target, append=True).status()).success
    assert target.read_bytes() == b"ONE\nONE\n"
    fresh = tmp_path / "fresh.txt"
    assert (await pipeline.stdout_file(os.fsencode(fresh)).status()).success
    assert fresh.read_bytes() == b"ONE\n"

    source = tmp_path / "in.txt"
    source.write_bytes(b"b\na\n")
    out = await (Command("sort") | Command("cat")).stdin_file(source).output()
    assert out.stdout == b"a\nb\n"

    data = os.urandom(1 << 20)  # larger than a pipe holds
    out = await (Command("cat") | Command("wc", "-c")).stdin_bytes(data).output()
    assert int(out.stdout) == len(data)
    single = await Pipeline(Command("cat")).stdin_bytes(bytearray(b"here\n")).output()
    assert single.stdout == b"here\n"


async def test_stderr_shared_or_per_stage(tmp_path: Path) -> None:
    pipeline = Command("sh", "-c", "echo first >&2; echo data") | Command(
        "sh", "-c", "cat >/dev/null; echo second >&2"
    )
    async with spawn(pipeline.stderr_piped().stdout(Stdio.NULL)) as running:
        assert running.stderr is not None
        with anyio.fail_after(10):
            text = await running.stderr.read_all()
            await running.wait()
    assert sorted(text.splitlines()) == [b"first", b"second"]

    log = tmp_path / "err.log"
    assert (await pipeline.stderr_file(log).stdout(Stdio.NULL).status()).success
    assert sorted(log.read_bytes().splitlines()) == [b"first", b"second"]

    # 2>&1 on every stage: stderr goes down the pipe with stdout.
    out = await (Command("sh", "-c", "echo err >&2") | Command("cat")).stderr(Stdio.STDOUT).output()
    assert out.stdout == b"err\n"

    # A stage that sets its own stderr keeps it.
    own_first = (
        Command("sh", "-c", "echo mine >&2; echo data").stderr_piped() | Command("cat")
    ).stderr_piped()
    async with spawn(own_first.stdout(Stdio.NULL)) as running:
        own = running.children[0].stderr
        assert own is not None
        assert running.stderr is not None
        with anyio.fail_after(10):
            assert await own.read_all() == b"mine\n"
            assert await running.stderr.read_all() == b""
            await running.wait()


async def test_stage_options_and_a_childs_stream_as_stdin(tmp_path: Path) -> None:
    pipeline = Command("sh", "-c", "echo $WHERE; pwd").env("WHERE", "here").current_dir(
        tmp_path
    ) | Command("cat")
    out = await pipeline.output()
    assert out.stdout.decode().splitlines() == ["here", os.fspath(tmp_path)]

    async with spawn(Command("echo", "chained").stdout_piped()) as producer:
        assert producer.stdout is not None
        pipeline = (Command("cat") | Command("tr", "a-z", "A-Z")).stdin(producer.stdout)
        out = await pipeline.output()
        assert out.stdout == b"CHAINED\n"
        assert producer.stdout.closed  # handed over to the first stage
        await producer.wait()


def test_spawn_outside_an_event_loop() -> None:
    with pytest.raises(RuntimeError):
        spawn(Command("a") | Command("b"))


@pytest.mark.parametrize("stages", [1, 2, 3])
async def test_stderr_into_another_childs_stdin(stages: int) -> None:
    # Every stage writes to the stream: it is handed over once, after the last spawn, and
    # an earlier stage's spawn must not close it under the later ones.
    stage = Command("sh", "-c", "cat; echo $0 >&2")
    pipeline = Pipeline(*[stage.arg(f"stage{i}") for i in range(stages)])
    async with spawn(Command("cat").stdin_piped().stdout_piped()) as sink:
        assert sink.stdin is not None
        assert sink.stdout is not None
        out = await pipeline.stdin_bytes(b"data\n").stderr(sink.stdin).output()
        assert out.stdout == b"data\n"
        assert sink.stdin.closed  # handed over: the stages hold the write end now
        with anyio.fail_after(10):
            collected = await sink.stdout.read_all()
        assert sorted(collected.split()) == [f"stage{i}".encode() for i in range(stages)]
