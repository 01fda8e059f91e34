"""Byte streams over the parent's ends of a child's pipes.

The fds are non-blocking in the parent only: each pipe end is its own open file
description, so the child's ends keep the blocking mode programs expect. Readiness comes
from :func:`anyio.wait_readable`/:func:`anyio.wait_writable`, so the same code runs on every
anyio backend.

Bytes received but not yet handed to the caller (what ``lines()`` read past the line it
returned, what a failed or cancelled ``read_all()`` had gathered) stay in the stream's own
buffer, and every reading method takes from that buffer before it reads the pipe: whichever
method comes next, and however the previous one ended, no byte is lost or seen twice.
"""

from __future__ import annotations

import codecs
import operator
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import SupportsIndex

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._os.pipes import grow_pipe, set_blocking
from ._os.waiters.base import close_watched_fd
from ._taskgroups import unwrap_single

__all__ = ["OutputLimitExceeded", "PipeReceiveStream", "PipeSendStream", "communicate"]

_READ_SIZE = 65536
#: Immediate reads or writes in a row before a stream yields to other tasks anyway.
_YIELD_EVERY = 16
#: The default pipe capacity: a read this large means the writer is outpacing us.
_PIPE_FULL = 65536
#: A line's size from its size without the (one-byte) newline, at C speed.
_plus_one = (1).__add__
#: The codecs that pick their byte order from a byte order mark: lines() looks for the
#: newline of the order the data's mark announces.
_BOM_CODECS = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}


class OutputLimitExceeded(Exception):
    """Raised when a stream yields more than a limit given to ``read_all()`` or ``lines()``.

    Nothing is consumed by the call that raises it: the stream still holds everything that
    call received, so the next read starts where that call started (``lines()`` asked for
    another line skips the over-long one first, see :meth:`PipeReceiveStream.lines`).
    :attr:`partial` is a copy of what had arrived: for ``read_all()`` the bytes (more than
    :attr:`limit`); for ``lines()`` the start of the over-long line, decoded, without a line
    ending (more than :attr:`limit` characters).
    """

    def __init__(self, limit: int, partial: bytes | str) -> None:
        unit = "bytes" if isinstance(partial, bytes) else "characters"
        super().__init__(f"more than {limit} {unit}")
        self.limit = limit
        self.partial = partial


def _check_max_bytes(max_bytes: object) -> int:
    """``receive()``'s size, as anyio's own streams check it: a positive int."""
    # A bool is an int to Python, but never meant as a size.
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, SupportsIndex):
        raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
    size = operator.index(max_bytes)
    if size < 1:
        raise ValueError("max_bytes must be a positive integer")
    return size


def _check_limit(name: str, limit: object) -> int | None:
    """A limit of ``read_all()`` or ``lines()``: ``None`` or an int >= 0."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, SupportsIndex):
        raise TypeError(f"{name} must be an int or None, not {type(limit).__name__}")
    value = operator.index(limit)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


class _PipeEnd:
    """What both directions share: the fd, closing, and hand-over to another child."""

    _fd: int
    #: A task is reading (or, in expect(), matching).
    _busy: bool
    #: A task is writing.
    _sending: bool
    #: Set when :meth:`Child.wait` closed the stream on the user's behalf.
    _broken: bool
    #: The pipe was enlarged once it proved busy.
    _grown: bool
    #: Transfers since this stream last yielded to the scheduler.
    _unyielded: int
    #: Received but not yet consumed; every reading method takes from here first.
    _buffer: bytearray
    #: Bytes consumed so far. A lines() iterator keeps what it learnt about the buffer
    #: (how far it holds no newline, the decoded start of a line) only while this is
    #: unchanged, that is while no other reader took from the buffer.
    _consumed: int

    def _init(self, fd: int) -> None:
        self._fd = fd
        self._busy = False
        self._sending = False
        self._broken = False
        self._grown = False
        self._unyielded = 0
        self._buffer = bytearray()
        self._consumed = 0

    async def _receive(self, max_bytes: int) -> bytes:
        """``receive()`` of a pipe or a terminal: the buffer first, one reader at a time, a
        pipe grown once it proves busy, a yield to the scheduler every few immediate reads.
        """
        max_bytes = _check_max_bytes(max_bytes)
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        if self._buffer:
            data = self._take(max_bytes)
            # Shielded: the data has left the buffer and must reach the caller.
            await self._after_transfer(False)
            return data
        self._busy = True
        try:
            data, waited = await self._read_some(max_bytes)
            self._grow_if_full(data)
        finally:
            self._busy = False
        self._consumed += len(data)
        await self._after_transfer(waited)
        return data

    def _take(self, size: int) -> bytes:
        """Consume and return the buffer's first ``size`` bytes (all of it if fewer)."""
        buffer = self._buffer
        if size >= len(buffer):
            data = bytes(buffer)
            buffer.clear()  # frees the memory, unlike deleting a slice
        else:
            data = bytes(buffer[:size])
            del buffer[:size]  # O(1) at the front of a bytearray
        self._consumed += len(data)
        return data

    def _drop(self, size: int) -> None:
        """Consume the buffer's first ``size`` bytes without copying them."""
        if size >= len(self._buffer):
            size = len(self._buffer)
            self._buffer.clear()
        else:
            del self._buffer[:size]
        self._consumed += size

    async def _fill(self, chunks: list[bytes] | None = None) -> None:
        """Read what the pipe holds onto the end of the buffer (or of ``chunks``), waiting
        until something arrives.

        The caller holds ``_busy``. Cancellation loses nothing: the data is stored before
        the next await. Every few reads that did not wait it passes a checkpoint, so a
        child flooding the pipe can neither starve other tasks nor hold off a
        cancellation. Raises as :meth:`_read_some` does.
        """
        data, waited = await self._read_some(_READ_SIZE)
        self._grow_if_full(data)
        if chunks is None:
            self._buffer += data
        else:
            chunks.append(data)
        if waited:
            self._unyielded = 0
            return
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await checkpoint()

    def _grow_if_full(self, data: bytes) -> None:
        if len(data) >= _PIPE_FULL and not self._grown:
            self._grown = True
            grow_pipe(self._fd)

    async def _send(self, item: bytes) -> None:
        """``send()`` of a pipe or a terminal: one writer at a time, all of ``item``, a
        yield to the scheduler every few immediate writes."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        await checkpoint_if_cancelled()
        self._sending = True
        try:
            waited = await self._write_all(item)
        finally:
            self._sending = False
        await self._after_transfer(waited)

    async def _read_some(self, max_bytes: int) -> tuple[bytes, bool]:
        """One read, waiting until data arrive; ``(data, whether it had to wait)``.

        Raises :class:`anyio.EndOfStream` at end of file, ``ClosedResourceError`` once
        closed (also while waiting), and what :meth:`_read_error` makes of an OS error.
        """
        waited = False
        while (data := self._read_now(max_bytes)) is None:
            await anyio.wait_readable(self._fd)
            waited = True
        return data, waited

    def _read_now(self, max_bytes: int) -> bytes | None:
        """One read that does not wait: the data, or ``None`` when none are there yet.

        Raises as :meth:`_read_some` does.
        """
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        try:
            data = os.read(fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._read_error(exc) from exc
        if not data:
            raise anyio.EndOfStream
        return data

    def _read_error(self, exc: OSError) -> Exception:
        return anyio.BrokenResourceError()

    async def _write_all(self, item: bytes) -> bool:
        """Write all of ``item``, waiting while the pipe is full; whether it had to wait.

        Raises what :meth:`_closed_error` gives once closed (also while waiting), and
        ``BrokenResourceError`` when the reader is gone (EPIPE).
        """
        view = memoryview(item).cast("B")
        waited = False
        while view:
            fd = self._fd
            if fd < 0:
                raise self._closed_error()
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                if not self._grown:
                    # The reader is slower than we write: a bigger pipe means fewer
                    # wake-ups on both sides. Retry before waiting.
                    self._grown = True
                    grow_pipe(fd)
                    continue
                try:
                    await anyio.wait_writable(fd)
                except anyio.ClosedResourceError:
                    raise self._closed_error() from None
                waited = True
                continue
            except OSError as exc:  # EPIPE: the reader is gone
                raise anyio.BrokenResourceError from exc
            view = view[written:]
        return waited

    def _closed_error(self) -> Exception:
        if self._broken:
            return anyio.BrokenResourceError("stdin was closed by Child.wait()")
        return anyio.ClosedResourceError()

    async def _after_transfer(self, waited: bool) -> None:
        """Let other tasks run after a read or write that did not have to wait.

        Every call already checked for cancellation on entry. Yielding to the scheduler
        after each immediate transfer would cost as much as the transfer itself when a
        child floods a pipe (a fifth of the throughput); once every few calls keeps
        another task's wait short (well under a millisecond) at a fraction of the cost.
        """
        if waited:
            self._unyielded = 0
            return
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await cancel_shielded_checkpoint()

    def fileno(self) -> int:
        """The parent's fd; ``-1`` once closed."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _close(self, *, broken: bool = False) -> None:
        # Recorded even when already closed: once the user or the block closes a stream
        # that wait() had closed, later use reports ClosedResourceError.
        self._broken = broken
        self._drop(len(self._buffer))
        fd = self._fd
        if fd >= 0:
            # Mark first, so a task woken by notify_closing sees the stream as closed.
            self._fd = -1
            close_watched_fd(fd)

    def _fd_for_child(self) -> int:
        """Hand this pipe end to a child about to be spawned, as one of its stdio fds.

        The child shares our open file description, so it would inherit O_NONBLOCK and
        fail with EAGAIN where it expects to block (trio #1707): switch it back first.
        Bytes already in our buffer would never reach that child, so a stream holding
        some is refused rather than silently cut short.
        """
        if self._fd < 0:
            raise anyio.ClosedResourceError
        if self._buffer:
            raise ValueError(
                f"the stream holds {len(self._buffer)} bytes already received (read ahead "
                "by lines(), or left by an expect() or a read_all() that failed) that the "
                "new child would never see; read them first"
            )
        set_blocking(self._fd, True)
        return self._fd

    def _handed_over(self) -> None:
        """The child now owns the pipe end; our copy is closed."""
        self._close()

    def _not_handed_over(self) -> None:
        """The spawn failed; the stream goes back to non-blocking use."""
        if self._fd >= 0:
            set_blocking(self._fd, False)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            self._fd = -1
            os.close(fd)


class PipeReceiveStream(_PipeEnd, ByteReceiveStream):
    """The read end of a child's stdout or stderr pipe.

    :meth:`receive`, :meth:`read_all` and :meth:`lines` can be mixed freely, one at a time:
    what one of them received but did not return stays in the stream, and the next one
    starts there. :meth:`lines` reads ahead of the line it returns, and a
    :meth:`read_all` that fails or is cancelled keeps what it had gathered; neither loses
    a byte.
    """

    def __init__(self, fd: int) -> None:
        self._init(fd)

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Return at least one and at most ``max_bytes`` bytes, waiting until some arrive.

        Bytes that :meth:`lines` read ahead (or a failed :meth:`read_all` left) come first,
        without reading the pipe. Raises :class:`ValueError` if ``max_bytes`` is below 1
        and :class:`TypeError` if it is not an int (both before anything is read, as
        anyio's own streams do), :class:`anyio.EndOfStream`
        once the child (and everything else holding the pipe, such as a grandchild) has
        closed its end and nothing is left, :class:`anyio.ClosedResourceError` if this end
        was closed, :class:`anyio.BusyResourceError` if another task is already reading.

        **Cancellation:** safe. No data is lost: bytes only leave the stream when they are
        returned. Every call checks for cancellation; one that finds data at once
        yields to other tasks only every few calls, so reading a flood is not slowed down
        by the scheduler.
        """
        return await self._receive(max_bytes)

    async def aclose(self) -> None:
        """Close our end; a task blocked in :meth:`receive` gets ``ClosedResourceError``.
        Bytes still buffered are dropped."""
        self._close()
        await checkpoint()

    async def read_all(self, max_bytes: int | None = None) -> bytes:
        """Read until end of stream and return everything not consumed yet, starting with
        what :meth:`lines` read ahead (after a ``break``, the rest of the stream).

        Raises :class:`OutputLimitExceeded` as soon as more than ``max_bytes`` (an int
        >= 0, or ``None`` for no limit) have arrived; it consumes nothing, so its
        :attr:`~OutputLimitExceeded.partial` is a copy of those bytes, which the next read
        returns again. Raises :class:`anyio.BusyResourceError` if another task is reading.

        **Cancellation:** nothing is lost: the bytes received so far stay in the stream
        for the next read.
        """
        limit = _check_limit("max_bytes", max_bytes)
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        self._busy = True
        # New data go to a list (joined once, at the end) rather than onto the buffer,
        # unless the call ends otherwise: then they join the buffer for the next read.
        chunks: list[bytes] = []
        size = len(self._buffer)
        try:
            while limit is None or size <= limit:
                try:
                    await self._fill(chunks)
                except anyio.EndOfStream:
                    break
                size += len(chunks[-1])
            else:
                self._buffer += b"".join(chunks)
                chunks.clear()
                raise OutputLimitExceeded(limit, bytes(self._buffer))
            if self._buffer:
                chunks.insert(0, bytes(self._buffer))
                self._buffer.clear()
            data = b"".join(chunks)
            chunks.clear()
            self._consumed += len(data)
            return data
        finally:
            if chunks and self._fd >= 0:  # (closed meanwhile: the buffer is dropped)
                self._buffer += b"".join(chunks)
            self._busy = False

    def lines(
        self,
        *,
        encoding: str = "utf-8",
        errors: str = "strict",
        max_line_length: int | None = None,
    ) -> AsyncIterator[str]:
        """Iterate over decoded lines, without their line endings (``\\n`` or ``\\r\\n``).

        A last line without a newline is yielded too. Lines are found in the bytes, so the
        iterator never holds data of its own: it reads ahead into the stream's buffer and
        consumes a line's bytes only when it yields that line. Hence, after a ``break``
        (or an abandoned iterator), another ``lines()`` resumes at the next line,
        :meth:`read_all` returns the rest of the stream and :meth:`receive` the bytes that
        follow the last line yielded, including an incomplete line and a character whose
        bytes are split across reads. Each new ``lines()`` decodes afresh from there.
        Time and memory are linear in the length of a line.

        ``encoding`` is any text encoding; the newline is the one it encodes (UTF-16 and
        UTF-32 lines are counted in code units from where the iterator starts, and their
        byte order follows the data's byte order mark, if it starts with one: a later
        ``lines()`` starts after the mark, so name the order, as in ``"utf-16-le"``).
        Unknown ``encoding`` or ``errors`` raise :class:`LookupError` at once.

        Raises :class:`OutputLimitExceeded` when a line has more than ``max_line_length``
        characters (without its ending), as soon as it has; a line that never ends is not
        buffered without bound. With ``errors="strict"``, undecodable bytes raise
        :class:`UnicodeDecodeError`. Neither error consumes the offending line: another
        reader (:meth:`receive`, :meth:`read_all`, a new ``lines()``) starts at its first
        byte, while this iterator, asked for another line, first skips the rest of it,
        without buffering it, and goes on with the line after it (unless another reader
        took data from the stream in between: then it goes on from there).
        :class:`anyio.BusyResourceError` if another task is reading the stream.

        **Cancellation:** safe. Nothing is lost: a line leaves the stream only when it is
        yielded, and a partly received line stays buffered in the stream, so iterating
        again (this iterator or a new one) resumes where it stopped. A step checks for
        cancellation whenever it has to read the pipe, and every few reads that did not
        wait lets other tasks run; a line already received comes without a checkpoint
        (as from anyio's ``BufferedByteReceiveStream.receive_until``), so that iterating
        over many short lines costs little more than over a list.
        """
        limit = _check_limit("max_line_length", max_line_length)
        newline = _newline_of(encoding)
        codecs.lookup_error(errors)  # an unknown handler fails now, not at the first line
        return _LineIterator(self, encoding, errors, newline, limit)


def _newline_of(encoding: str) -> bytes:
    """The bytes ``encoding`` writes for ``"\\n"`` (a byte order mark left out)."""
    try:
        once = "\n".encode(encoding)
        twice = "\n\n".encode(encoding)
    except UnicodeError:
        raise ValueError(f"{encoding!r} cannot encode a newline") from None
    # The difference is one newline: a codec's prefix (a byte order mark) comes only once.
    newline = twice[len(once) :]
    if not newline or not once.endswith(newline):
        raise ValueError(f"{encoding!r} encodes newlines in no fixed way; lines() needs one")
    return newline


class _LineIterator(AsyncIterator[str]):
    """A class, not an async generator, so abandoning it mid-way needs no finaliser.

    The bytes stay in the stream until their line is yielded. What the iterator keeps is
    what it learnt about them, to avoid repeating work, which makes it linear in the
    length of a line: how far the buffer holds no newline (each byte is searched once),
    the decoded text of the incomplete line (each byte is decoded once, the pieces joined
    once), and the complete lines already decoded, with their sizes in bytes. All of it
    holds only while nobody else consumes from the stream: it is dropped, and the decoder
    set back to the last line boundary, when ``_consumed`` moved since the iterator last
    took a line. Positions are counted from the start of the stream (``_consumed`` plus
    an index into the buffer), so taking a line does not shift them.
    """

    def __init__(
        self,
        stream: PipeReceiveStream,
        encoding: str,
        errors: str,
        newline: bytes,
        limit: int | None,
    ) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors)
        self._newline = newline
        self._unit = len(newline)
        # Before the first search: the newline for each byte order mark the data may
        # start with, for codecs that read the byte order from it.
        self._by_mark: dict[bytes, bytes] | None = None
        name = codecs.lookup(encoding).name
        if name in _BOM_CODECS:
            little, big = _BOM_CODECS[name]
            self._by_mark = {
                little: "\n".encode(f"{name}-le"),
                big: "\n".encode(f"{name}-be"),
            }
        self._limit = limit
        # Decode all the complete lines in the buffer at once (one decode, one split),
        # checked against the newlines found in the bytes; a codec that makes newlines
        # of other bytes (UTF-7, escapes) turns this off.
        self._batch = self._unit == 1
        # Up to here, decode one line at a time: a batch met a decoding error or an
        # over-long line, which must be raised for the right line.
        self._careful_to = 0
        self._at: int | None = None  # the stream's _consumed when all below was true
        # Decoded lines at the start of the buffer, each with its size in bytes (its
        # newline included).
        self._ready: deque[tuple[str, int]] = deque()
        self._scanned_to = 0  # the buffer holds no newline from its ready lines to here
        self._decoded_to = 0  # bytes up to here went through the decoder
        self._pieces: list[str] = []  # the incomplete line after the ready ones, decoded
        self._chars = 0  # the characters in _pieces
        self._state = self._decoder.getstate()  # the decoder at the incomplete line's start
        self._skipping = False  # the line at the buffer's start raised: skip it first

    def __aiter__(self) -> _LineIterator:
        return self

    async def __anext__(self) -> str:
        stream = self._stream
        if stream._busy:
            raise anyio.BusyResourceError("reading from")
        if self._at == stream._consumed and self._ready:
            # The usual case: the line was decoded with the others that came in the same
            # read. No await at all, so that many short lines cost little more than a
            # list would; its bytes leave the stream now.
            line, size = self._ready.popleft()
            del stream._buffer[:size]  # O(1) at the front of a bytearray
            self._at = stream._consumed = stream._consumed + size
            return line
        await checkpoint_if_cancelled()
        stream._busy = True
        try:
            if self._at != stream._consumed:
                self._forget()
            if self._skipping:
                await self._skip_line()
            return await self._next_line()
        finally:
            stream._busy = False

    def _pop(self) -> str:
        """Consume the first ready line's bytes; the line."""
        stream = self._stream
        line, size = self._ready.popleft()
        stream._drop(size)
        self._at = stream._consumed
        return line

    def _forget(self) -> None:
        """Start afresh at the buffer's start (another reader took from the stream, or a
        line raised)."""
        stream = self._stream
        self._at = stream._consumed
        self._ready.clear()
        self._scanned_to = self._decoded_to = stream._consumed
        self._pieces = []
        self._chars = 0
        # Back to the last line boundary, with any byte order it has read (UTF-16).
        self._decoder.setstate(self._state)
        self._skipping = False

    def _failed(self) -> None:
        """The line at the buffer's start raised: it stays there for other readers, and
        this iterator skips it when asked for another line."""
        self._forget()
        self._skipping = True

    async def _next_line(self) -> str:
        """Read until a line is complete (or the stream ends); decode and consume it.

        Every read lands in the stream's buffer before the next await, so a cancellation
        loses nothing, and the next call takes up the search and the decoding where this
        one stopped.
        """
        stream = self._stream
        while not self._take_lines():
            self._decode_pending()
            try:
                await stream._fill()
            except anyio.EndOfStream:
                if not stream._buffer:
                    raise StopAsyncIteration from None
                self._complete(len(stream._buffer), final=True)
                break
        return self._pop()

    def _search(self) -> int:
        """Where the first line in the buffer ends (the index after its newline), or -1.

        Searches only what was not searched before. The newline must start at a whole
        number of code units from the line's start (for the one-byte newline of every
        ASCII-compatible encoding, anywhere: no multi-byte character contains that byte).
        """
        stream = self._stream
        buffer = stream._buffer
        start = self._scanned_to - stream._consumed
        unit = self._unit
        if unit == 1:
            index = buffer.find(self._newline, start)
            if index >= 0:
                return index + 1
            self._scanned_to = stream._consumed + len(buffer)
            return -1
        if self._by_mark is not None:
            if len(buffer) < unit:
                return -1
            self._newline = self._by_mark.get(bytes(buffer[:unit]), self._newline)
            self._by_mark = None
        while (index := buffer.find(self._newline, start)) >= 0:
            if index % unit == 0:
                return index + unit
            start = index + 1
        self._scanned_to = stream._consumed + len(buffer) - len(buffer) % unit
        return -1

    def _take_lines(self) -> bool:
        """Decode the complete lines at the start of the buffer into ``_ready``; whether
        there was one. Raises for the first line, as it is to be yielded next."""
        end = self._search()
        if end < 0:
            return False
        stream = self._stream
        if self._batch and stream._consumed + end > self._careful_to:
            last = stream._buffer.rfind(self._newline) + 1
            if last > end and self._decode_batch(end, last):
                return True
        self._complete(end, final=False)
        return True

    def _decode_batch(self, end: int, last: int) -> bool:
        """Decode the lines that end between ``end`` (the first) and ``last``, at once;
        whether that worked (if not, the decoder is as it was and nothing changed)."""
        stream = self._stream
        buffer = stream._buffer
        base = stream._consumed
        before = self._decoder.getstate()
        try:
            text = self._decoder.decode(buffer[self._decoded_to - base : last])
        except UnicodeError:
            self._decoder.setstate(before)
            self._careful_to = base + last
            return False
        if self._pieces:
            # The start of the first line came earlier: one join for all of it.
            text = "".join([*self._pieces, text])
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        # The sizes in bytes: the first line's is known, the others' come from the bytes
        # (which also tells whether the text has as many lines).
        sizes = list(map(len, bytes(buffer[end:last]).split(self._newline)))
        if len(lines) != len(sizes) + 1 or lines.pop():
            # Newlines in the text that are not in the bytes: one line at a time.
            self._decoder.setstate(before)
            self._batch = False
            return False
        if self._limit is not None and max(map(len, lines)) > self._limit:
            self._decoder.setstate(before)
            self._careful_to = base + last
            return False
        sizes.pop()  # the empty piece after the last newline
        self._ready.append((lines[0], end))
        self._ready.extend(zip(lines[1:], map(_plus_one, sizes), strict=True))
        self._line_done(base + last)
        return True

    def _complete(self, end: int, *, final: bool) -> None:
        """Decode the rest of the buffer's first line, which ends at ``end``, into
        ``_ready``."""
        stream = self._stream
        buffer = stream._buffer
        try:
            last = self._decoder.decode(buffer[self._decoded_to - stream._consumed : end], final)
        except UnicodeError:  # also a codec's own complaint
            self._failed()
            raise
        if last.endswith("\n"):
            last = last[:-1]
        pieces = self._pieces
        if pieces:
            pieces.append(last)
            # The "\r" of a CRLF may end an earlier piece, when the two came apart.
            for index in range(len(pieces) - 1, -1, -1):
                if pieces[index]:
                    if pieces[index].endswith("\r"):
                        pieces[index] = pieces[index][:-1]
                    break
            line = "".join(pieces)
        elif last.endswith("\r"):
            line = last[:-1]
        else:
            line = last
        if self._limit is not None and len(line) > self._limit:
            self._over_limit(line)
        self._ready.append((line, end))
        self._line_done(stream._consumed + end)

    def _line_done(self, position: int) -> None:
        """Lines up to ``position`` are decoded and ready; a new line starts there."""
        self._scanned_to = self._decoded_to = position
        self._pieces = []
        self._chars = 0
        self._state = self._decoder.getstate()

    def _decode_pending(self) -> None:
        """Decode what arrived of a line that has no newline yet; raise once it is longer
        than the limit (a trailing ``\\r`` may be the start of its ending)."""
        stream = self._stream
        buffer = stream._buffer
        start = self._decoded_to - stream._consumed
        if len(buffer) > start:
            try:
                text = self._decoder.decode(buffer[start:])
            except UnicodeError:  # also a codec's own complaint
                self._failed()
                raise
            self._decoded_to = stream._consumed + len(buffer)
            if text:
                self._pieces.append(text)
                self._chars += len(text)
        limit = self._limit
        chars = self._chars
        # Over the limit, unless by a "\r" that a "\n" may follow.
        if (
            limit is not None
            and chars > limit
            and (chars > limit + 1 or not self._pieces[-1].endswith("\r"))
        ):
            self._over_limit("".join(self._pieces))

    def _over_limit(self, text: str) -> None:
        assert self._limit is not None
        self._failed()
        raise OutputLimitExceeded(self._limit, text)

    async def _skip_line(self) -> None:
        """Consume up to the end of the line at the buffer's start, reading as needed but
        never holding more than a read."""
        stream = self._stream
        while (end := self._search()) < 0:
            # No newline in what was searched: drop it now, so a line that never ends
            # is not buffered. Cancelled later, we go on skipping from here.
            self._skip(self._scanned_to - stream._consumed)
            try:
                await stream._fill()
            except anyio.EndOfStream:
                break
        else:
            self._skip(end)
        self._skipping = False

    def _skip(self, size: int) -> None:
        stream = self._stream
        stream._drop(size)
        self._at = self._scanned_to = self._decoded_to = stream._consumed


class PipeSendStream(_PipeEnd, ByteSendStream):
    """The write end of a child's stdin pipe."""

    def __init__(self, fd: int) -> None:
        self._init(fd)

    async def send(self, item: bytes) -> None:
        """Write all of ``item``, waiting while the pipe is full.

        Raises :class:`anyio.BrokenResourceError` when the child no longer reads (it exited
        or closed stdin) or after :meth:`Child.wait` closed stdin,
        :class:`anyio.ClosedResourceError` after this end was closed by :meth:`aclose` or by
        the block, :class:`anyio.BusyResourceError` if another task is sending.

        **Cancellation:** part of ``item`` may have been written when it is cancelled.
        """
        await self._send(item)

    async def send_eof(self) -> None:
        """Close our end so the child reads end-of-file; same as :meth:`aclose`."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close our end; the child reads end-of-file."""
        self._close()
        await checkpoint()


async def communicate(
    stdin: PipeSendStream | None,
    stdout: PipeReceiveStream | None,
    stderr: PipeReceiveStream | None,
    input: bytes | None,
) -> tuple[bytes, bytes]:
    """Write ``input`` to ``stdin`` (then close it) while reading ``stdout`` and ``stderr``
    to end-of-file, all at once, so a child filling one pipe while we wait on another
    cannot deadlock; ``(stdout bytes, stderr bytes)``, ``b""`` for a missing stream.
    What an earlier ``lines()`` read ahead is part of the result (``read_all()`` starts
    with it)."""
    results: dict[str, bytes] = {}

    async def feed(stream: PipeSendStream) -> None:
        try:
            if input:
                await stream.send(input)
        except anyio.BrokenResourceError:
            pass  # the child stopped reading; what it does with less is its business
        finally:
            stream._close()

    async def drain(name: str, stream: PipeReceiveStream) -> None:
        results[name] = await stream.read_all()

    for stream in (stdout, stderr):
        # Refused before anything starts, as receive() refuses: a half-fed child otherwise.
        if stream is not None and stream.closed:
            raise anyio.ClosedResourceError
        if stream is not None and stream._busy:
            raise anyio.BusyResourceError("reading from")
    with unwrap_single():
        async with anyio.create_task_group() as tg:
            if stdin is not None and not stdin.closed:
                tg.start_soon(feed, stdin)
            if stdout is not None:
                tg.start_soon(drain, "stdout", stdout)
            if stderr is not None:
                tg.start_soon(drain, "stderr", stderr)
    return results.get("stdout", b""), results.get("stderr", b"")
