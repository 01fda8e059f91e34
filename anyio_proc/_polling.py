"""Polling with backoff, for what gives no event to wait for.

The exit of a process that is not our child (a member of a group or session, a descendant
without a pidfd) wakes nobody, so the exit policy asks again and again. It asks often at
first, since during a shutdown such processes usually die with the signal, then backs off
to a light load for the ones that take their time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["POLL_FIRST", "POLL_MOST", "poll_until"]

#: The first pause between two checks, in seconds: each next one is twice as long...
POLL_FIRST = 0.001
#: ...up to this.
POLL_MOST = 0.05


async def poll_until(
    done: Callable[[], object], *, first: float = POLL_FIRST, most: float = POLL_MOST
) -> None:
    """Return once ``done()`` is true: check it now, then after pauses of ``first``,
    twice that, and so on, up to ``most`` seconds between two checks.

    It never gives up on its own: the caller bounds the wait with a cancel scope
    (``anyio.move_on_after``). Returns without a checkpoint when ``done()`` is true at once.

    **Cancellation:** safe; nothing is changed, and it can be called again.
    """
    delay = first
    while not done():
        await anyio.sleep(delay)
        delay = min(delay * 2, most)
