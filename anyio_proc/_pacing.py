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
import anyio.lowlevel
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BUDGET", "Pacer", "Turn", "paced"]

#: Seconds of blocking work the loop's thread may do before it lets the loop turn: well
#: under the 5 ms stall allowed to the library, and large enough that the pause (a few
#: microseconds) is rare.
BUDGET = 0.002

_T = TypeVar("_T")


class Turn:
    """One caller's place with the pacer, from its arrival to :meth:`Pacer.leave`.

    Everything the pacer holds for a caller hangs on its turn, so that the caller's
    ``leave()`` can undo all of it wherever an exception (a cancellation, Ctrl-C, a
    timeout's SIGALRM) struck: a pacer left with a place nobody holds would keep every
    later caller waiting.
    """

    __slots__ = ("event", "queued")

    def __init__(self) -> None:
        self.event: anyio.Event | None = None
        self.queued = False  # set before it enters the line, cleared after it left


class Pacer:
    """The turns of one event loop's blocking work.

    A caller takes a turn (:meth:`take`), blocks the thread, counts the time
    (:meth:`account`), and leaves (:meth:`leave`) whatever happened; :func:`paced` does
    all that. A caller that finds the pacer :meth:`free` goes straight ahead. Each run of
    an event loop has a pacer of its own (:func:`current_pacer`).
    """

    __slots__ = ("_fresh", "_line", "_pauser", "_put_back", "_typical", "_woken", "spent")

    def __init__(self) -> None:
        #: Seconds of blocking work in this turn of the loop (as far as we know: it may have
        #: turned without us, which only makes the next pause early).
        self.spent = 0.0
        self._typical = 0.0005  # seconds, a running average of one piece of work
        self._pauser: Turn | None = None  # the caller letting the loop turn
        self._line: deque[Turn] = deque()
        self._woken: set[Turn] = set()  # woken from the line, not left yet
        self._fresh = False  # the next woken to run starts a new turn's count
        self._put_back = 0  # woken, then put back at the front of the line, in this turn

    def idle(self) -> bool:
        """Nobody waits, works or pauses: the pacer holds nothing but its counts."""
        return self._pauser is None and not self._line and not self._woken

    def free(self) -> bool:
        """Whether a caller may do its work now, with no turn to take."""
        return self._pauser is None and not self._line and self.spent < BUDGET

    def account(self, seconds: float) -> None:
        """Count ``seconds`` of blocking work just done."""
        self.spent += seconds
        self._typical += (seconds - self._typical) * 0.2

    async def take(self, turn: Turn) -> None:
        """Return when the caller may block the loop's thread for a moment; whatever
        happens then, the caller calls :meth:`leave` with ``turn``.

        **Cancellation:** safe; a cancelled caller has done nothing, and its ``leave()``
        gives up its place or passes the turn on.
        """
        if self._pauser is None and not self._line:
            if self.spent < BUDGET:
                # Beside the few just woken, if the budget allows: they run in this turn too.
                await checkpoint_if_cancelled()
                return
            if not self._woken:
                self._pauser = turn
                await checkpoint()  # those who come meanwhile queue behind us
                self._pauser = None
                self.spent = 0.0
                return
            # Those woken are still to run: they hand the turn on when done.
        await self._wait_in_line(turn)

    def leave(self, turn: Turn) -> None:
        """Give up everything ``turn`` holds (its place in line, its turn, a pause) and
        hand the turn on if it is over.

        Each step can be done again: an exception landing in here (Ctrl-C pressed again) is
        raised once they are all done.
        """
        later: BaseException | None = None
        for _ in range(_LEAVE_ATTEMPTS):
            try:
                if turn.queued:
                    self._unqueue(turn)
                self._woken.discard(turn)
                if self._pauser is turn:
                    self._pauser = None
                    self.spent = 0.0
                self._hand_on()
                break
            except BaseException as exc:
                later = exc
        if later is not None:
            raise later

    def _unqueue(self, turn: Turn) -> None:
        try:
            self._line.remove(turn)
        except ValueError:
            pass  # taken out already; the flag is cleared after
        turn.queued = False

    def _hand_on(self) -> None:
        """Wake the next few in line, as many as the budget holds, once nobody works."""
        if self._woken or self._pauser is not None or not self._line:
            return
        # They run in the next turn of the loop, not this one: the first to run starts
        # that turn's count.
        self._fresh = True
        self._put_back = 0
        count = min(_MOST_WOKEN, max(1, int(BUDGET / (self._typical + _RESUME_COST))))
        line = self._line
        while count and line:
            turn = line[0]
            # In this order, an exception in between leaves nobody waiting unwoken: the
            # woken one counts itself too, and takes itself out of the line if still in.
            assert turn.event is not None
            turn.event.set()
            self._woken.add(turn)
            line.popleft()
            turn.queued = False
            count -= 1

    async def _wait_in_line(self, turn: Turn) -> None:
        put_back = False
        while True:
            turn.event = event = anyio.Event()
            turn.queued = True  # before: an exception in between leaves no stray place
            if put_back:
                # At the front, behind those put back before us: the order stays.
                self._line.insert(self._put_back, turn)
                self._put_back += 1
                self._hand_on()  # the last of those woken with us: the next turn is ours
            else:
                self._line.append(turn)
            await event.wait()
            self._woken.add(turn)  # the waker did too, unless it was interrupted
            if turn.queued:
                self._unqueue(turn)
            if self._fresh:  # the first to run in a new turn: its work is due
                self._fresh = False
                self.spent = 0.0
                return
            if self.spent < BUDGET:
                return
            # Those woken before us in this turn took longer than usual and used it up:
            # first in line for the next.
            self._woken.discard(turn)
            put_back = True


#: The most callers woken for one turn, and what resuming one costs besides its work:
#: the batch must fit the budget even when the work itself is tiny (a signal).
_MOST_WOKEN = 32
_RESUME_COST = 0.00005
#: How many exceptions (Ctrl-C pressed again and again) leaving a turn goes through.
_LEAVE_ATTEMPTS = 8


class _Pacers(threading.local):
    def __init__(self) -> None:
        # One per event loop run of the thread, keyed by its token: one at a time, but for
        # trio in guest mode on an asyncio loop. (A RunVar costs as much as the rest of the
        # pacing.)
        self.pacers: dict[object, Pacer] = {}


_local = _Pacers()


def current_pacer() -> Pacer:
    """This event loop's pacer."""
    run = anyio.lowlevel.current_token().native_token
    pacers = _local.pacers
    pacer = pacers.get(run)
    if pacer is None:
        # An idle pacer holds nothing worth keeping: those of runs that ended go. A busy one
        # stays, whether its run goes on (guest mode) or ended with the pacer in the middle
        # of a leave() that an exception cut short: no later run can be held up by it.
        for key in [key for key, other in pacers.items() if other.idle()]:
            del pacers[key]
        pacer = pacers[run] = Pacer()
    return pacer


async def paced(work: Callable[[], _T]) -> _T:
    """Run ``work`` (synchronous, blocking the loop's thread a moment) in its turn.

    **Cancellation:** safe while it waits for its turn (nothing has been done); once
    ``work`` has begun, its result reaches the caller.
    """
    pacer = current_pacer()
    if pacer.free():
        await checkpoint_if_cancelled()
        began = time.perf_counter()
        try:
            return work()
        finally:
            pacer.account(time.perf_counter() - began)
    turn = Turn()
    try:
        await pacer.take(turn)
        began = time.perf_counter()
        try:
            return work()
        finally:
            pacer.account(time.perf_counter() - began)
    finally:
        pacer.leave(turn)
