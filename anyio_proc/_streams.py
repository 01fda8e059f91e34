"""Byte streams over the parent's ends of a child's pipes.

The fds are non-blocking in the parent only: each pipe end is its own open file
description, so the child's ends keep the blocking mode programs expect. Readiness comes
from :func:`anyio.wait_readable`/:func:`anyio.wait_writable`, so the same code runs on every
anyio backend.

Bytes received but not yet handed to the caller (what ``lines()`` read past the line it
returned, what a failed or cancelled ``read_all()`` had gathered) stay in the stream's own
buffer, and every reading method takes from that buffer before it reads the pipe: whichever
method comes next, and however the previous one ended, no byte is lost or seen twice.
Where lines end and what they say is :mod:`._lines`' business.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._limits import OutputLimitExceeded, check_limit, check_max_bytes
from ._lines import LineDecoder
from ._os.pipes import grow_pipe, set_blocking
from ._os.waiters.base import close_watched_fd

__all__ = [
    "READ_SIZE",
    "YIELD_EVERY",
    "PipeEnd",
    "PipeReceiveStream",
    "PipeSendStream",
    "being_read",
    "close_now",
    "fd_for_child",
    "handed_over",
    "not_handed_over",
]

#: What one read asks for (and receive()'s default): a default pipe's whole capacity.
READ_SIZE = 65536
#: Immediate reads or writes in a row before a stream yields to other tasks anyway.
YIELD_EVERY = 16
#: The default pipe capacity: a read this large means the writer is outpacing us.
_PIPE_FULL = 65536


class PipeEnd:
    """What both directions (and the terminal) share: the fd, the buffer, pacing, closing.

    The streams (the two below, :class:`PtyStream`) build their public methods on the
    underscore methods here; other modules close or hand on a stream with the functions
    that follow the class.
    """

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
        max_bytes = check_max_bytes(max_bytes)
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        if self._buffer:
            data = self._take(max_bytes)
            # Shielded: the data has left the buffer and must reach the caller.
            if self._yield_due(False):
                await cancel_shielded_checkpoint()
            return data
        self._busy = True
        try:
            data, waited = await self._read_some(max_bytes)
            self._grow_if_full(data)
        finally:
            self._busy = False
        self._consumed += len(data)
        if self._yield_due(waited):
            await cancel_shielded_checkpoint()
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
        the next await, so the checkpoint that paces a flood may be a cancellable one.
        Raises as :meth:`_read_some` does.
        """
        data, waited = await self._read_some(READ_SIZE)
        self._grow_if_full(data)
        if chunks is None:
            self._buffer += data
        else:
            chunks.append(data)
        if self._yield_due(waited):
            await checkpoint()

    def _yield_due(self, waited: bool) -> bool:
        """Count a read or write (``waited``: whether it had to wait for the pipe); whether
        the stream is due to let other tasks run.

        A child flooding a pipe never makes us wait, so without a checkpoint now and then
        it would starve other tasks and hold off a cancellation. Yielding after every
        immediate transfer would cost as much as the transfer itself (a fifth of the
        throughput); once every :data:`YIELD_EVERY` keeps another task's wait short (well
        under a millisecond) at a fraction of the cost. The caller picks the checkpoint:
        shielded once the data has left the buffer, as it must then reach the caller.
        """
        if waited:
            self._unyielded = 0
            return False
        self._unyielded += 1
        if self._unyielded < YIELD_EVERY:
            return False
        self._unyielded = 0
        return True

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
        if self._yield_due(waited):
            await cancel_shielded_checkpoint()

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

    def fileno(self) -> int:
        """The parent's fd; ``-1`` once closed."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            self._fd = -1
            os.close(fd)


# -- what other modules do to a stream: close it for the user, hand it to a child ---------


def close_now(end: PipeEnd, *, broken: bool = False) -> None:
    """Close ``end`` without a checkpoint, dropping what its buffer holds: the closing the
    package does on the user's behalf (and the end of every ``aclose()``). ``broken``:
    :meth:`Child.wait` closed it, so a later ``send()`` raises ``BrokenResourceError``."""
    # Recorded even when already closed: once the user or the block closes a stream
    # that wait() had closed, later use reports ClosedResourceError.
    end._broken = broken
    end._drop(len(end._buffer))
    fd = end._fd
    if fd >= 0:
        # Mark first, so a task woken by notify_closing sees the stream as closed.
        end._fd = -1
        close_watched_fd(fd)


def being_read(end: PipeEnd) -> bool:
    """Whether a task is reading ``end`` (a read now would raise ``BusyResourceError``)."""
    return end._busy


def fd_for_child(end: PipeEnd) -> int:
    """Hand the pipe end to a child about to be spawned, as one of its stdio fds.

    The child shares our open file description, so it would inherit O_NONBLOCK and
    fail with EAGAIN where it expects to block (trio #1707): switch it back first.
    Bytes already in our buffer would never reach that child, so a stream holding
    some is refused rather than silently cut short. Follow with :func:`handed_over` or
    :func:`not_handed_over`.
    """
    if end._fd < 0:
        raise anyio.ClosedResourceError
    if end._buffer:
        raise ValueError(
            f"the stream holds {len(end._buffer)} bytes already received (read ahead "
            "by lines(), or left by an expect() or a read_all() that failed) that the "
            "new child would never see; read them first"
        )
    set_blocking(end._fd, True)
    return end._fd


def handed_over(end: PipeEnd) -> None:
    """The child now owns the pipe end given by :func:`fd_for_child`; our copy is closed."""
    close_now(end)


def not_handed_over(end: PipeEnd) -> None:
    """The spawn failed; the stream given by :func:`fd_for_child` goes back to
    non-blocking use."""
    if end._fd >= 0:
        set_blocking(end._fd, False)


class PipeReceiveStream(PipeEnd, ByteReceiveStream):
    """The read end of a child's stdout or stderr pipe.

    :meth:`receive`, :meth:`read_all` and :meth:`lines` can be mixed freely, one at a time:
    what one of them received but did not return stays in the stream, and the next one
    starts there. :meth:`lines` reads ahead of the line it returns, and a
    :meth:`read_all` that fails or is cancelled keeps what it had gathered; neither loses
    a byte.
    """

    def __init__(self, fd: int) -> None:
        self._init(fd)

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
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
        Bytes still buffered are dropped.

        **Cancellation:** the end is closed even when the call is cancelled.
        """
        close_now(self)
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
        limit = check_limit("max_bytes", max_bytes)
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
        limit = check_limit("max_line_length", max_line_length)
        return _LineIterator(self, LineDecoder(self._buffer, encoding, errors, limit))


class _LineIterator(AsyncIterator[str]):
    """A class, not an async generator, so abandoning it mid-way needs no finaliser.

    It reads the pipe into the stream's buffer and consumes a line's bytes when it yields
    that line; its :class:`LineDecoder` finds and decodes the lines. What the decoder
    learnt holds while the stream's ``_consumed`` is where this iterator left it
    (``_at``): once another reader took from the stream, the decoder starts afresh.
    """

    def __init__(self, stream: PipeReceiveStream, lines: LineDecoder) -> None:
        self._stream = stream
        self._lines = lines
        self._ready = lines.ready  # (the same deque, one attribute away)
        self._at: int | None = None  # the stream's _consumed when the decoder was right

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
                self._at = stream._consumed
                self._lines.restart(stream._consumed)
            if self._lines.skipping:
                await self._skip_line()
            return await self._next_line()
        finally:
            stream._busy = False

    async def _next_line(self) -> str:
        """Read until a line is complete (or the stream ends); decode and consume it.

        Every read lands in the stream's buffer before the next await, so a cancellation
        loses nothing, and the next call takes up the search and the decoding where this
        one stopped.
        """
        stream = self._stream
        lines = self._lines
        while not lines.take_lines(stream._consumed):
            lines.decode_pending(stream._consumed)
            try:
                await stream._fill()
            except anyio.EndOfStream:
                if not stream._buffer:
                    raise StopAsyncIteration from None
                lines.finish(stream._consumed)
                break
        line, size = self._ready.popleft()
        stream._drop(size)
        self._at = stream._consumed
        return line

    async def _skip_line(self) -> None:
        """Consume up to the end of the line at the buffer's start, which raised, reading as
        needed but never holding more than a read."""
        stream = self._stream
        while True:
            # What holds no newline is dropped at once, so a line that never ends is not
            # buffered. Cancelled later, we go on skipping from here.
            size, found = self._lines.skip(stream._consumed)
            stream._drop(size)
            self._at = stream._consumed
            if found:
                break
            try:
                await stream._fill()
            except anyio.EndOfStream:
                break
        self._lines.skipping = False


class PipeSendStream(PipeEnd, ByteSendStream):
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
        """Close our end so the child reads end-of-file; same as :meth:`aclose`.

        **Cancellation:** as :meth:`aclose`: the end is closed even when cancelled.
        """
        await self.aclose()

    async def aclose(self) -> None:
        """Close our end; the child reads end-of-file.

        **Cancellation:** the end is closed even when the call is cancelled.
        """
        close_now(self)
        await checkpoint()
