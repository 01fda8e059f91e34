"""Pacing: many spawns (or shutdowns) at once let the event loop turn between them.

The rule is about turns of the loop, not time: a ticker task that yields in a loop counts
the turns, and the pacer's budget is set to zero so that every piece of work after the
first waits for the loop to turn (the library's 2 ms would make the count depend on the
speed of the machine).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.lowlevel import checkpoint

import anyio_proc._pacing as pacing
from anyio_proc import Command, spawn
from anyio_proc._pacing import Pacer, Turn, current_pacer, paced

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

SLEEP = "sleep"


@pytest.fixture
def no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "BUDGET", 0.0)


class Turns:
    """A task that yields in a loop: ``count`` is how many turns the loop has made."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await checkpoint()


def assert_idle(pacer: Pacer) -> None:
    """Nothing left queued or in flight: the next caller goes straight ahead."""
    assert not pacer._line
    assert not pacer._woken
    assert pacer._pauser is None


async def test_children_started_at_once_let_the_loop_turn_between_them(
    no_budget: None,
) -> None:
    turns = Turns()
    seen: list[int] = []  # the turn count at each spawn's return
    n = 12

    async def hold(all_started: anyio.Event) -> None:
        async with spawn(Command(SLEEP, "60")):
            seen.append(turns.count)
            if len(seen) == n:
                all_started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(turns.run)
        await checkpoint()
        all_started = anyio.Event()
        async with anyio.create_task_group() as holders:
            for _ in range(n):
                holders.start_soon(hold, all_started)
            await all_started.wait()
            holders.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    # Before pacing, all of them spawned in one turn: the count never moved in between.
    # (Trio runs the tasks of a turn in random order, so the ticker may count a turn just
    # before or just after a spawn in it: one turn each, give or take the ends.)
    assert seen[-1] - seen[0] >= n - 2, seen
    assert_idle(current_pacer())


async def test_shutdowns_at_once_let_the_loop_turn_between_their_signals(
    no_budget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyio_proc._process import ProcessHandle

    turns = Turns()
    signalled: list[int] = []
    send = ProcessHandle.send

    def counting_send(
        self: ProcessHandle, sig: int, *, everything: bool, session: bool = True
    ) -> None:
        signalled.append(turns.count)
        send(self, sig, everything=everything, session=session)

    n = 10
    async with anyio.create_task_group() as tg:
        tg.start_soon(turns.run)
        running = 0
        all_running = anyio.Event()

        async def hold() -> None:
            nonlocal running
            async with spawn(Command(SLEEP, "60")):
                running += 1
                if running == n:
                    all_running.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as holders:
            for _ in range(n):
                holders.start_soon(hold)
            await all_running.wait()
            monkeypatch.setattr(ProcessHandle, "send", counting_send)
            holders.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    assert len(signalled) == n
    assert signalled[-1] - signalled[0] >= n - 2, signalled
    assert_idle(current_pacer())


async def test_turns_are_taken_first_come_first_served(no_budget: None) -> None:
    order: list[int] = []
    pacer = Pacer()

    async def work(i: int) -> None:
        turn = Turn()
        try:
            await pacer.take(turn)
            order.append(i)
            pacer.account(0.0001)
        finally:
            pacer.leave(turn)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(work, i)
            await anyio.wait_all_tasks_blocked()
    assert order == list(range(20))
    assert_idle(pacer)


@pytest.mark.parametrize("seed", range(8))
async def test_cancelling_callers_anywhere_in_line_never_stalls_the_others(
    no_budget: None, seed: int
) -> None:
    """Callers cancelled while they pause, wait in line, or just after the turn came to
    them: the others all get their turn, and the pacer ends idle."""
    rng = random.Random(seed)
    pacer = Pacer()
    finished: list[int] = []

    async def work(i: int, scope: anyio.CancelScope) -> None:
        turn = Turn()
        with scope:
            try:
                await pacer.take(turn)
                # Work that yields is not what the pacer is for, but it lets cancellations
                # land while others are in flight.
                pacer.account(0.0001)
            finally:
                pacer.leave(turn)
            finished.append(i)

    scopes = [anyio.CancelScope() for _ in range(30)]
    doomed = set(rng.sample(range(30), 12))
    async with anyio.create_task_group() as tg:
        for i, scope in enumerate(scopes):
            tg.start_soon(work, i, scope)
        for _ in range(rng.randrange(0, 6)):
            await checkpoint()
        for i in sorted(doomed, key=lambda _: rng.random()):
            scopes[i].cancel()
            if rng.random() < 0.5:
                await checkpoint()
    assert set(range(30)) - doomed <= set(finished)
    assert_idle(pacer)


async def test_a_spawn_cancelled_in_line_starts_nothing(no_budget: None) -> None:
    cmd = Command(SLEEP, "60")
    started: list[object] = []
    pacer = current_pacer()
    gate = anyio.Event()

    async def start(scope: anyio.CancelScope) -> None:
        with scope:
            async with spawn(cmd) as child:
                started.append(child)
                await gate.wait()

    scopes = [anyio.CancelScope() for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for scope in scopes:
            tg.start_soon(start, scope)
        await anyio.wait_all_tasks_blocked()
        # Every one either runs a child or waits in line for its turn.
        for scope in scopes[3:]:
            scope.cancel()
        gate.set()
    assert len(started) >= 1
    assert_idle(pacer)


async def test_work_that_raises_hands_the_turn_on(no_budget: None) -> None:
    pacer = current_pacer()
    results: list[str] = []

    def boom() -> str:
        raise OSError("no")

    async def attempt(fn: Callable[[], str]) -> None:
        try:
            results.append(await paced(fn))
        except OSError:
            results.append("raised")

    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, boom)
        tg.start_soon(attempt, boom)
        tg.start_soon(attempt, lambda: "ok")
    assert sorted(results) == ["ok", "raised", "raised"]
    assert_idle(pacer)


async def test_those_woken_together_wait_for_the_next_turn_once_it_is_used_up() -> None:
    """A batch is woken by the usual cost of a piece of work; when the first ones take
    longer (a fork on a loaded machine), the rest go first in line for the next turn."""
    pacer = Pacer()
    turns = Turns()
    ran: list[tuple[int, int]] = []  # (caller, turn count) in the order they worked

    async def work(i: int) -> None:
        turn = Turn()
        try:
            await pacer.take(turn)
            ran.append((i, turns.count))
            pacer.account(0.01 if i else 0.0001)  # each but the first overruns the budget
        finally:
            pacer.leave(turn)

    async with anyio.create_task_group() as tg:
        tg.start_soon(turns.run)
        pacer.spent = 1.0  # the budget is spent: the first caller pauses, the rest queue
        async with anyio.create_task_group() as workers:
            for i in range(6):
                workers.start_soon(work, i)
        tg.cancel_scope.cancel()
    # (In order on asyncio; trio runs the tasks woken for one turn in random order.)
    assert sorted(i for i, _ in ran) == list(range(6))
    counts = [count for _, count in ran[1:]]
    # One overrunning piece of work per turn (trio runs a turn's tasks in random order, so
    # the ticker may count a turn just before or just after: give or take the ends).
    assert counts[-1] - counts[0] >= len(counts) - 2, ran
    assert_idle(pacer)
