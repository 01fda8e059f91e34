"""Finding and decoding the lines at the start of a stream's buffer, without I/O.

``PipeReceiveStream.lines()`` reads the pipe into the stream's buffer and consumes a line's
bytes when it yields that line; what those bytes say is decided here: the newline each
encoding writes, the byte order a UTF-16 or UTF-32 mark announces, ``\\r\\n``, a line that
arrives in pieces (and a character split between them), many short lines decoded at once,
and the limit on a line's length.
"""

from __future__ import annotations

import codecs
from collections import deque

from ._limits import OutputLimitExceeded

__all__ = ["LineDecoder", "newline_of"]

#: A line's size from its size without the (one-byte) newline, at C speed.
_plus_one = (1).__add__
#: The codecs that pick their byte order from a byte order mark: the newline to look for is
#: that of the order the data's mark announces.
_BOM_CODECS = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}


def newline_of(encoding: str) -> bytes:
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


class LineDecoder:
    """The lines at the start of a stream's buffer, each byte searched and decoded once.

    ``buffer`` is the stream's own buffer, which its owner appends to as it reads and
    consumes from the front; this object only reads it. Positions are counted from the
    start of the stream, so consuming shifts none of them: each method takes ``base``,
    the position of the buffer's first byte (how many bytes were consumed so far).

    What it keeps is what it learnt about the bytes, which makes it linear in the length
    of a line: how far the buffer holds no newline, the decoded text of the incomplete
    line (its pieces joined once) and the complete lines already decoded, in
    :attr:`ready`. All of it holds only while the owner consumes nothing but the lines of
    :attr:`ready`: after any other consumption, :meth:`restart` forgets it and sets the
    decoder back to the last line boundary.

    Raises :class:`LookupError` for an unknown ``encoding`` or ``errors`` handler and
    :class:`ValueError` for an encoding without a fixed newline, at construction.
    """

    def __init__(self, buffer: bytearray, encoding: str, errors: str, limit: int | None) -> None:
        newline = newline_of(encoding)
        codecs.lookup_error(errors)  # an unknown handler fails now, not at the first line
        self._buffer = buffer
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
        #: Decoded lines at the start of the buffer, each with its size in bytes (its
        #: newline included). The owner takes them from the left and consumes their bytes.
        self.ready: deque[tuple[str, int]] = deque()
        #: The line at the buffer's start raised: the owner skips it (:meth:`skip`) before
        #: asking for another line.
        self.skipping = False
        self._scanned_to = 0  # the buffer holds no newline from its ready lines to here
        self._decoded_to = 0  # bytes up to here went through the decoder
        self._pieces: list[str] = []  # the incomplete line after the ready ones, decoded
        self._chars = 0  # the characters in _pieces
        self._state = self._decoder.getstate()  # the decoder at the incomplete line's start

    def restart(self, base: int) -> None:
        """Start afresh at the buffer's start, at ``base`` (somebody else consumed from the
        buffer, or a line raised)."""
        self.ready.clear()
        self._scanned_to = self._decoded_to = base
        self._pieces = []
        self._chars = 0
        # Back to the last line boundary, with any byte order it has read (UTF-16).
        self._decoder.setstate(self._state)
        self.skipping = False

    def take_lines(self, base: int) -> bool:
        """Decode the complete lines at the start of the buffer into :attr:`ready`; whether
        there was one. Raises for the first line, as it is to be yielded next: the
        :class:`UnicodeError` of its bytes, or :class:`OutputLimitExceeded`."""
        end = self._search(base)
        if end < 0:
            return False
        if self._batch and base + end > self._careful_to:
            last = self._buffer.rfind(self._newline) + 1
            if last > end and self._decode_batch(base, end, last):
                return True
        self._complete(base, end, final=False)
        return True

    def finish(self, base: int) -> None:
        """The stream has ended: what the buffer holds is its last line, without a newline;
        decode it into :attr:`ready`. Raises as :meth:`take_lines` does."""
        self._complete(base, len(self._buffer), final=True)

    def decode_pending(self, base: int) -> None:
        """Decode what arrived of a line that has no newline yet; raise
        :class:`OutputLimitExceeded` once it is longer than the limit (a trailing ``\\r``
        may be the start of its ending), or the :class:`UnicodeError` of its bytes."""
        buffer = self._buffer
        start = self._decoded_to - base
        if len(buffer) > start:
            try:
                text = self._decoder.decode(buffer[start:])
            except UnicodeError:  # also a codec's own complaint
                self._failed(base)
                raise
            self._decoded_to = base + len(buffer)
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
            self._over_limit(base, "".join(self._pieces))

    def skip(self, base: int) -> tuple[int, bool]:
        """While :attr:`skipping`: how many bytes at the buffer's start belong to the line
        that raised, as far as it has arrived, and whether they end it. The owner consumes
        them at once, so that a line that never ends is not buffered; this object counts
        them as consumed already."""
        end = self._search(base)
        found = end >= 0
        size = end if found else self._scanned_to - base
        self._scanned_to = self._decoded_to = base + size
        return size, found

    def _search(self, base: int) -> int:
        """Where the first line in the buffer ends (the index after its newline), or -1.

        Searches only what was not searched before. The newline must start at a whole
        number of code units from the line's start (for the one-byte newline of every
        ASCII-compatible encoding, anywhere: no multi-byte character contains that byte).
        """
        buffer = self._buffer
        start = self._scanned_to - base
        unit = self._unit
        if unit == 1:
            index = buffer.find(self._newline, start)
            if index >= 0:
                return index + 1
            self._scanned_to = base + len(buffer)
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
        self._scanned_to = base + len(buffer) - len(buffer) % unit
        return -1

    def _decode_batch(self, base: int, end: int, last: int) -> bool:
        """Decode the lines that end between ``end`` (the first) and ``last``, at once;
        whether that worked (if not, the decoder is as it was and nothing changed)."""
        buffer = self._buffer
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
        self.ready.append((lines[0], end))
        self.ready.extend(zip(lines[1:], map(_plus_one, sizes), strict=True))
        self._line_done(base + last)
        return True

    def _complete(self, base: int, end: int, *, final: bool) -> None:
        """Decode the rest of the buffer's first line, which ends at ``end``, into
        :attr:`ready`."""
        try:
            last = self._decoder.decode(self._buffer[self._decoded_to - base : end], final)
        except UnicodeError:  # also a codec's own complaint
            self._failed(base)
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
            self._over_limit(base, line)
        self.ready.append((line, end))
        self._line_done(base + end)

    def _line_done(self, position: int) -> None:
        """Lines up to ``position`` are decoded and ready; a new line starts there."""
        self._scanned_to = self._decoded_to = position
        self._pieces = []
        self._chars = 0
        self._state = self._decoder.getstate()

    def _over_limit(self, base: int, text: str) -> None:
        assert self._limit is not None
        self._failed(base)
        raise OutputLimitExceeded(self._limit, text)

    def _failed(self, base: int) -> None:
        """The line at the buffer's start raised: it stays there for other readers, and
        the owner skips it when asked for another line."""
        self.restart(base)
        self.skipping = True
