"""Pseudo-terminals (POSIX): the child's controlling terminal, and our side of it.

The child runs in a session of its own with the terminal's slave side as its controlling
terminal, so the line discipline does for it what a terminal window does: echo, line
editing, Ctrl-C as SIGINT to the foreground process group, SIGWINCH on resize, SIGHUP when
the terminal goes away. We keep the master side as one bidirectional byte stream.

Making the terminal and starting the child on it is OS work, in ``_os/pty.py``; here are
the stream over our side and the drains of ``Command.output()``/``status()``.
"""

from __future__ import annotations

import codecs
import math
import re
from typing import AnyStr

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._os.pty import check_size, eof_char, get_size, is_hangup, set_size
from ._streams import READ_SIZE, YIELD_EVERY, PipeEnd, close_now

__all__ = ["PtyStream"]

# How much of the unmatched output an expect() error quotes.
_QUOTED_TAIL = 200
# expect(): the least new output worth a search while reads keep returning data at once.
_SEARCH_STEP = 65536


class PtyStream(PipeEnd, ByteStream):
    """Our side (the master) of a child's pseudo-terminal: one bidirectional byte stream.

    What is sent is typed at the terminal (the line discipline echoes it and turns Ctrl-C
    into SIGINT, unless the program changed the terminal's modes); what is received is what
    the program wrote, with ``\\n`` shown as ``\\r\\n`` as a terminal does.

    Once the program and everything else holding the terminal have exited,
    :meth:`receive` raises :class:`anyio.EndOfStream` (the ``EIO`` a terminal master
    reads then is not an error). Closing it hangs the terminal up: a program still running
    gets SIGHUP.
    """

    def __init__(self, fd: int) -> None:
        self._init(fd)
        self._grown = True  # a terminal's queues have a fixed size: never try to grow them
        # Received but not yet returned: what expect() did not consume.
        self._buffer = bytearray()
        self._searched = -1  # expect(): the buffer's length at its last search

    # -- reading ---------------------------------------------------------------------------

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        """Return at least one byte of the program's output, waiting until some arrive.

        Data an :meth:`expect` call received but did not consume comes first. Raises
        :class:`anyio.EndOfStream` once the terminal is hung up on the other side.

        **Cancellation:** safe; no data is lost.
        """
        # The shared receive serves the buffer first and checks max_bytes as anyio does.
        return await self._receive(max_bytes)

    def _read_error(self, exc: OSError) -> Exception:
        # Linux reads EIO from a master whose slave side is closed everywhere: that is the
        # terminal's end of file, not an error.
        return anyio.EndOfStream() if is_hangup(exc) else anyio.BrokenResourceError()

    async def expect(
        self,
        pattern: AnyStr | re.Pattern[AnyStr],
        *,
        timeout: float | None = None,
        encoding: str = "utf-8",
    ) -> re.Match[AnyStr]:
        """Wait until the program's output matches ``pattern``; return the match.

        ``pattern`` is a regular expression (``bytes``, ``str`` or compiled). A ``str``
        pattern is matched against the output decoded with ``encoding`` (bytes that do not
        decode are kept as surrogate escapes). Output up to the end of the match is
        consumed (``match.string[:match.start()]`` is what came before it); what follows
        stays buffered for the next ``expect`` or :meth:`receive`.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass without a match, and
        :class:`anyio.EndOfStream` when the terminal is hung up first; the unmatched output
        stays buffered either way, and both messages quote its end.

        **Cancellation:** safe; nothing received is lost.
        """
        compiled: re.Pattern[AnyStr]
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, (str, bytes)):
            compiled = re.compile(pattern)
        else:
            raise TypeError(
                f"expect() takes a str or bytes pattern (or a compiled one), "
                f"not {type(pattern).__name__}"
            )
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be >= 0, not {timeout}")
        codecs.lookup(encoding)  # an unknown encoding fails now, not after the output came
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        self._busy = True
        match = None
        waited = False
        try:
            with anyio.move_on_after(timeout):
                match, waited = await self._read_until(compiled, encoding)
            if match is None:
                # The deadline passed at a checkpoint between two searches: what arrived
                # before it still counts.
                match = self._search_new(compiled, encoding)
        finally:
            self._busy = False
        if match is not None:
            if not waited:
                # Never had to wait: still let other tasks run, as a checkpoint must.
                await cancel_shielded_checkpoint()
            return match
        raise TimeoutError(
            f"{compiled.pattern!r} did not match within {timeout:g} s; "
            f"unmatched output ends with {self._tail()!r}"
        )

    async def _read_until(
        self, compiled: re.Pattern[AnyStr], encoding: str
    ) -> tuple[re.Match[AnyStr], bool]:
        """Read into the buffer until ``compiled`` matches it; ``(match, whether it waited
        or yielded)``.

        Searching the whole buffer after every read would be quadratic in the output of a
        program that writes faster than we read (megabytes before a prompt). So while reads
        return data at once, the buffer is searched again only once it has doubled (or
        grown by ``_SEARCH_STEP``): the total searched stays within a few times the output.
        It is always searched before waiting for more (the program may be waiting for us)
        and at end of file. Cancellation loses nothing: each read lands in the buffer
        before the next await.
        """
        self._searched = -1
        waited = False
        immediate = 0
        while True:
            grown = len(self._buffer) - self._searched
            due = self._searched < 0 or grown >= max(self._searched, _SEARCH_STEP)
            if due and (match := self._search_new(compiled, encoding)) is not None:
                return match, waited
            try:
                data = self._read_now(READ_SIZE)
            except anyio.EndOfStream:
                if (match := self._search_new(compiled, encoding)) is not None:
                    return match, waited
                raise anyio.EndOfStream(
                    f"the terminal was hung up before {compiled.pattern!r} matched; "
                    f"unmatched output ends with {self._tail()!r}"
                ) from None
            if data is None:
                if (match := self._search_new(compiled, encoding)) is not None:
                    return match, waited
                await anyio.wait_readable(self._fd)
                waited = True
                immediate = 0
                continue
            self._buffer += data
            immediate += 1
            if immediate == YIELD_EVERY:
                # A program writing faster than we read never makes us wait: yield now
                # and then, or nothing else runs and the timeout never fires.
                immediate = 0
                await checkpoint()
                waited = True

    def _search_new(self, compiled: re.Pattern[AnyStr], encoding: str) -> re.Match[AnyStr] | None:
        """Search the buffer if it changed since the last search."""
        if len(self._buffer) == self._searched:
            return None
        match = self._search(compiled, encoding)
        self._searched = len(self._buffer)
        return match

    def _search(self, compiled: re.Pattern[AnyStr], encoding: str) -> re.Match[AnyStr] | None:
        if isinstance(compiled.pattern, bytes):
            data = bytes(self._buffer)
            match = compiled.search(data)
            if match is not None:
                del self._buffer[: match.end()]
            return match
        # An incomplete multi-byte character at the end waits for the rest of its bytes.
        decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
        text = decoder.decode(bytes(self._buffer), final=False)
        match = compiled.search(text)
        if match is not None:
            consumed = len(text[: match.end()].encode(encoding, "surrogateescape"))
            del self._buffer[:consumed]
        return match

    def _tail(self) -> bytes:
        return bytes(self._buffer[-_QUOTED_TAIL:])

    # -- writing ---------------------------------------------------------------------------

    async def send(self, item: bytes) -> None:
        """Type ``item`` at the terminal, waiting while its input queue is full.

        Raises :class:`anyio.BrokenResourceError` when the terminal is gone, and
        :class:`anyio.ClosedResourceError` once this stream is closed.

        **Cancellation:** part of ``item`` may have been written.
        """
        await self._send(item)

    async def send_eof(self) -> None:
        """Type the terminal's end-of-file character (Ctrl-D unless changed).

        A terminal has no half-close: a program reading lines sees end-of-file when this
        comes at the start of a line (send ``b"\\n"`` first otherwise).

        **Cancellation:** the character is typed whole or not at all: a cancellation that
        interrupts the call (before it could be written, as while the terminal's input
        queue is full) leaves it untyped.
        """
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        await self.send(eof_char(fd))

    # -- the terminal ----------------------------------------------------------------------

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size; the program's foreground process group gets SIGWINCH."""
        rows, cols = check_size(rows, cols)
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        set_size(fd, rows, cols)

    @property
    def size(self) -> tuple[int, int]:
        """The terminal's size, ``(rows, cols)``."""
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        return get_size(fd)

    async def aclose(self) -> None:
        """Close our side; a program still attached gets SIGHUP, as when a terminal window
        closes.

        **Cancellation:** the terminal is closed even when the call is cancelled.
        """
        close_now(self)
        self._buffer.clear()
        await checkpoint()


# -- Command.output() and Command.status() of a command on a terminal --------------------
#
