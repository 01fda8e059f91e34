"""Task groups as an implementation detail: what they raise reaches the caller bare."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import anyio

if sys.version_info < (3, 11):
    # anyio's dependency on 3.10; possibly missing where the type checker runs.
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from anyio.abc import TaskGroup

__all__ = ["internal_task_group", "unwrap_single"]


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Let the one exception of an internal task group out bare, as it was raised.

    A ``KeyboardInterrupt``, a ``BusyResourceError`` or an error of a user callback must
    not reach the caller wrapped in a group the caller never made. Several independent
    errors stay grouped: none of them may be lost.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise


@asynccontextmanager
async def internal_task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose one exception reaches the caller bare (see :func:`unwrap_single`).

    For the task groups a function opens for its own work, where a group would tell the
    caller nothing but how the function is written.
    """
    with unwrap_single():
        async with anyio.create_task_group() as tg:
            yield tg
