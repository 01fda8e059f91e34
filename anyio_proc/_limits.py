"""The limits a reader of a stream can set, the checks of those arguments, and the error
raised when output goes past one."""

from __future__ import annotations

import operator
from typing import SupportsIndex

__all__ = ["OutputLimitExceeded", "check_limit", "check_max_bytes"]


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
        #: The limit that was exceeded: bytes for ``read_all()``, characters for ``lines()``.
        self.limit = limit
        #: A copy of what had arrived (more than :attr:`limit`), as described above.
        self.partial = partial


def check_max_bytes(max_bytes: object) -> int:
    """``receive()``'s size, as anyio's own streams check it: a positive int."""
    # A bool is an int to Python, but never meant as a size.
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, SupportsIndex):
        raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
    size = operator.index(max_bytes)
    if size < 1:
        raise ValueError("max_bytes must be a positive integer")
    return size


def check_limit(name: str, limit: object) -> int | None:
    """A limit of ``read_all()`` or ``lines()``: ``None`` or an int >= 0."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, SupportsIndex):
        raise TypeError(f"{name} must be an int or None, not {type(limit).__name__}")
    value = operator.index(limit)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value
