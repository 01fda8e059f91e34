"""Scenario 8: loop lag. A task that ticks every millisecond runs beside the library's work;
the gaps between its ticks show how long the event loop was kept from running it (issue 13:
no step may block the loop for more than 5 ms).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from harness import (
    ALL_BACKENDS,
    SLEEP,
    Backend,
    Rep,
    Row,
    Scenario,
    fmt,
    now,
    pct,
    run_anyio,
    spread,
)

from anyio_proc import Command, spawn

TICK_S = 0.001
WARM_TICKS = 20  # the ticker runs this long before a window opens
IDLE_S = 0.3  # the reference window: the ticker alone


class Ticker:
    """Records the time of each tick; ``next_tick()`` returns once a new one is recorded."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.tick = anyio.Event()

    async def run(self) -> None:
        while True:
            self.stamps.append(now())
            tick, self.tick = self.tick, anyio.Event()
            tick.set()
            await anyio.sleep(TICK_S)

    async def next_tick(self) -> None:
        await self.tick.wait()

    def gaps_ms(self, w0: int, w1: int) -> list[float]:
        """Every gap between two ticks that overlaps the window ``[w0, w1]``: a stall that
        began or ended inside the window is counted whole."""
        s = self.stamps
        return [(b - a) / 1e6 for a, b in itertools.pairwise(s) if b > w0 and a < w1]


Window = tuple[int, int]
Phase = Callable[[Ticker, int], Awaitable[Window]]


async def idle(ticker: Ticker, n: int) -> Window:
    w0 = now()
    await anyio.sleep(IDLE_S)
    return w0, now()


def starting(cmd: Command | None) -> Phase:
    """The window: from the first ``start_soon`` until every child runs. Their shutdown
    comes after the window has closed (a tick recorded after it)."""

    async def phase(ticker: Ticker, n: int) -> Window:
        holders = Holders(n)
        async with anyio.create_task_group() as tg:
            w0 = now()
            for _ in range(n):
                tg.start_soon(holders.hold, cmd)
            await holders.ready.wait()
            w1 = now()
            await ticker.next_tick()  # the gap that spans w1 ends before the shutdown begins
            tg.cancel_scope.cancel()
        return w0, w1

    return phase


def stopping(cmd: Command | None) -> Phase:
    """The window: from the cancellation of a task group holding ``n`` running children
    until it has exited, every child reaped. Their start is before the window."""

    async def phase(ticker: Ticker, n: int) -> Window:
        holders = Holders(n)
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(holders.hold, cmd)
            await holders.ready.wait()
            await ticker.next_tick()  # the gaps of the start end before the window opens
            w0 = now()
            tg.cancel_scope.cancel()
        return w0, now()

    return phase


class Holders:
    """``n`` tasks, each holding a child until cancelled; ``ready`` once all of them run.

    Without a command (the floor rows), each task only yields once on its way in and once,
    shielded, on its way out, as the least any library's start and stop would do: the
    gaps are then the scheduler's own cost of starting or cancelling ``n`` tasks at once.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.ready = anyio.Event()

    async def hold(self, cmd: Command | None) -> None:
        if cmd is None:
            await anyio.lowlevel.checkpoint()
            try:
                await self._running()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()
            return
        async with spawn(cmd):
            await self._running()

    async def _running(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.ready.set()
        await anyio.sleep_forever()


async def measure(phase: Phase, n: int) -> dict[str, float]:
    ticker = Ticker()
    async with anyio.create_task_group() as outer:
        outer.start_soon(ticker.run)
        for _ in range(WARM_TICKS):
            await ticker.next_tick()
        w0, w1 = await phase(ticker, n)
        await ticker.next_tick()  # the gap that spans w1 is complete
        outer.cancel_scope.cancel()
    gaps = ticker.gaps_ms(w0, w1)
    return {
        "max_ms": max(gaps),
        "p99_ms": pct(gaps, 0.99),
        "median_ms": statistics.median(gaps),
        "window_s": (w1 - w0) / 1e9,
        "ticks": float(len(gaps)),
    }


@dataclass(frozen=True)
class Case:
    title: str
    phase: Phase
    n: int


def _cases() -> list[Case]:
    sleep = Command(SLEEP, "60")
    return [
        Case(f"idle: the ticker alone for {IDLE_S:g} s", idle, 0),
        Case("start 300 tasks, no child (floor)", starting(None), 300),
        Case("start 300 plain children", starting(sleep), 300),
        Case("start 300 `.die_with_parent()` children", starting(sleep.die_with_parent()), 300),
        Case("start 300 `.kill_tree()` children", starting(sleep.kill_tree()), 300),
        Case("shut down 300 tasks, no child (floor)", stopping(None), 300),
        Case("shut down 300 `.process_group(0)` children", stopping(sleep.process_group(0)), 300),
        Case("shut down 300 `.kill_tree()` children", stopping(sleep.kill_tree()), 300),
        Case("shut down 1000 tasks, no child (floor)", stopping(None), 1000),
        Case("shut down 1000 plain children", stopping(sleep), 1000),
    ]


def scenario8(quick: bool) -> Scenario:
    def make_rep(case: Case, backend: Backend) -> Rep:
        return lambda n: run_anyio(backend, lambda: measure(case.phase, n))

    rows = [
        Row(
            f"{case.title} · {backend}",
            "floor" if case.n == 0 or "(floor)" in case.title else "ours",
            make_rep(case, backend),
            size=case.n,
        )
        for case in _cases()
        for backend in ALL_BACKENDS
    ]

    def table(sc: Scenario) -> list[str]:
        lines = [
            (
                "| while | longest gap ms (median) | spread | p99 gap ms (median) | "
                "median gap ms | window s | gaps |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sc.rows:
            vals = [v for v in row.values if isinstance(v, dict)]
            if not vals:
                lines.append(f"| {row.label} | {row.error or 'no data'} | | | | | |")
                continue
            med = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
            label = row.label
            if row.leaked:
                label += f" (left {row.leaked} children!)"
            if row.error:
                label += f" (later: {row.error})"
            lines.append(
                f"| {label} | {fmt(med['max_ms'])} | {spread([v['max_ms'] for v in vals])} | "
                f"{fmt(med['p99_ms'])} | {fmt(med['median_ms'])} | {med['window_s']:.2f} | "
                f"{med['ticks']:.0f} |"
            )
        return lines

    reps = 1 if quick else 3
    return Scenario(
        8,
        f"loop lag: a {TICK_S * 1e3:g} ms ticker beside starting and stopping children",
        rows,
        size=0,
        warm_size=20,
        reps=reps,
        unit="ms",
        notes=[
            (
                f"A task does `await anyio.sleep({TICK_S:g})` in a loop and records the time of "
                "each tick; the gaps between ticks that overlap the window are the figures (a "
                f"loop that never stalls gives gaps just above {TICK_S * 1e3:g} ms). Windows: a "
                "task group's `start_soon` of N holders (`async with spawn(cmd)` around "
                "`sleep_forever()`) until all run; or the cancellation of such a group until it "
                "exits, every child reaped. A fresh event loop per repetition, the ticker "
                f"running {WARM_TICKS} ticks before the window opens. Children are "
                f"`{SLEEP} 60` (they die of SIGTERM: no grace period in the figures). The idle "
                "rows are the floor on this machine: what the timer and the scheduler give "
                "with nothing else running in the loop."
            ),
        ],
        table=table,
        size_text="{reps} repetitions per row; sizes as in each row.",
    )
