"""Byte streams over the parent's ends of a child's pipes.

The fds are non-blocking in the parent only: each pipe end is its own open file
description, so the child's ends keep the blocking mode programs expect. Readiness comes
from :func:`anyio.wait_readable`/:func:`anyio.wait_writable`, so the same code runs on every
anyio backend.
"""

from __future__ import annotations

import codecs
import os
from collections import deque
from collections.abc import AsyncIterator

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._waiters import grow_pipe, set_blocking
from ._waiters._base import close_watched_fd

__all__ = ["OutputLimitExceeded", "PipeReceiveStream", "PipeSendStream", "communicate"]

_READ_SIZE = 65536
#: Immediate reads or writes in a row before a stream yields to other tasks anyway.
_YIELD_EVERY = 16
#: The default pipe capacity: a read this large means the writer is outpacing us.
_PIPE_FULL = 65536


class OutputLimitExceeded(Exception):
    """Raised when a stream yields more than a limit given to ``read_all()`` or ``lines()``.

    The stream stays usable: what was read so far is in :attr:`partial`.
    """

    def __init__(self, limit: int, partial: bytes | str) -> None:
        unit = "bytes" if isinstance(partial, bytes) else "characters"
        super().__init__(f"more than {limit} {unit}")
        self.limit = limit
        self.partial = partial


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

    def _init(self, fd: int) -> None:
        self._fd = fd
        self._busy = False
        self._sending = False
        self._broken = False
        self._grown = False
        self._unyielded = 0

    async def _receive(self, max_bytes: int) -> bytes:
        """``receive()`` of a pipe or a terminal: one reader at a time, a pipe grown once it
        proves busy, a yield to the scheduler every few immediate reads."""
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        self._busy = True
        try:
            data, waited = await self._read_some(max_bytes)
            if len(data) >= _PIPE_FULL and not self._grown:
                self._grown = True
                grow_pipe(self._fd)
        finally:
            self._busy = False
        await self._after_transfer(waited)
        return data

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
        fd = self._fd
        if fd >= 0:
            # Mark first, so a task woken by notify_closing sees the stream as closed.
            self._fd = -1
            close_watched_fd(fd)

    def _fd_for_child(self) -> int:
        """Hand this pipe end to a child about to be spawned, as one of its stdio fds.

        The child shares our open file description, so it would inherit O_NONBLOCK and
        fail with EAGAIN where it expects to block (trio #1707): switch it back first.
        """
        if self._fd < 0:
            raise anyio.ClosedResourceError
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
    """The read end of a child's stdout or stderr pipe."""

    def __init__(self, fd: int) -> None:
        self._init(fd)

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Return at least one byte, waiting until some arrive.

        Raises :class:`anyio.EndOfStream` once the child (and everything else holding the
        pipe, such as a grandchild) has closed its end, :class:`anyio.ClosedResourceError`
        if this end was closed, :class:`anyio.BusyResourceError` if another task is
        already receiving.

        **Cancellation:** safe. No data is lost: bytes are only taken from the pipe when
        they are returned. Every call checks for cancellation; one that finds data at once
        yields to other tasks only every few calls, so reading a flood is not slowed down
        by the scheduler.
        """
        return await self._receive(max_bytes)

    async def aclose(self) -> None:
        """Close our end; a task blocked in :meth:`receive` gets ``ClosedResourceError``."""
        self._close()
        await checkpoint()

    async def read_all(self, max_bytes: int | None = None) -> bytes:
        """Read until end of stream and return everything.

        Raises :class:`OutputLimitExceeded` (with the bytes read so far) as soon as more
        than ``max_bytes`` arrive.

        **Cancellation:** the bytes read so far are lost; the stream stays usable.
        """
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = await self.receive(_READ_SIZE)
            except anyio.EndOfStream:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise OutputLimitExceeded(max_bytes, b"".join(chunks))

    def lines(
        self,
        *,
        encoding: str = "utf-8",
        errors: str = "strict",
        max_line_length: int | None = None,
    ) -> AsyncIterator[str]:
        """Iterate over decoded lines, without their line endings (``\\n`` or ``\\r\\n``).

        A last line without a newline is yielded too. Raises :class:`OutputLimitExceeded`
        when a line grows past ``max_line_length`` characters.

        **Cancellation:** a partly received line stays buffered in the iterator, so
        iterating it again resumes where it stopped.
        """
        return _LineIterator(self, encoding, errors, max_line_length)


class _LineIterator(AsyncIterator[str]):
    """A class, not an async generator, so abandoning it mid-way needs no finaliser."""

    def __init__(
        self, stream: PipeReceiveStream, encoding: str, errors: str, limit: int | None
    ) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors)
        self._limit = limit
        self._partial = ""
        self._ready: deque[str] = deque()
        self._eof = False
        # Raised once the lines before the over-long one have been yielded.
        self._error: OutputLimitExceeded | None = None

    def __aiter__(self) -> _LineIterator:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StopAsyncIteration
            try:
                chunk = await self._stream.receive()
            except anyio.EndOfStream:
                self._eof = True
                self._take(self._decoder.decode(b"", final=True), final=True)
            else:
                self._take(self._decoder.decode(chunk), final=False)
        return self._ready.popleft()

    def _take(self, text: str, *, final: bool) -> None:
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        if final and self._partial:
            pieces.append(self._partial)
            self._partial = ""
        limit = self._limit
        for line in pieces:
            if line.endswith("\r"):
                line = line[:-1]
            if limit is not None and len(line) > limit:
                self._fail(limit, line)
                return
            self._ready.append(line)
        if limit is not None and len(self._partial) > limit:
            self._fail(limit, self._partial)

    def _fail(self, limit: int, line: str) -> None:
        self._error = OutputLimitExceeded(limit, line)
        self._partial = ""


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
    cannot deadlock; ``(stdout bytes, stderr bytes)``, ``b""`` for a missing stream."""
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

    async with anyio.create_task_group() as tg:
        if stdin is not None and not stdin.closed:
            tg.start_soon(feed, stdin)
        if stdout is not None:
            tg.start_soon(drain, "stdout", stdout)
        if stderr is not None:
            tg.start_soon(drain, "stderr", stderr)
    return results.get("stdout", b""), results.get("stderr", b"")
