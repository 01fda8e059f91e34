"""run_process / open_process: anyio's parameters and behaviour, with our guarantees."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

import anyio_proc
from anyio_proc import Child, ProcessFailed, open_process, run_process

from .helpers import alive, group_gone, group_members, py

# A child that reports SIGTERM on stdout and exits 0, once its handler is in place.
HANDLES_TERM = py(
    "import signal, sys\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "while True: signal.pause()\n"
)
IGNORES_TERM = py(
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


async def read_line(child: Child) -> str:
    assert child.stdout is not None
    with anyio.fail_after(10):
        async for line in child.stdout.lines():
            return line
    raise AssertionError("child closed stdout before printing a line")


class ReadyPipe:
    """A pipe for a run_process child to report readiness on, since run_process itself
    drains the child's stdout and stderr."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    async def line(self) -> bytes:
        data = b""
        with anyio.fail_after(10):
            while not data.endswith(b"\n"):
                await anyio.wait_readable(self.read_fd)
                data += os.read(self.read_fd, 100)
        return data

    def close(self) -> None:
        anyio.notify_closing(self.read_fd)
        os.close(self.read_fd)
        os.close(self.write_fd)


async def start_run_process(
    tg: anyio.abc.TaskGroup, command: list[str], **kwargs: Any
) -> tuple[Child, ReadyPipe]:
    """run_process in ``tg``, its stdout going to a pipe we read; waits for 'ready'."""
    ready = ReadyPipe()

    async def runner(*, task_status: anyio.abc.TaskStatus[Child]) -> None:
        await run_process(command, stdout=ready.write_fd, task_status=task_status, **kwargs)

    child: Child = await tg.start(runner)
    assert await ready.line() == b"ready\n"
    return child, ready


async def test_signature_matches_anyio() -> None:
    import inspect

    ours = inspect.signature(run_process).parameters
    theirs = inspect.signature(anyio.run_process).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    assert [p.default for p in list(ours.values())[: len(theirs)]] == [
        p.default for p in theirs.values()
    ]
    assert list(ours)[len(theirs) :] == ["task_status", "deliver_cancel"]
    ours_open = inspect.signature(open_process).parameters
    theirs_open = inspect.signature(anyio.open_process).parameters
    assert list(ours_open) == list(theirs_open)
    assert [p.default for p in ours_open.values()] == [p.default for p in theirs_open.values()]


@pytest.mark.parametrize(
    "command",
    [
        "echo out; echo err >&2",
        ["sh", "-c", "echo out; echo err >&2"],
        ("sh", "-c", "echo out; echo err >&2"),
    ],
)
async def test_same_result_as_anyio(command: Any) -> None:
    ours = await run_process(command)
    theirs = await anyio.run_process(command)
    assert (ours.args, ours.returncode, ours.stdout, ours.stderr) == (
        theirs.args,
        theirs.returncode,
        theirs.stdout,
        theirs.stderr,
    )
    assert ours.stdout == b"out\n"
    assert ours.stderr == b"err\n"
    assert type(ours.returncode) is int


async def test_str_goes_to_the_shell_and_a_sequence_does_not() -> None:
    assert (await run_process("echo $((6 * 7))")).stdout == b"42\n"
    literal = await run_process(["echo", "$((6 * 7)); rm -rf /nonexistent"])
    assert literal.stdout == b"$((6 * 7)); rm -rf /nonexistent\n"


async def test_input_is_fed_and_stdin_closed() -> None:
    data = os.urandom(300_000)
    result = await run_process(["cat"], input=data)
    assert result.stdout == data


async def test_input_and_stdin_are_exclusive() -> None:
    with pytest.raises(ValueError, match="only one of stdin and input"):
        await run_process(["cat"], input=b"x", stdin=subprocess.DEVNULL)


async def test_check_raises_with_captured_output() -> None:
    with pytest.raises(ProcessFailed) as info:
        await run_process("echo partial; echo 'it broke' >&2; exit 3")
    exc = info.value
    assert isinstance(exc, subprocess.CalledProcessError)
    assert exc.returncode == 3
    assert exc.cmd == "echo partial; echo 'it broke' >&2; exit 3"
    assert exc.stdout == b"partial\n"
    assert exc.stderr == b"it broke\n"
    assert str(exc).rstrip().endswith("it broke")


async def test_check_false_returns_the_failure() -> None:
    result = await run_process(["sh", "-c", "exit 4"], check=False)
    assert result.returncode == 4


async def test_cwd_and_env(tmp_path: Path) -> None:
    result = await run_process(
        py(
            "import os; print(os.getcwd()); print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"
        ),
        cwd=tmp_path,
        env={"ONLY_THIS": "1"},
    )
    cwd, env = result.stdout.decode().splitlines()
    assert Path(cwd) == tmp_path
    assert env == "['ONLY_THIS']"  # env replaces the environment; nothing inherited


async def test_start_new_session() -> None:
    result = await run_process(py("import os; print(os.getsid(0))"), start_new_session=True)
    sid = int(result.stdout)
    assert sid != os.getsid(0)
    plain = await run_process(py("import os; print(os.getsid(0))"))
    assert int(plain.stdout) == os.getsid(0)


async def test_stdio_to_and_from_files(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"from a file\n")
    target = tmp_path / "out.txt"
    with source.open("rb") as fin, target.open("wb") as fout:
        result = await run_process(["cat"], stdin=fin, stdout=fout)
    assert result.stdout is None
    assert target.read_bytes() == b"from a file\n"


async def test_devnull_and_stderr_to_stdout() -> None:
    result = await run_process(
        "echo out; echo err >&2", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert sorted(result.stdout.splitlines()) == [b"err", b"out"]
    assert result.stderr is None
    quiet = await run_process("echo out", stdout=subprocess.DEVNULL)
    assert quiet.stdout is None


async def test_inherited_stdio_reaches_our_fds(capfd: pytest.CaptureFixture[str]) -> None:
    await run_process("echo to-our-stdout; echo to-our-stderr >&2", stdout=None, stderr=None)
    captured = capfd.readouterr()
    assert captured.out == "to-our-stdout\n"
    assert captured.err == "to-our-stderr\n"


async def test_user_group_by_name_and_umask() -> None:
    nobody = pwd.getpwnam("nobody")
    # /bin/sh rather than our interpreter, which may live where 'nobody' cannot read.
    result = await run_process(
        ["sh", "-c", "id -u; id -g; id -G; umask"],
        user="nobody",
        group=nobody.pw_gid,
        extra_groups=[nobody.pw_gid],
        umask=0o027,
    )
    uid, gid, groups, umask = result.stdout.decode().split()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert groups == str(nobody.pw_gid)
    assert umask == "0027"


async def test_unknown_user_name_raises_before_spawning() -> None:
    with pytest.raises(KeyError):
        await run_process(["true"], user="no-such-user-anyio-proc")


async def test_open_process_returns_a_child_with_three_pipes() -> None:
    async with await open_process(["cat"]) as child:
        assert isinstance(child, Child)
        assert isinstance(child, anyio.abc.Process)
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stderr is not None
        await child.stdin.send(b"echo\n")
        assert await child.stdout.receive() == b"echo\n"
        await child.stdin.aclose()
        assert await child.wait() == 0


async def test_open_process_block_waits_for_natural_exit() -> None:
    # spawn() would SIGTERM this child on leaving the block; open_process waits for it.
    async with await open_process(
        py("import sys, time; sys.stdin.read(); time.sleep(0.2); sys.exit(7)"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as child:
        pass
    assert child.returncode == 7


async def test_terminate_reaches_a_child_that_handles_it() -> None:
    async with await open_process(HANDLES_TERM, stdin=subprocess.DEVNULL) as child:
        assert await read_line(child) == "ready"
        child.terminate()
        assert await read_line(child) == "got SIGTERM"
        assert await child.wait() == 0


async def test_cancelled_block_kills_closes_streams_and_leaves_no_orphan() -> None:
    with anyio.move_on_after(10) as outer:
        async with await open_process(IGNORES_TERM) as child:
            assert await read_line(child) == "ready"
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert child.returncode == -signal.SIGKILL
    assert not alive(child.pid)
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdin.send(b"x")
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdout.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await child.stderr.receive()


async def test_returncode_reaps_as_soon_as_exit_is_seen() -> None:
    # anyio's callers poll returncode and signal the group themselves: no zombie is kept.
    child = await open_process(["sh", "-c", "exit 5"], start_new_session=True)
    try:
        with anyio.fail_after(10):
            await child.wait()
        assert child.returncode == 5
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)
    finally:
        await child.aclose()


async def test_task_status_hands_back_the_running_child() -> None:
    async with anyio.create_task_group() as tg:
        child, ready = await start_run_process(tg, HANDLES_TERM)
        assert isinstance(child, Child)
        assert child.returncode is None
        child.terminate()
    assert await ready.line() == b"got SIGTERM\n"
    ready.close()
    assert child.returncode == 0


async def test_default_deliver_cancel_terminates() -> None:
    async with anyio.create_task_group() as tg:
        child, ready = await start_run_process(tg, HANDLES_TERM)
        tg.cancel_scope.cancel()
    assert await ready.line() == b"got SIGTERM\n"
    ready.close()
    assert child.returncode == 0  # the child's SIGTERM handler exits 0


async def test_custom_deliver_cancel_is_used_and_awaited() -> None:
    seen: list[int] = []

    async def interrupt(child: Child) -> None:
        seen.append(child.pid)
        child.send_signal(signal.SIGINT)

    async with anyio.create_task_group() as tg:
        child = await tg.start(
            lambda task_status: run_process(
                ["sleep", "60"], deliver_cancel=interrupt, task_status=task_status
            )
        )
        tg.cancel_scope.cancel()
    assert seen == [child.pid]
    assert child.returncode == -signal.SIGINT


async def test_failing_deliver_cancel_still_kills() -> None:
    async def broken(child: Child) -> None:
        raise RuntimeError("deliver_cancel failed")

    child: Child | None = None

    async def runner(*, task_status: anyio.abc.TaskStatus[Child]) -> None:
        await run_process(["sleep", "60"], deliver_cancel=broken, task_status=task_status)

    with pytest.raises(BaseException) as info:
        async with anyio.create_task_group() as tg:
            child = await tg.start(runner)
            tg.cancel_scope.cancel()
    assert "deliver_cancel failed" in repr(info.value)
    assert child is not None
    assert child.returncode == -signal.SIGKILL


async def test_deliver_cancel_that_never_returns_is_stopped_when_the_child_exits() -> None:
    async def polite_then_wait(child: Child) -> None:
        child.terminate()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            child = await tg.start(
                lambda task_status: run_process(
                    ["sleep", "60"], deliver_cancel=polite_then_wait, task_status=task_status
                )
            )
            tg.cancel_scope.cancel()
    assert child.returncode == -signal.SIGTERM


async def test_sigterm_ignored_escalates_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anyio_proc._compat, "_DEFAULT_CANCEL_GRACE", 0.2)
    with pytest.warns(RuntimeWarning, match="ignored SIGTERM"):
        async with anyio.create_task_group() as tg:
            child, ready = await start_run_process(tg, IGNORES_TERM)
            tg.cancel_scope.cancel()
    ready.close()
    assert child.returncode == -signal.SIGKILL


async def test_new_session_group_is_signalled_by_kill() -> None:
    async with await open_process(
        ["sh", "-c", "sleep 60 & echo started; wait"], start_new_session=True
    ) as child:
        assert await read_line(child) == "started"
        assert len(group_members(child.pid)) == 2
        child.kill()
        with anyio.fail_after(10):
            await child.wait()
    assert await group_gone(child.pid)
