"""The read buffer of a ``PipeReceiveStream``: bytes received but not yet consumed belong
to the stream, so ``receive()``, ``read_all()``, ``lines()`` and ``wait_with_output()``
each start where the previous reader stopped, however it stopped (``break``, cancellation,
``OutputLimitExceeded``, a decoding error), and ``receive()`` checks ``max_bytes`` as
anyio's own streams do."""

from __future__ import annotations

import codecs
import random
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.lowlevel import checkpoint

from anyio_proc import (
    Child,
    Command,
    OutputLimitExceeded,
    PipeReceiveStream,
    PipeSendStream,
    spawn,
)

from .helpers import py

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def stdout_of(child: Child) -> PipeReceiveStream:
    stream = child.stdout
    assert stream is not None
    return stream


def writer_of(data: bytes | str) -> Command:
    """A child that writes ``data`` to stdout in one write and exits: whatever reads
    first gets all of it in one read (if it fits in the pipe), so ``lines()`` has read
    past its first line. A ``str`` is a Python expression for the bytes."""
    expression = repr(data) if isinstance(data, bytes) else data
    return Command(*py(f"import sys; sys.stdout.buffer.write({expression})")).stdout_piped()


def holding(first: bytes | str, rest: bytes | str) -> Command:
    """A child that writes ``first`` to stdout, says ``ready`` on stderr, then waits for a
    line on stdin before it writes ``rest`` and exits. A ``str`` is a Python expression
    for the bytes (too many for an argument)."""
    first, rest = (repr(part) if isinstance(part, bytes) else part for part in (first, rest))
    code = (
        "import sys\n"
        f"sys.stdout.buffer.write({first}); sys.stdout.flush()\n"
        "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
        "sys.stdin.readline()\n"
        f"sys.stdout.buffer.write({rest}); sys.stdout.flush()\n"
    )
    return Command(*py(code)).stdin_piped().stdout_piped().stderr_piped()


async def until_ready(child: Child) -> None:
    """Once the child said ``ready``, ``first`` is in the pipe: the next read gets it
    without waiting."""
    assert child.stderr is not None
    said = b""
    while not said.endswith(b"ready\n"):
        said += await child.stderr.receive()


async def go_on(child: Child) -> None:
    assert child.stdin is not None
    await child.stdin.send(b"go\n")


async def drain(stream: PipeReceiveStream) -> bytes:
    """Everything left, through receive() only."""
    data = b""
    while True:
        try:
            data += await stream.receive()
        except anyio.EndOfStream:
            return data


async def cancel_once_blocked(operation: Callable[[], Awaitable[object]]) -> None:
    """Run ``operation`` until it waits for more output, then cancel it."""
    finished = False

    async def run() -> None:
        nonlocal finished
        await operation()
        finished = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert not finished


# -- what lines() read ahead, after a break ---------------------------------------------------


async def test_receive_after_break_gets_what_lines_read_ahead() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"a\nb\nc\n")) as child:
            stdout = stdout_of(child)
            async for line in stdout.lines():
                assert line == "a"
                break
            first = await stdout.receive(1)
            assert first == b"b"
            assert first + await drain(stdout) == b"b\nc\n"


async def test_read_all_after_break_returns_the_rest() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"a\nb\r\nc")) as child:
            stdout = stdout_of(child)
            async for _ in stdout.lines():
                break
            assert await stdout.read_all() == b"b\r\nc"
            assert await stdout.read_all() == b""


async def test_second_lines_after_break_resumes_at_the_next_line() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"a\nb\nc\nd")) as child:
            stdout = stdout_of(child)
            async for _ in stdout.lines():
                break
            lines = stdout.lines()
            assert await anext(lines) == "b"
            # Abandoned mid-way: the next iterator starts where this one stopped.
            assert [line async for line in stdout.lines()] == ["c", "d"]


async def test_interleaved_iterators_share_the_stream() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"1\n2\n3\n4\n")) as child:
            stdout = stdout_of(child)
            one, two = stdout.lines(), stdout.lines()
            assert await anext(one) == "1"
            assert await anext(two) == "2"
            assert await stdout.receive(2) == b"3\n"
            assert await anext(one) == "4"
            with pytest.raises(StopAsyncIteration):
                await anext(two)


async def test_wait_with_output_includes_what_lines_read_ahead() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"header\nbody 1\nbody 2\n")) as child:
            assert await anext(stdout_of(child).lines()) == "header"
            output = await child.wait_with_output()
    assert output.stdout == b"body 1\nbody 2\n"


async def test_partial_line_survives_a_break() -> None:
    with anyio.fail_after(10):
        async with spawn(holding(b"ready\npar", b"tial\nlast\n")) as child:
            await until_ready(child)
            stdout = stdout_of(child)
            assert await anext(stdout.lines()) == "ready"  # and "par" read ahead
            await go_on(child)
            assert [line async for line in stdout.lines()] == ["partial", "last"]


@pytest.mark.parametrize("character", ["é", "€", "😀"])
@pytest.mark.parametrize("then", ["lines", "read_all"])
async def test_split_character_survives_a_break(character: str, then: str) -> None:
    encoded = character.encode()
    # The first byte of the character comes with a whole line; the rest only later.
    cmd = holding(b"first\ncaf" + encoded[:1], encoded[1:] + b"!\nlast\n")
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            await until_ready(child)
            stdout = stdout_of(child)
            assert await anext(stdout.lines()) == "first"
            await go_on(child)
            if then == "lines":
                assert [line async for line in stdout.lines()] == [f"caf{character}!", "last"]
            else:
                assert await stdout.read_all() == f"caf{character}!\nlast\n".encode()


@pytest.mark.parametrize("then", ["same", "lines", "read_all"])
async def test_split_character_survives_a_cancelled_line(then: str) -> None:
    # The iterator has decoded "caf" and holds half of "é" in its decoder when it is
    # cancelled; whoever reads next must still see the whole character.
    with anyio.fail_after(10):
        async with spawn(holding(b"first\ncaf\xc3", b"\xa9!\nlast\n")) as child:
            await until_ready(child)
            stdout = stdout_of(child)
            lines = stdout.lines()
            assert await anext(lines) == "first"
            await cancel_once_blocked(lambda: anext(lines))
            await go_on(child)
            if then == "same":
                assert [line async for line in lines] == ["café!", "last"]
            elif then == "lines":
                assert [line async for line in stdout.lines()] == ["café!", "last"]
            else:
                assert await stdout.read_all() == "café!\nlast\n".encode()


@pytest.mark.parametrize("then", ["same", "lines", "receive"])
async def test_crlf_split_across_reads(then: str) -> None:
    with anyio.fail_after(10):
        async with spawn(holding(b"one\r", b"\ntwo\r\n")) as child:
            await until_ready(child)
            stdout = stdout_of(child)
            lines = stdout.lines()
            await cancel_once_blocked(lambda: anext(lines))
            await go_on(child)
            if then == "same":
                assert [line async for line in lines] == ["one", "two"]
            elif then == "lines":
                assert [line async for line in stdout.lines()] == ["one", "two"]
            else:
                assert await drain(stdout) == b"one\r\ntwo\r\n"


async def test_closing_drops_what_lines_read_ahead() -> None:
    # Closed is closed: lines already received are not handed out afterwards.
    with anyio.fail_after(10):
        async with spawn(writer_of(b"a\nb\nc\n")) as child:
            stdout = stdout_of(child)
            lines = stdout.lines()
            assert await anext(lines) == "a"
            await stdout.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await anext(lines)
            with pytest.raises(anyio.ClosedResourceError):
                await stdout.receive()


# -- errors consume nothing -------------------------------------------------------------------

LONG = b"short\n" + b"x" * 100 + b"\nafter\n"


async def test_line_limit_then_the_same_iterator_goes_on_after_the_long_line() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(LONG)) as child:
            lines = stdout_of(child).lines(max_line_length=10)
            assert await anext(lines) == "short"
            with pytest.raises(OutputLimitExceeded) as info:
                await anext(lines)
            assert info.value.partial == "x" * 100
            assert [line async for line in lines] == ["after"]


@pytest.mark.parametrize("then", ["read_all", "receive", "lines"])
async def test_line_limit_leaves_the_long_line_to_other_readers(then: str) -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(LONG)) as child:
            stdout = stdout_of(child)
            lines = stdout.lines(max_line_length=10)
            assert await anext(lines) == "short"
            with pytest.raises(OutputLimitExceeded):
                await anext(lines)
            rest = b"x" * 100 + b"\nafter\n"
            if then == "read_all":
                assert await stdout.read_all() == rest
            elif then == "receive":
                assert await drain(stdout) == rest
            else:
                again = stdout.lines(max_line_length=100)
                assert [line async for line in again] == ["x" * 100, "after"]
            # The old iterator sees that another reader took over: nothing left to skip.
            assert [line async for line in lines] == []


async def test_line_limit_on_a_line_still_arriving_then_the_next_line() -> None:
    # The limit is hit long before the line ends; skipping it afterwards discards it as
    # it arrives, and the line after it comes out whole.
    # (Far more than a pipe holds: the child is still writing when the limit is hit.)
    cmd = holding("b'z' * 200_000", "b'z' * 300_000 + b'\\nafter\\n'")
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            lines = stdout_of(child).lines(max_line_length=1000)
            with pytest.raises(OutputLimitExceeded) as info:
                await anext(lines)
            assert child.returncode is None  # raised before the line ended
            assert isinstance(info.value.partial, str)
            assert 1000 < len(info.value.partial) <= 200_000
            assert set(info.value.partial) == {"z"}
            await go_on(child)
            assert [line async for line in lines] == ["after"]


async def test_line_limit_leaves_room_for_the_cr_of_a_crlf() -> None:
    # Ten characters and a "\r": within the limit if a "\n" follows.
    with anyio.fail_after(10):
        async with spawn(holding(b"0123456789\r", b"\nabcdefghijk\r\n")) as child:
            await until_ready(child)
            lines = stdout_of(child).lines(max_line_length=10)
            got: list[str] = []

            async def first() -> None:
                got.append(await anext(lines))

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await anyio.wait_all_tasks_blocked()  # it has seen the "\r"
                await go_on(child)
            assert got == ["0123456789"]
            with pytest.raises(OutputLimitExceeded):
                await anext(lines)


@pytest.mark.parametrize("then", ["same", "read_all", "replace"])
async def test_decode_error_consumes_nothing(then: str) -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"good\nbad \xff\nnext\n")) as child:
            stdout = stdout_of(child)
            lines = stdout.lines()
            assert await anext(lines) == "good"
            with pytest.raises(UnicodeDecodeError):
                await anext(lines)
            if then == "same":
                assert [line async for line in lines] == ["next"]
            elif then == "read_all":
                assert await stdout.read_all() == b"bad \xff\nnext\n"
            else:
                lenient = stdout.lines(errors="replace")
                assert [line async for line in lenient] == ["bad \ufffd", "next"]


async def test_read_all_limit_consumes_nothing() -> None:
    payload = bytes(range(256)) * 800
    with anyio.fail_after(10):
        async with spawn(writer_of("bytes(range(256)) * 800")) as child:
            stdout = stdout_of(child)
            with pytest.raises(OutputLimitExceeded) as info:
                await stdout.read_all(max_bytes=1000)
            partial = info.value.partial
            assert isinstance(partial, bytes)
            assert len(partial) > 1000
            assert payload.startswith(partial)
            assert await stdout.read_all() == payload


async def test_cancelled_read_all_loses_nothing() -> None:
    with anyio.fail_after(10):
        async with spawn(holding(b"part one, ", b"part two")) as child:
            await until_ready(child)
            stdout = stdout_of(child)
            await cancel_once_blocked(stdout.read_all)  # it had read "part one, "
            await go_on(child)
            assert await stdout.read_all() == b"part one, part two"


# -- bad arguments fail before anything is read --------------------------------------------


@pytest.mark.parametrize(
    ("max_bytes", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)],
    ids=["zero", "negative", "float", "str", "bool"],
)
@pytest.mark.parametrize("buffered", [False, True], ids=["pipe", "buffer"])
async def test_receive_rejects_a_bad_max_bytes(
    max_bytes: object, error: type[Exception], buffered: bool
) -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"first\ndata")) as child:
            stdout = stdout_of(child)
            if buffered:
                assert await anext(stdout.lines()) == "first"  # "data" stays buffered
            with pytest.raises(error) as info:
                await stdout.receive(max_bytes)  # type: ignore[arg-type]
            if error is ValueError:
                assert str(info.value) == "max_bytes must be a positive integer"
            rest = await stdout.read_all()
            assert rest == (b"data" if buffered else b"first\ndata")


async def test_bad_limits_and_codecs_fail_at_the_call() -> None:
    async with spawn(writer_of(b"12345")) as child:
        stdout = stdout_of(child)
        with pytest.raises(ValueError, match="max_bytes"):
            await stdout.read_all(max_bytes=-1)
        with pytest.raises(TypeError, match="max_bytes"):
            await stdout.read_all(max_bytes=2.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_line_length"):
            stdout.lines(max_line_length=-1)
        with pytest.raises(TypeError, match="max_line_length"):
            stdout.lines(max_line_length="10")  # type: ignore[arg-type]
        with pytest.raises(LookupError):
            stdout.lines(encoding="no-such-codec")
        with pytest.raises(LookupError):
            stdout.lines(encoding="hex")  # bytes to bytes: not a text encoding
        with pytest.raises(LookupError):
            stdout.lines(errors="no-such-handler")
        with anyio.fail_after(10):
            assert await stdout.read_all(max_bytes=5) == b"12345"


# -- encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-16-le-bom-be"])
async def test_multi_byte_newlines_resume_after_a_break(encoding: str) -> None:
    # U+0A41 next to U+4E00 holds the newline's bytes across two code units, in either
    # byte order and in UTF-16 and UTF-32 alike: only an aligned newline counts.
    text = "a\u0a41\u4e00\u0a41\nb\u4e2d\r\nc\n"
    if encoding == "utf-16-le-bom-be":
        # "utf-16" data from a big-endian writer: its byte order mark says so.
        encoding, data = "utf-16", "\ufeff".encode("utf-16-be") + text.encode("utf-16-be")
    else:
        data = text.encode(encoding)
    with anyio.fail_after(10):
        async with spawn(writer_of(data)) as child:
            stdout = stdout_of(child)
            assert await anext(stdout.lines(encoding=encoding)) == "a\u0a41\u4e00\u0a41"
            # A new iterator decodes afresh, without the byte order mark: name the order.
            if encoding in ("utf-16", "utf-32"):
                big = data.startswith((codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE))
                encoding += "-be" if big else "-le"
            rest = [line async for line in stdout.lines(encoding=encoding)]
    assert rest == ["b\u4e2d", "c"]


async def test_a_long_line_of_multi_byte_characters() -> None:
    # 3 MB in one line: characters split across many reads, pieces joined once.
    line = "é€😀" * 330_000
    code = (
        "import sys\n"
        "line = '\\xe9\\u20ac\\U0001f600' * 330_000\n"
        "sys.stdout.buffer.write(b'before\\n' + line.encode() + b'\\r\\nafter')\n"
    )
    with anyio.fail_after(20):
        async with spawn(Command(*py(code)).stdout_piped()) as child:
            got = [text async for text in stdout_of(child).lines()]
    assert got == ["before", line, "after"]


# -- handing a stream on ------------------------------------------------------------------


async def test_handing_on_a_stream_with_buffered_bytes_is_refused() -> None:
    with anyio.fail_after(10):
        async with spawn(writer_of(b"one\ntwo\n")) as child:
            stdout = stdout_of(child)
            assert await anext(stdout.lines()) == "one"
            with pytest.raises(ValueError, match="4 bytes already received"):
                await spawn(Command("cat").stdin(stdout).stdout_piped())
            # Still ours, and nothing lost.
            assert await stdout.read_all() == b"two\n"


# -- everything mixed ---------------------------------------------------------------------

PIECES = [b"a", b"bc", b"\n", b"\r\n", b"\r", "é".encode(), "😀".encode(), b"\xff", b"x" * 3000]


def expected_line(data: bytes, position: int) -> tuple[str, int]:
    """The line ``lines(errors="surrogateescape")`` yields at ``position``, and where the
    next one starts."""
    newline = data.find(b"\n", position)
    end = len(data) if newline < 0 else newline + 1
    text = data[position : end if newline < 0 else newline].decode("utf-8", "surrogateescape")
    return (text[:-1] if text.endswith("\r") else text), end


async def feed_in_slices(stdin: PipeSendStream, data: bytes) -> None:
    for start in range(0, len(data), 700):
        await stdin.send(data[start : start + 700])
        await checkpoint()
    await stdin.aclose()


async def random_mix(seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(50, 300)))
    async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
        assert child.stdin is not None
        stdout = stdout_of(child)
        position = 0
        lines = stdout.lines(errors="surrogateescape")
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed_in_slices, child.stdin, data)
            while position < len(data):
                step = rng.choice(["receive", "line", "line", "new", "cancel", "limit"])
                if step == "receive":
                    got = await stdout.receive(rng.choice([1, 3, 65536]))
                    assert data[position : position + len(got)] == got
                    position += len(got)
                elif step == "limit":
                    partial: bytes | str = b""
                    try:
                        got = await stdout.read_all(max_bytes=rng.choice([0, 50]))
                    except OutputLimitExceeded as exc:
                        partial = exc.partial
                    else:
                        assert got == data[position:]
                        position = len(data)
                    assert isinstance(partial, bytes)
                    assert data[position:].startswith(partial)
                else:
                    if step == "new":
                        lines = stdout.lines(errors="surrogateescape")
                    with anyio.CancelScope() as scope:
                        if step == "cancel":
                            scope.deadline = anyio.current_time() + rng.choice([0, 1e-3])
                        line = await anext(lines)
                        text, position_after = expected_line(data, position)
                        assert line == text
                        position = position_after
            assert await stdout.read_all() == b""


async def test_random_mixes_of_readers_lose_nothing() -> None:
    # Data through cat in slices, read by a random mix of receive(), lines() (new or
    # continued, cancelled at once or after a while) and read_all() with a limit:
    # together they return the data, each piece once, in order.
    with anyio.fail_after(30):
        for seed in range(8):
            await random_mix(seed)
