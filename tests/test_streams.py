"""The pipe streams of a ``Child`` (DESIGN section 4: stdin/stdout/stderr, handing a stream
on, closing a stream), tested against real child processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.abc import ByteReceiveStream, ByteSendStream

from anyio_proc import (
    Child,
    Command,
    OutputLimitExceeded,
    PipeReceiveStream,
    PipeSendStream,
    Stdio,
    spawn,
)

from .helpers import py

if TYPE_CHECKING:
    from pathlib import Path

# Longer than any test needs; a child that only waits to be shut down runs this long.
IDLE = "import time; time.sleep(60)"


def stdin_of(child: Child) -> PipeSendStream:
    stream = child.stdin
    assert stream is not None
    return stream


def stdout_of(child: Child) -> PipeReceiveStream:
    stream = child.stdout
    assert stream is not None
    return stream


def stderr_of(child: Child) -> PipeReceiveStream:
    stream = child.stderr
    assert stream is not None
    return stream


def pattern(size: int, seed: bytes = b"") -> bytes:
    """``size`` bytes in which no block repeats, so reordering or loss shows."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:size])


def pattern_writer(size: int, seed: bytes = b"") -> list[str]:
    """argv of a child that writes ``pattern(size, seed)`` to stdout, in one go, and exits."""
    code = (
        "import hashlib, sys\n"
        "out = bytearray()\n"
        "i = 0\n"
        f"while len(out) < {size}:\n"
        f"    out += hashlib.sha256({seed!r} + i.to_bytes(8, 'big')).digest()\n"
        "    i += 1\n"
        f"sys.stdout.buffer.write(out[:{size}])\n"
    )
    return py(code)


async def receive_exactly(stream: ByteReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive()
    return data


async def receive_line(stream: ByteReceiveStream) -> bytes:
    """Read up to and including a newline; the writer must send nothing after it unasked."""
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive()
    return data


# -- types and the basic round trip ---------------------------------------------------------


async def test_stream_types() -> None:
    cmd = Command("cat").stdin_piped().stdout_piped().stderr_piped()
    async with spawn(cmd) as child:
        assert isinstance(child.stdin, ByteSendStream)
        assert isinstance(child.stdout, ByteReceiveStream)
        assert isinstance(child.stderr, ByteReceiveStream)


async def test_unpiped_streams_are_none() -> None:
    cmd = Command("true").stdin(Stdio.NULL).stdout(Stdio.NULL).stderr(Stdio.NULL)
    async with spawn(cmd) as child:
        assert child.stdin is None
        assert child.stdout is None
        assert child.stderr is None
        assert await child.wait() == 0


async def test_round_trip_through_cat() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            stdin, stdout = stdin_of(child), stdout_of(child)
            for message in (b"hello\n", b"\x00binary\xff\xfe", b"x" * 10000):
                await stdin.send(message)
                assert await receive_exactly(stdout, len(message)) == message
            await stdin.aclose()
            with pytest.raises(anyio.EndOfStream):
                await stdout.receive()
            assert await child.wait() == 0


async def test_receive_respects_max_bytes() -> None:
    with anyio.fail_after(10):
        async with spawn(Command(*py("print('abcdefghij')")).stdout_piped()) as child:
            stdout = stdout_of(child)
            first = await stdout.receive(3)
            assert 1 <= len(first) <= 3
            rest = await stdout.read_all()
            assert first + rest == b"abcdefghij\n"
            await child.wait()


async def test_end_of_stream_is_raised_again() -> None:
    with anyio.fail_after(10):
        async with spawn(Command(*py("print('only')")).stdout_piped()) as child:
            stdout = stdout_of(child)
            assert await receive_line(stdout) == b"only\n"
            for _ in range(3):
                with pytest.raises(anyio.EndOfStream):
                    await stdout.receive()
            assert await child.wait() == 0


async def test_async_for_over_chunks() -> None:
    payload = pattern(300_000)
    with anyio.fail_after(10):
        async with spawn(Command(*pattern_writer(300_000)).stdout_piped()) as child:
            chunks = [chunk async for chunk in stdout_of(child)]
            assert await child.wait() == 0
    assert all(chunks)
    assert b"".join(chunks) == payload


async def test_stderr_pipe_is_separate_from_stdout() -> None:
    code = "import sys; sys.stdout.write('to out'); sys.stderr.write('to err')"
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdout_piped().stderr_piped()) as child:
            assert await stdout_of(child).read_all() == b"to out"
            assert await stderr_of(child).read_all() == b"to err"
            assert await child.wait() == 0


# -- send errors ----------------------------------------------------------------------------


async def send_until_it_fails(stream: ByteSendStream) -> None:
    """Keep writing; the caller expects this to raise (a pipe buffer is finite)."""
    block = b"x" * 65536
    while True:
        await stream.send(block)


async def test_send_after_child_closed_stdin_is_broken() -> None:
    code = f"import os; os.close(0); print('closed', flush=True); {IDLE}"
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdin_piped().stdout_piped()) as child:
            assert await receive_line(stdout_of(child)) == b"closed\n"
            with pytest.raises(anyio.BrokenResourceError) as info:
                await send_until_it_fails(stdin_of(child))
            assert not isinstance(info.value, BrokenPipeError)
            # Still broken (not closed) on the next try: the stream was not closed by us.
            with pytest.raises(anyio.BrokenResourceError):
                await stdin_of(child).send(b"more")
            assert child.returncode is None  # the child itself is still running


async def test_send_after_child_exited_is_broken() -> None:
    with anyio.fail_after(10):
        async with spawn(Command(*py("print('bye')")).stdin_piped().stdout_piped()) as child:
            # Its stdout at end-of-file: the child has exited and closed all its fds.
            assert await stdout_of(child).read_all() == b"bye\n"
            with pytest.raises(anyio.BrokenResourceError):
                await send_until_it_fails(stdin_of(child))
            assert await child.wait() == 0


async def test_send_after_aclose_is_closed() -> None:
    async with spawn(Command("cat").stdin_piped().stdout(Stdio.NULL)) as child:
        stdin = stdin_of(child)
        await stdin.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"late")
        await stdin.aclose()  # closing again is harmless
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"later")
        with anyio.fail_after(10):
            assert await child.wait() == 0  # cat saw end-of-file


async def test_send_after_wait_is_broken() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout(Stdio.NULL)) as child:
            stdin = stdin_of(child)
            await stdin.send(b"data\n")
            assert await child.wait() == 0  # wait() closed stdin, so cat ended
            with pytest.raises(anyio.BrokenResourceError):
                await stdin.send(b"late")
            with pytest.raises(anyio.BrokenResourceError):
                await stdin.send(b"again")


async def test_close_after_wait_turns_broken_into_closed() -> None:
    # ClosedResourceError is for streams that the user (or the block) closed.
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout(Stdio.NULL)) as child:
            stdin = stdin_of(child)
            await child.wait()
            await stdin.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await stdin.send(b"late")


async def test_streams_are_closed_after_the_block() -> None:
    cmd = Command("cat").stdin_piped().stdout_piped().stderr_piped()
    async with spawn(cmd) as child:
        pass
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdin.send(b"x")
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdout.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await child.stderr.receive()


# -- closing a stream wakes the task blocked on it ----------------------------------------


async def test_blocked_receive_wakes_on_close() -> None:
    caught: list[BaseException] = []

    async def reader(stream: ByteReceiveStream) -> None:
        try:
            await stream.receive()
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    with anyio.fail_after(10):
        # cat writes nothing until we send, and we never send.
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            stdout = stdout_of(child)
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader, stdout)
                await anyio.wait_all_tasks_blocked()
                await stdout.aclose()
    assert len(caught) == 1


async def test_blocked_send_wakes_on_close() -> None:
    caught: list[BaseException] = []

    async def writer(stream: ByteSendStream) -> None:
        try:
            await stream.send(b"x" * (4 * 1024 * 1024))  # far more than a pipe holds
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    code = f"print('ready', flush=True); {IDLE}"  # never reads its stdin
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdin_piped().stdout_piped()) as child:
            assert await receive_line(stdout_of(child)) == b"ready\n"
            stdin = stdin_of(child)
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, stdin)
                await anyio.wait_all_tasks_blocked()
                await stdin.aclose()
    assert len(caught) == 1


async def test_reader_in_another_task_ends_when_the_block_exits() -> None:
    # The block's exit policy closes the pipes; a reader in another task must not hang.
    caught: list[BaseException] = []

    async def reader(stream: ByteReceiveStream) -> None:
        try:
            while True:
                await stream.receive()
        except (anyio.ClosedResourceError, anyio.EndOfStream) as exc:
            caught.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            code = f"print('ready', flush=True); {IDLE}"
            async with spawn(Command(*py(code)).stdout_piped()) as child:
                stdout = stdout_of(child)
                assert await receive_line(stdout) == b"ready\n"
                tg.start_soon(reader, stdout)
                await anyio.wait_all_tasks_blocked()
    assert len(caught) == 1


async def test_concurrent_receive_is_busy() -> None:
    async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
        stdout = stdout_of(child)
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await stdout.receive())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(anyio.BusyResourceError):
                    await stdout.receive()
                # The first reader is unaffected and still gets the data.
                await stdin_of(child).send(b"ping")
    assert got == [b"ping"]


async def test_concurrent_send_is_busy() -> None:
    code = f"print('ready', flush=True); {IDLE}"  # never reads its stdin
    async with spawn(Command(*py(code)).stdin_piped().stdout_piped()) as child:
        stdin = stdin_of(child)
        with anyio.fail_after(10):
            assert await receive_line(stdout_of(child)) == b"ready\n"
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_until_it_fails, stdin)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(anyio.BusyResourceError):
                    await stdin.send(b"x")
                tg.cancel_scope.cancel()


async def test_cancelled_receive_loses_nothing() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            stdout = stdout_of(child)
            with anyio.move_on_after(0.05) as scope:
                await stdout.receive()  # nothing to read yet
            assert scope.cancelled_caught
            await stdin_of(child).send(b"after the cancel")
            assert await receive_exactly(stdout, 16) == b"after the cancel"


async def test_send_eof_lets_cat_finish() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            stdin = stdin_of(child)
            await stdin.send(b"last words\n")
            await stdin.send_eof()
            with pytest.raises(anyio.ClosedResourceError):
                await stdin.send(b"more")
            assert await stdout_of(child).read_all() == b"last words\n"
            assert await child.wait() == 0


async def test_closed_by_user_stays_closed_after_wait() -> None:
    # wait() closes stdin "as if the child had closed its end" only when it is the one
    # closing it; a stream the user closed keeps reporting ClosedResourceError.
    with anyio.fail_after(10):
        async with spawn(Command("cat").stdin_piped().stdout(Stdio.NULL)) as child:
            stdin = stdin_of(child)
            await stdin.send_eof()
            assert await child.wait() == 0
            with pytest.raises(anyio.ClosedResourceError):
                await stdin.send(b"more")


# -- lines() --------------------------------------------------------------------------------


def writer_of(data: bytes) -> list[str]:
    """argv of a child that writes ``data`` to stdout and exits."""
    return py(f"import sys; sys.stdout.buffer.write({data!r})")


async def lines_of(
    data: bytes,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    max_line_length: int | None = None,
) -> list[str]:
    with anyio.fail_after(10):
        async with spawn(Command(*writer_of(data)).stdout_piped()) as child:
            stream = stdout_of(child)
            iterator = stream.lines(
                encoding=encoding, errors=errors, max_line_length=max_line_length
            )
            lines = [line async for line in iterator]
            assert await child.wait() == 0
    return lines


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb\nc\n", ["a", "b", "c"]),
        (b"a\r\nb\r\nc\r\n", ["a", "b", "c"]),
        (b"lf\ncrlf\r\nlf\n", ["lf", "crlf", "lf"]),
        (b"a\nno newline", ["a", "no newline"]),
        (b"\n\nmiddle\n\n", ["", "", "middle", ""]),
        (b"\r\n", [""]),
        (b"", []),
        (b"inner\rcarriage\n", ["inner\rcarriage"]),
        ("unicode: é ü 😀\n".encode(), ["unicode: é ü 😀"]),
    ],
    ids=[
        "lf",
        "crlf",
        "mixed",
        "no-final-newline",
        "empty-lines",
        "crlf-only",
        "nothing",
        "cr",
        "utf8",
    ],
)
async def test_lines(data: bytes, expected: list[str]) -> None:
    assert await lines_of(data) == expected


async def test_lines_across_many_chunks() -> None:
    expected = [f"line {i} " + "y" * (i % 200) for i in range(20000)]
    code = (
        "import sys\n"
        "for i in range(20000):\n"
        "    sys.stdout.write(f'line {i} ' + 'y' * (i % 200) + ('\\r\\n' if i % 2 else '\\n'))\n"
    )
    with anyio.fail_after(20):
        async with spawn(Command(*py(code)).stdout_piped()) as child:
            lines = [line async for line in stdout_of(child).lines()]
            assert await child.wait() == 0
    assert lines == expected


@pytest.mark.parametrize("character", ["é", "€", "😀"])
async def test_lines_character_split_between_writes(character: str) -> None:
    encoded = character.encode()
    head, tail = encoded[:1], encoded[1:]
    # The child writes the first byte of the character in the same write as a whole line,
    # then waits for us before writing the rest: we hold half a character in between.
    code = (
        "import sys\n"
        f"sys.stdout.buffer.write(b'first\\ncaf' + {head!r}); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        f"sys.stdout.buffer.write({tail!r} + b'!\\nlast\\n'); sys.stdout.flush()\n"
    )
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdin_piped().stdout_piped()) as child:
            lines = stdout_of(child).lines()
            assert await lines.__anext__() == "first"
            await stdin_of(child).send(b"go on\n")
            rest = [line async for line in lines]
            assert await child.wait() == 0
    assert rest == [f"caf{character}!", "last"]


async def test_lines_encoding_latin1() -> None:
    assert await lines_of(b"caf\xe9\n\xff\xfe\n", encoding="latin-1") == ["café", "ÿþ"]


async def test_lines_errors_replace() -> None:
    assert await lines_of(b"a\xffb\nok\n\xc3", errors="replace") == ["a\ufffdb", "ok", "\ufffd"]


async def test_lines_undecodable_is_an_error_by_default() -> None:
    with anyio.fail_after(10):
        async with spawn(Command(*writer_of(b"good\nbad \xff\n")).stdout_piped()) as child:
            lines = stdout_of(child).lines()
            with pytest.raises(UnicodeDecodeError):
                _ = [line async for line in lines]


async def test_lines_max_line_length() -> None:
    data = b"short\n" + b"x" * 100 + b"\nafter\n"
    with anyio.fail_after(10):
        async with spawn(Command(*writer_of(data)).stdout_piped()) as child:
            lines = stdout_of(child).lines(max_line_length=10)
            # The line within the limit comes first; the error comes with the long one.
            assert await lines.__anext__() == "short"
            with pytest.raises(OutputLimitExceeded) as info:
                await lines.__anext__()
    assert info.value.limit == 10
    assert isinstance(info.value.partial, str)
    assert len(info.value.partial) > 10
    assert set(info.value.partial) == {"x"}


async def test_lines_max_line_length_at_the_limit_is_fine() -> None:
    assert await lines_of(b"1234567890\n12345", max_line_length=10) == ["1234567890", "12345"]


async def test_lines_max_line_length_without_newline_stops_early() -> None:
    # A line that never ends must not be buffered without bound: the limit is hit while
    # the child is still writing (and would never close stdout).
    code = f"import sys; sys.stdout.write('z' * 1_000_000); sys.stdout.flush(); {IDLE}"
    with anyio.fail_after(10):
        async with spawn(Command(*py(code)).stdout_piped()) as child:
            with pytest.raises(OutputLimitExceeded) as info:
                async for _ in stdout_of(child).lines(max_line_length=1000):
                    pass
            assert child.returncode is None
    assert info.value.limit == 1000
    assert len(info.value.partial) > 1000


# -- read_all() -----------------------------------------------------------------------------


async def test_read_all_returns_everything() -> None:
    payload = pattern(3 * 1024 * 1024 + 17)
    with anyio.fail_after(20):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
            stdin = stdin_of(child)

            async def feed() -> None:
                await stdin.send(payload)
                await stdin.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                data = await stdout_of(child).read_all()
            assert await child.wait() == 0
    assert data == payload


async def test_read_all_of_nothing() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("true").stdout_piped()) as child:
            assert await stdout_of(child).read_all() == b""
            assert await stdout_of(child).read_all() == b""  # still at end-of-file


async def test_read_all_max_bytes() -> None:
    payload = pattern(200_000)
    with anyio.fail_after(10):
        async with spawn(Command(*pattern_writer(200_000)).stdout_piped()) as child:
            with pytest.raises(OutputLimitExceeded) as info:
                await stdout_of(child).read_all(max_bytes=1000)
    exc = info.value
    assert exc.limit == 1000
    assert isinstance(exc.partial, bytes)
    assert len(exc.partial) > 1000
    assert payload.startswith(exc.partial)


async def test_read_all_max_bytes_exactly_reached_is_fine() -> None:
    payload = pattern(5000)
    with anyio.fail_after(10):
        async with spawn(Command(*writer_of(payload)).stdout_piped()) as child:
            assert await stdout_of(child).read_all(max_bytes=5000) == payload


async def test_read_all_max_bytes_keeps_the_stream_usable() -> None:
    payload = pattern(200_000)
    with anyio.fail_after(10):
        async with spawn(Command(*pattern_writer(200_000)).stdout_piped()) as child:
            stdout = stdout_of(child)
            with pytest.raises(OutputLimitExceeded) as info:
                await stdout.read_all(max_bytes=100)
            partial = info.value.partial
            assert isinstance(partial, bytes)
            assert payload.startswith(partial)
            # The failed call consumed nothing: the next read starts where it started.
            assert await stdout.read_all() == payload


# -- handing a stream on, and other stdio ---------------------------------------------------


async def test_chain_two_processes() -> None:
    payload = pattern(1024 * 1024)
    with anyio.fail_after(20):
        async with spawn(Command("cat").stdin_piped().stdout_piped()) as first:
            first_stdout = stdout_of(first)
            second_cmd = Command("cat").stdin(first_stdout).stdout_piped()
            async with spawn(second_cmd) as second:
                # Our copy of the pipe end went to the second child.
                with pytest.raises(anyio.ClosedResourceError):
                    await first_stdout.receive()
                stdin = stdin_of(first)

                async def feed() -> None:
                    await stdin.send(payload)
                    await stdin.aclose()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    data = await stdout_of(second).read_all()
                assert await second.wait() == 0
            assert await first.wait() == 0
    assert data == payload


async def test_handed_on_stream_is_blocking_in_the_next_child() -> None:
    # Had the second child inherited our O_NONBLOCK, its read would fail with EAGAIN
    # as soon as the first child is slower than it (trio #1707).
    first_code = (
        "import sys\n"
        "print('one', flush=True)\n"
        "sys.stdin.readline()\n"  # hold the rest back until the second child is waiting
        "print('two', flush=True)\n"
    )
    second_code = (
        "import os, sys\n"
        "print('blocking' if os.get_blocking(0) else 'NON-BLOCKING', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('got', line.strip(), flush=True)\n"
    )
    with anyio.fail_after(10):
        async with spawn(Command(*py(first_code)).stdin_piped().stdout_piped()) as first:
            second_cmd = Command(*py(second_code)).stdin(stdout_of(first)).stdout_piped()
            async with spawn(second_cmd) as second:
                lines = stdout_of(second).lines()
                assert await lines.__anext__() == "blocking"
                assert await lines.__anext__() == "got one"
                await stdin_of(first).send(b"go\n")
                assert [line async for line in lines] == ["got two"]
                assert await second.wait() == 0
            assert await first.wait() == 0
        assert stdout_of(first).fileno() == -1


async def test_piped_ends_are_blocking_in_the_child() -> None:
    code = "import os; print([os.get_blocking(fd) for fd in (0, 1, 2)])"
    cmd = Command(*py(code)).stdin_piped().stdout_piped().stderr_piped()
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            assert await stdout_of(child).read_all() == b"[True, True, True]\n"
            assert await child.wait() == 0


async def test_stdout_to_a_file_object(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with path.open("wb") as f:
        with anyio.fail_after(10):
            async with spawn(Command(*py("print('into the file')")).stdout(f)) as child:
                assert child.stdout is None
                assert await child.wait() == 0
        assert not f.closed
        f.write(b"ours\n")  # the file is still ours to use
    assert path.read_bytes() == b"into the file\nours\n"


async def test_stdout_to_an_fd(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with anyio.fail_after(10):
            async with spawn(Command(*py("print('via fd')")).stdout(fd)) as child:
                assert await child.wait() == 0
        os.fstat(fd)  # still open
    finally:
        os.close(fd)
    assert path.read_bytes() == b"via fd\n"


async def test_stdin_from_an_fd(tmp_path: Path) -> None:
    path = tmp_path / "in.bin"
    payload = pattern(200_000)
    path.write_bytes(payload)
    fd = os.open(path, os.O_RDONLY)
    try:
        with anyio.fail_after(10):
            async with spawn(Command("cat").stdin(fd).stdout_piped()) as child:
                assert child.stdin is None
                assert await stdout_of(child).read_all() == payload
                assert await child.wait() == 0
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


@pytest.mark.parametrize("merge", [Stdio.STDOUT, subprocess.STDOUT], ids=["Stdio", "subprocess"])
async def test_stderr_merged_into_stdout(merge: Stdio | int) -> None:
    code = (
        "import sys\n"
        "for i in range(3):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
    )
    cmd = Command(*py(code)).stdout_piped().stderr(merge)
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            assert child.stderr is None
            data = await stdout_of(child).read_all()
            assert await child.wait() == 0
    assert data == b"out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\n"


# -- pipe capacity (Linux) ---------------------------------------------------------------------


def _pipe_size(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_GETPIPE_SZ is Linux-only")
async def test_busy_pipes_grow_and_quiet_ones_do_not() -> None:
    # A flooding child fills the 64 KiB default: the reader enlarges the pipe so both
    # sides wake less often. A child that writes a line keeps the default, so many quiet
    # children do not use up the user's pipe budget.
    cmd = Command("head", "-c", str(8 << 20), "/dev/zero").stdout_piped().stdin_piped()
    async with spawn(cmd) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        fd = child.stdout.fileno()
        default = _pipe_size(fd)
        assert len(await child.stdout.read_all()) == 8 << 20
        assert _pipe_size(fd) > default
        assert _pipe_size(child.stdin.fileno()) == default
    async with spawn(Command(*py("print('hi')")).stdout_piped()) as child:
        assert child.stdout is not None
        assert await child.stdout.read_all() == b"hi\n"
        assert _pipe_size(child.stdout.fileno()) == default


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_GETPIPE_SZ is Linux-only")
async def test_a_slow_reader_grows_the_stdin_pipe() -> None:
    code = "import sys; sys.stdin.buffer.read(1); sys.stdin.buffer.read()"
    async with spawn(Command(*py(code)).stdin_piped()) as child:
        assert child.stdin is not None
        fd = child.stdin.fileno()
        default = _pipe_size(fd)
        await child.stdin.send(b"x" * (4 << 20))
        assert _pipe_size(fd) > default
        await child.stdin.aclose()
        assert await child.wait() == 0
