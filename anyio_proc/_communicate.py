"""Feeding a child's stdin while draining its stdout and stderr, all at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ._streams import being_read, close_now
from ._taskgroups import internal_task_group

if TYPE_CHECKING:
    from ._streams import PipeReceiveStream, PipeSendStream

__all__ = ["communicate"]


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
            close_now(stream)

    async def drain(name: str, stream: PipeReceiveStream) -> None:
        results[name] = await stream.read_all()

    for stream in (stdout, stderr):
        # Refused before anything starts, as receive() refuses: a half-fed child otherwise.
        if stream is not None and stream.closed:
            raise anyio.ClosedResourceError
        if stream is not None and being_read(stream):
            raise anyio.BusyResourceError("reading from")
    async with internal_task_group() as tg:
        if stdin is not None and not stdin.closed:
            tg.start_soon(feed, stdin)
        if stdout is not None:
            tg.start_soon(drain, "stdout", stdout)
        if stderr is not None:
            tg.start_soon(drain, "stderr", stderr)
    return results.get("stdout", b""), results.get("stderr", b"")
