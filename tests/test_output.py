"""``Child.wait_with_output()`` and ``Command.output()``: feeding input and collecting both
output pipes at once without deadlocking, and ``Output``/``ProcessFailed``."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
from typing import TYPE_CHECKING

import anyio
import pytest

from anyio_proc import Child, Command, Output, ProcessFailed, Stdio, spawn

from .helpers import alive, group_members, py

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

CHUNK = 64 * 1024
CHUNKS = 32  # 32 x 64 KiB = 2 MiB per stream


def block(tag: bytes, i: int) -> bytes:
    """64 KiB that differ for every stream and chunk number."""
    return hashlib.sha256(tag + i.to_bytes(4, "big")).digest() * (CHUNK // 32)


# Writes 2 MiB to stdout and 2 MiB to stderr, 64 KiB at a time, alternating: a reader
# that drains one pipe before the other deadlocks on the first full pipe.
INTERLEAVED = py(
    "import hashlib, sys\n"
    f"for i in range({CHUNKS}):\n"
    "    for tag, stream in ((b'out', sys.stdout.buffer), (b'err', sys.stderr.buffer)):\n"
    f"        stream.write(hashlib.sha256(tag + i.to_bytes(4, 'big')).digest() * {CHUNK // 32})\n"
    "        stream.flush()\n"
)
EXPECTED_OUT = b"".join(block(b"out", i) for i in range(CHUNKS))
EXPECTED_ERR = b"".join(block(b"err", i) for i in range(CHUNKS))


def payload(size: int) -> bytes:
    return os.urandom(size)


async def read_line(child: Child) -> bytes:
    """One line from stdout, read byte by byte so nothing after it is consumed."""
    stdout = child.stdout
    assert stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        data += await stdout.receive(1)
    return data


# -- wait_with_output -----------------------------------------------------------------------


async def test_both_pipes_full_no_deadlock() -> None:
    with anyio.fail_after(20):
        async with spawn(Command(*INTERLEAVED).stdout_piped().stderr_piped()) as child:
            out = await child.wait_with_output()
    assert out.status == 0
    assert len(out.stdout) == len(EXPECTED_OUT) == 2 * 1024 * 1024
    assert out.stdout == EXPECTED_OUT
    assert out.stderr == EXPECTED_ERR


async def test_input_through_cat() -> None:
    data = payload(4 * 1024 * 1024)
    with anyio.fail_after(20):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            out = await child.wait_with_output(input=data)
    assert out.status == 0
    assert len(out.stdout) == len(data)
    assert out.stdout == data
    assert out.stderr == b""  # not piped


async def test_input_while_both_outputs_are_full() -> None:
    # The child echoes stdin to stdout and to stderr (reversed), all much larger than a
    # pipe: feeding and both drains have to progress together.
    code = (
        "import sys\n"
        "while chunk := sys.stdin.buffer.read1(65536):\n"
        "    sys.stdout.buffer.write(chunk); sys.stdout.flush()\n"
        "    sys.stderr.buffer.write(chunk[::-1]); sys.stderr.flush()\n"
    )
    data = payload(3 * 1024 * 1024)
    cmd = Command(*py(code)).stdin_piped().stdout_piped().stderr_piped()
    with anyio.fail_after(20):
        async with spawn(cmd) as child:
            out = await child.wait_with_output(input=data)
    assert out.status == 0
    assert out.stdout == data
    assert len(out.stderr) == len(data)


async def test_no_input_closes_stdin() -> None:
    # With stdin piped and no input, the child must see end-of-file at once.
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            out = await child.wait_with_output()
    assert out == Output(out.status, b"", b"")
    assert out.status == 0


async def test_empty_input() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            out = await child.wait_with_output(input=b"")
    assert out.stdout == b""
    assert out.status == 0


async def test_input_without_piped_stdin_is_value_error() -> None:
    cmd = Command(*py("print('still here')")).stdin(Stdio.NULL).stdout_piped()
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            with pytest.raises(ValueError):
                await child.wait_with_output(input=b"data")
            # Nothing was consumed by the failed call.
            out = await child.wait_with_output()
    assert out.stdout == b"still here\n"
    assert out.status == 0


async def test_child_exits_without_reading_input() -> None:
    # Much more than a pipe holds, so writing it must run into the closed pipe.
    with anyio.fail_after(10):
        async with spawn(Command("true").stdin_piped().stdout_piped()) as child:
            out = await child.wait_with_output(input=payload(4 * 1024 * 1024))
    assert out.status == 0
    assert out.stdout == b""


async def test_child_reads_part_of_input() -> None:
    data = payload(1024 * 1024)
    with anyio.fail_after(10):
        async with spawn(Command("head", "-c", "10").stdin_piped().stdout_piped()) as child:
            out = await child.wait_with_output(input=data)
    assert out.status == 0
    assert out.stdout == data[:10]


async def test_unpiped_outputs_are_empty() -> None:
    cmd = Command(*py("print('to nowhere')")).stdout(Stdio.NULL).stderr(Stdio.NULL)
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            out = await child.wait_with_output()
    assert out == Output(out.status, b"", b"")
    assert out.status == 0


async def test_failed_status_is_not_raised() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdout_piped().stderr_piped()) as child:
            out = await child.wait_with_output()
    assert out.status == 3
    assert out.returncode == 3
    assert not out.status.success
    assert out.stdout == b"out\n"
    assert out.stderr == b"err\n"


async def test_killed_child_status() -> None:
    code = "import os, signal; print('partial', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdout_piped()) as child:
            out = await child.wait_with_output()
    assert out.status.signal == signal.SIGKILL
    assert out.returncode == -signal.SIGKILL
    assert out.stdout == b"partial\n"


async def test_grandchild_holding_stdout_blocks_until_the_block_exits() -> None:
    """wait_with_output() reads stdout to end-of-file, as tokio's does: a grandchild that
    keeps the pipe open keeps it waiting after the child itself has exited. A deadline
    around the block ends the wait, and the block's exit policy then stops the whole
    process group, grandchild included."""
    cmd = Command.shell("sleep 60 & echo $!").stdout_piped().process_group()
    children: list[Child] = []
    grandchildren: list[int] = []

    async def collect_until_deadline() -> None:
        with anyio.fail_after(1):
            async with spawn(cmd) as child:
                children.append(child)
                grandchildren.append(int(await read_line(child)))
                assert alive(grandchildren[0])
                assert await child.wait() == 0  # the shell is done...
                await child.wait_with_output()  # ...yet its stdout is still open

    with anyio.fail_after(20), pytest.raises(TimeoutError):
        await collect_until_deadline()
    [child] = children
    [grandchild] = grandchildren
    assert child.returncode == 0
    assert not alive(grandchild)
    assert group_members(child.pid) == []


# -- Command.output() -------------------------------------------------------------------------


async def test_output_captures_both_and_stdin_is_null() -> None:
    code = (
        "import os, sys\n"
        "data = sys.stdin.buffer.read()\n"  # would hang if stdin were inherited from a tty
        "print(len(data), os.readlink('/proc/self/fd/0'))\n"
        "print('on stderr', file=sys.stderr)\n"
    )
    with anyio.fail_after(10):
        out = await Command(*py(code)).output()
    assert out.status == 0
    assert out.stdout == f"0 {os.devnull}\n".encode()
    assert out.stderr == b"on stderr\n"


async def test_output_large_on_both() -> None:
    with anyio.fail_after(20):
        out = await Command(*INTERLEAVED).output()
    assert out.status == 0
    assert out.stdout == EXPECTED_OUT
    assert out.stderr == EXPECTED_ERR


async def test_output_keeps_explicit_stdio() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    with anyio.fail_after(10):
        out = await Command(*py(code)).stderr(Stdio.STDOUT).output()
    assert out.stdout == b"out\nerr\n"
    assert out.stderr == b""


async def test_output_under_task_group_start() -> None:
    cmd = Command(*py("import os; print(os.getpid())"))
    results: list[Output] = []

    async def runner(*, task_status: TaskStatus[Child]) -> None:
        results.append(await cmd.output(task_status=task_status))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            child = await tg.start(runner)
            assert isinstance(child, Child)
    assert len(results) == 1
    assert results[0].stdout == f"{child.pid}\n".encode()
    assert results[0].status == 0
    assert child.returncode == 0


async def test_output_check_passes_through_success() -> None:
    with anyio.fail_after(10):
        out = await Command(*py("print('fine')")).output()
    assert out.check() is out


async def test_output_check_raises_process_failed_with_stderr_tail() -> None:
    code = (
        "import sys\n"
        "print('some output')\n"
        "for i in range(30):\n"
        "    print(f'problem {i}', file=sys.stderr)\n"
        "sys.exit(4)\n"
    )
    with anyio.fail_after(10):
        out = await Command(*py(code)).output()
    with pytest.raises(ProcessFailed) as info:
        out.check()
    exc = info.value
    assert isinstance(exc, subprocess.CalledProcessError)
    assert exc.returncode == 4
    assert exc.status == 4
    assert exc.stdout == b"some output\n"
    assert exc.stderr == out.stderr
    message = str(exc)
    assert message.rstrip().endswith("problem 29")
    assert "problem 28" in message
    assert "exit status: 4" in message


async def test_output_check_message_without_stderr() -> None:
    with anyio.fail_after(10):
        out = await Command("false").output()
    with pytest.raises(ProcessFailed) as info:
        out.check()
    assert info.value.returncode == 1
    assert "false" in str(info.value)
    assert "exit status: 1" in str(info.value)


async def test_output_is_frozen() -> None:
    with anyio.fail_after(10):
        out = await Command("true").output()
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.stdout = b"changed"  # type: ignore[misc]
