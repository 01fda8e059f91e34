"""Pacing: blocking work in the event loop's thread, taken in turns.

Starting a process blocks the thread that does it (``posix_spawn`` waits for the exec; a
fork copies the page tables), about half a millisecond each. One spawn is nothing, but a
task group that starts 300 children makes 300 tasks runnable at once, and without a pause
they all spawn in one turn of the event loop: the rest of the program (a timer, a web
request) waits for all of them.

So each event loop has a :class:`Pacer`. A spawn that finds little blocking done since the
last pause goes straight ahead, and costs nothing more. Once ``BUDGET`` seconds of it have
piled up, the next spawn first lets the loop turn, and the spawns that arrive meanwhile
queue, first come first served, each woken by the one before: the loop turns between two of
them, so timers and I/O get in. Only the wait for a turn can be cancelled, never the spawn
itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, TypeVar

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BUDGET", "Pacer", "paced"]

#: Seconds of blocking work the loop's thread may do before it lets the loop turn: well
#: under the 5 ms stall allowed to the library, and large enough that the pause (a few
#: microseconds) is rare.
BUDGET = 0.002

_T = TypeVar("_T")


class Pacer:
    """The turns of one event loop's blocking work."""

    __slots__ = ("_fresh", "_in_flight", "_line", "_pausing", "_put_back", "_typical", "spent")

    def __init__(self) -> None:
        #: Seconds of blocking work in this turn of the loop (as far as we know: it may have
        #: turned without us, which only makes the next pause early).
        self.spent = 0.0
        self._typical = 0.0005  # seconds, a running average of one piece of work
        self._pausing = False
        self._line: deque[anyio.Event] = deque()
        self._in_flight = 0  # woken from the line, work not done yet
        self._fresh = False  # the next woken to run starts a new turn's count
        self._put_back = 0  # woken, then put back at the front of the line, in this turn

    async def wait_turn(self) -> bool:
        """Return when the caller may block the loop's thread for a moment; then call
        :meth:`done` with what it returned.

        **Cancellation:** safe; a cancelled caller gives up its place (or passes the turn
        on, if it had just been given it) and has done nothing.
        """
        if self._pausing or self._line:
            await self._wait_in_line()
            return True
        if self.spent < BUDGET:
            # Beside the few just woken, if the budget allows: they run in this turn too.
            await checkpoint_if_cancelled()
            return False
        if self._in_flight:
            await self._wait_in_line()  # they hand the turn on when done
            return True
        await self._pause()
        return False

    def done(self, seconds: float, queued: bool) -> None:
        """Account for ``seconds`` of blocking work; hand the turn on when it is over."""
        self.spent += seconds
        self._typical += (seconds - self._typical) * 0.2
        if queued:
            self._in_flight -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Wake the next few in line, as many as the budget holds, once nobody works."""
        if self._in_flight or self._pausing or not self._line:
            return
        # They run in the next turn of the loop, not this one: the first to run starts
        # that turn's count.
        self._fresh = True
        self._put_back = 0
        count = min(_MOST_WOKEN, max(1, int(BUDGET / (self._typical + _RESUME_COST))))
        while count and self._line:
            self._line.popleft().set()
            self._in_flight += 1
            count -= 1

    async def _pause(self) -> None:
        """Let the loop turn once: the callers that come meanwhile queue behind us."""
        self._pausing = True
        try:
            await checkpoint()
        except BaseException:
            self._end_pause()
            self._hand_on()  # those who queued behind us must not wait for our done()
            raise
        self._end_pause()  # our done() hands the turn on

    def _end_pause(self) -> None:
        self._pausing = False
        self.spent = 0.0

    async def _wait_in_line(self) -> None:
        first = False
        while True:
            turn = anyio.Event()
            if first:
                # At the front, behind those put back before us: the order stays.
                self._line.insert(self._put_back, turn)
                self._put_back += 1
                self._hand_on()  # the last of those woken with us: the next turn is ours
            else:
                self._line.append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():
                    self._in_flight -= 1  # the turn was ours: pass it on
                else:
                    self._line.remove(turn)
                self._hand_on()
                raise
            if self._fresh:  # the first to run in a new turn: its work is due
                self._fresh = False
                self.spent = 0.0
                return
            if self.spent < BUDGET:
                return
            # Those woken before us in this turn took longer than usual and used it up:
            # first in line for the next.
            self._in_flight -= 1
            first = True


#: The most callers woken for one turn, and what resuming one costs besides its work:
#: the batch must fit the budget even when the work itself is tiny (a signal).
_MOST_WOKEN = 32
_RESUME_COST = 0.00005


# Per thread, which is per event loop: one runs at a time in a thread (a RunVar costs as
# much as the rest of the pacing). A pacer left by a loop that has ended is idle: its line
# empties as its tasks finish, which they all do before their loop ends.
_local = threading.local()


def current_pacer() -> Pacer:
    """This event loop's pacer."""
    try:
        pacer: Pacer = _local.pacer
    except AttributeError:
        pacer = _local.pacer = Pacer()
    return pacer


async def paced(work: Callable[[], _T]) -> _T:
    """Run ``work`` (synchronous, blocking the loop's thread a moment) in its turn.

    **Cancellation:** safe while it waits for its turn (nothing has been done); once
    ``work`` has begun, its result reaches the caller.
    """
    pacer = current_pacer()
    queued = await pacer.wait_turn()
    began = time.perf_counter()
    try:
        return work()
    finally:
        pacer.done(time.perf_counter() - began, queued)
