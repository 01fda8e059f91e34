"""Scenario 7: mass shutdown. N children of one kind start in one task group; once all run,
the group is cancelled and the shutdown is timed (wall and the parent's CPU) until every child
is reaped, at growing N, to show whether the cost grows linearly (issue 13).
"""

from __future__ import annotations

import errno
import math
import os
import signal
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import anyio
import anyio.abc
from harness import (
    SH,
    SLEEP,
    Backend,
    Rep,
    Row,
    Scenario,
    Skipped,
    X,
    children,
    fd_room,
    now,
    process_room,
    run_anyio,
    spread,
)

from anyio_proc import Command, spawn

SIZES = (250, 500, 1000, 2000)
QUICK_SIZES = (100, 250)
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
# A size is skipped when the one below it, grown quadratically, would take longer than this
# (start and shutdown of one repetition): a regression must not make the run unbounded.
BUDGET_S = 60.0
REPEAT_LIMIT_S = 10.0  # a repetition that took longer is not repeated
MEMBER_TIMEOUT_S = 30.0  # a `sh -c 'sleep 60 & sleep 60'` must have forked by then
SURVIVOR_TIMEOUT_S = 2.0  # a killed group member's new parent reaps it within this

Opener = Callable[[], AbstractAsyncContextManager[anyio.abc.Process]]


@dataclass(frozen=True)
class Kind:
    key: str
    title: str
    opener: Opener
    per_unit: int  # processes per started unit (a child, or a pipeline of 3)
    units_per_n: int  # N children of this kind means N // units_per_n units
    member: bool  # the child forks a second member of its group: wait for it


def _kinds() -> list[Kind]:
    sleep = Command(SLEEP, "60")
    group = sleep.process_group(0)
    group2 = Command(SH, "-c", f"{SLEEP} 60 & {SLEEP} 60").process_group(0)
    tree = sleep.kill_tree()
    dwp = sleep.die_with_parent()
    session = sleep.new_session()
    session2 = Command(SH, "-c", f"{SLEEP} 60 & {SLEEP} 60").new_session()
    pipeline = sleep | sleep | sleep
    return [
        Kind("plain", "plain `sleep 60`", lambda: spawn(sleep), 1, 1, False),
        Kind("group", "`.process_group(0)`", lambda: spawn(group), 1, 1, False),
        Kind(
            "group2",
            f"`.process_group(0)`, a second member: `sh -c '{SLEEP} 60 & {SLEEP} 60'`",
            lambda: spawn(group2),
            2,
            1,
            True,
        ),
        Kind("session", "`.new_session()`", lambda: spawn(session), 1, 1, False),
        Kind(
            "session2",
            f"`.new_session()`, a second member: `sh -c '{SLEEP} 60 & {SLEEP} 60'`",
            lambda: spawn(session2),
            2,
            1,
            True,
        ),
        Kind("tree", "`.kill_tree()`", lambda: spawn(tree), 1, 1, False),
        Kind("dwp", "`.die_with_parent()`", lambda: spawn(dwp), 1, 1, False),
        Kind(
            "pipeline",
            "N/10 pipelines `sleep 60 | sleep 60 | sleep 60`",
            lambda: spawn(pipeline),
            3,
            10,
            False,
        ),
    ]


async def wait_for_member(pid: int) -> None:
    """Until ``pid`` has a child of its own (the second member of its group): polled, since
    nothing signals a fork to a third process; the bound turns a hang into an error."""
    path = f"/proc/{pid}/task/{pid}/children"
    delay = 0.001
    deadline = time.monotonic() + MEMBER_TIMEOUT_S
    while True:
        with open(path) as f:
            if f.read().strip():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pid} started no second member in {MEMBER_TIMEOUT_S:g} s")
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.02)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pgid was reused by someone else's group: not ours
        return False
    return True


def survivors(pgids: list[int]) -> int:
    """How many of the groups still have a member once the leaders are reaped. A member
    killed with its group is a zombie until its new parent reaps it, so each group gets a
    short bound before it counts; what survives is killed here, not left behind."""
    deadline = time.monotonic() + SURVIVOR_TIMEOUT_S
    alive = [g for g in pgids if group_alive(g)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [g for g in alive if group_alive(g)]
    for pgid in alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
    return len(alive)


async def mass_shutdown(kind: Kind, units: int) -> dict[str, float]:
    """Start ``units`` of ``kind`` in one task group, each held until cancelled; once all
    run, cancel the group and time its exit (every child reaped by then)."""
    count = 0
    ready = anyio.Event()
    leaders: list[int] = []

    async def hold() -> None:
        nonlocal count
        async with kind.opener() as child:
            if kind.member:
                leaders.append(child.pid)
                await wait_for_member(child.pid)
            count += 1
            if count == units:
                ready.set()
            await anyio.sleep_forever()

    t0 = now()
    async with anyio.create_task_group() as tg:
        for _ in range(units):
            tg.start_soon(hold)
        await ready.wait()
        t1 = now()
        c1 = time.process_time()
        tg.cancel_scope.cancel()
    t2 = now()
    c2 = time.process_time()
    left = children()
    if left:
        raise RuntimeError(f"{len(left)} children not reaped when the task group exited")
    return {
        "start_s": (t1 - t0) / 1e9,
        "wall_s": (t2 - t1) / 1e9,
        "cpu_s": c2 - c1,
        "survivors": float(survivors(leaders)),
    }


Key = tuple[str, Backend, int]  # kind, backend, N


@dataclass(frozen=True)
class Cell:
    kind: Kind
    backend: Backend
    n: int
    prev: int | None  # the size below, for the growth and the time budget

    @property
    def units(self) -> int:
        return max(1, self.n // self.kind.units_per_n)

    @property
    def key(self) -> Key:
        return (self.kind.key, self.backend, self.n)

    @property
    def label(self) -> str:
        return f"{self.kind.key} · {self.backend} · N={self.n}"


def medians(row: Row) -> dict[str, float] | None:
    vals = [v for v in row.values if isinstance(v, dict)]
    if not vals:
        return None
    return {k: statistics.median(v[k] for v in vals) for k in vals[0]}


def scenario7(quick: bool) -> Scenario:
    sizes = QUICK_SIZES if quick else SIZES
    cells: dict[Key, Cell] = {}
    rows: dict[Key, Row] = {}

    def make_rep(cell: Cell) -> Rep:
        def rep(size: int) -> dict[str, float]:
            units = cell.units if size == cell.n else max(1, size // cell.kind.units_per_n)
            check_room(cell, units)
            return run_anyio(cell.backend, lambda: mass_shutdown(cell.kind, units))

        return rep

    def check_room(cell: Cell, units: int) -> None:
        procs = units * cell.kind.per_unit
        room = process_room()
        if procs > room:
            raise Skipped(
                f"{procs} processes needed, room for {room} (ulimit -u, pid_max, threads-max)"
            )
        fds = procs * 2 + 64  # a pidfd each, a transient pipe or two while starting
        if fds > fd_room():
            raise Skipped(f"about {fds} fds needed, {fd_room()} free under RLIMIT_NOFILE")
        if cell.prev is None or units != cell.units:
            return
        below = rows[(cell.kind.key, cell.backend, cell.prev)]
        if below.skipped:
            raise Skipped(f"N={cell.prev} was skipped")
        m = medians(below)
        if m is None:
            return
        took = m["start_s"] + m["wall_s"]
        projected = took * (cell.n / cell.prev) ** 2
        if projected > BUDGET_S:
            raise Skipped(
                f"at N={cell.prev} start + shutdown took {took:.1f} s; quadratic growth "
                f"projects {projected:.0f} s here, over the {BUDGET_S:.0f} s budget"
            )

    kinds = _kinds()
    for kind in kinds:
        for backend in BACKENDS:
            prev: int | None = None
            for i, n in enumerate(sizes):
                cell = Cell(kind, backend, n, prev)
                prev = n
                cells[cell.key] = cell
                # The largest sizes get fewer repetitions: they take the most time, and the
                # shape of the growth matters more than their spread.
                max_reps = None if quick or n <= 500 else (2 if n <= 1000 else 1)
                rows[cell.key] = Row(
                    cell.label,
                    "ours",
                    make_rep(cell),
                    max_reps=max_reps,
                    size=n,
                    warm=i == 0,
                    once_over_s=REPEAT_LIMIT_S,
                )

    def table(sc: Scenario) -> list[str]:
        present = {id(row) for row in sc.rows}  # --only may have left some out
        lines: list[str] = []
        for kind in kinds:
            if not any(id(rows[(kind.key, b, n)]) in present for b in BACKENDS for n in sizes):
                continue
            lines += [
                f"**{kind.title}**",
                "",
                (
                    f"| N | processes | backend | start s | shutdown wall s | spread | "
                    f"growth | CPU s | growth | {X} wall |"
                ),
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for n in sizes:
                lines += [
                    table_line(cells[(kind.key, b, n)])
                    for b in BACKENDS
                    if id(rows[(kind.key, b, n)]) in present
                ]
            lines.append("")
        return lines[:-1]

    def table_line(cell: Cell) -> str:
        row = rows[cell.key]
        procs = cell.units * cell.kind.per_unit
        head = f"| {cell.n} | {procs} | {cell.backend} |"
        m = medians(row)
        if m is None:
            return f"{head} {row.error or 'no data'} | | | | | | |"
        walls = [v["wall_s"] for v in row.values if isinstance(v, dict)]
        grow_wall = grow_cpu = ""
        if cell.prev is not None:
            below = medians(rows[(cell.kind.key, cell.backend, cell.prev)])
            if below is not None:
                grow_wall = growth(m["wall_s"], below["wall_s"], cell.n / cell.prev)
                grow_cpu = growth(m["cpu_s"], below["cpu_s"], cell.n / cell.prev)
        notes = ""
        if m["survivors"]:
            notes += f" ({m['survivors']:.0f} groups kept members: killed)"
        if row.leaked:
            notes += f" (left {row.leaked} children!)"
        if row.error:
            notes += f" (later: {row.error})"
        return (
            f"{head} {m['start_s']:.2f} | {m['wall_s']:.3f}{notes} | {spread(walls)} | "
            f"{grow_wall} | {m['cpu_s']:.3f} | {grow_cpu} | "
            f"{m['cpu_s'] / m['wall_s'] if m['wall_s'] > 0 else 0:.2f} |"
        )

    reps = 1 if quick else 3
    return Scenario(
        7,
        "mass shutdown: N children in one task group, cancelled",
        list(rows.values()),
        size=sizes[-1],
        warm_size=20,
        reps=reps,
        unit="s shutdown",
        notes=[
            (
                "Each repetition, in a fresh event loop: N tasks of one task group each hold a "
                "child (`async with spawn(cmd)` around `sleep_forever()`); once every child "
                "runs (the spawn has returned, so it has exec'd; for the two-member groups, "
                "/proc shows the shell's child too), the group is cancelled, and the time "
                "until it exits, every child reaped, is the shutdown: wall time and the "
                "parent's CPU time (`time.process_time()`, all its threads). Every child "
                "dies of SIGTERM, so no grace period is in the figures. Growth: the median's "
                f"ratio to the size below (linear = the sizes' ratio, {sizes[1] // sizes[0]}"
                f"{X} per doubling), with k = log(growth) / log(size ratio): 1 is linear, "
                f"2 quadratic. `{X} wall`: CPU s / wall s, 1.00 = the parent was busy "
                "all along. After each repetition, the groups of the two-member kind are "
                f"checked for members left alive ({SURVIVOR_TIMEOUT_S:g} s for their new "
                "parent to reap them)."
            ),
        ],
        table=table,
        size_text=(
            f"Sizes {', '.join(map(str, sizes))}; backends {', '.join(BACKENDS)}; "
            "{reps} repetitions"
            + ("" if quick else " (at most 2 at N = 1000, 1 at N = 2000)")
            + f", and one only where a repetition took over {REPEAT_LIMIT_S:.0f} s; a size "
            "is skipped when the one below, grown quadratically, would take over "
            f"{BUDGET_S:.0f} s, or when the system's limits leave no room for it."
        ),
    )


def growth(value: float, below: float, size_ratio: float) -> str:
    if value <= 0 or below <= 0:
        return "—"
    g = value / below
    return f"{g:.2f}{X} (k={math.log(g) / math.log(size_ratio):.1f})"
