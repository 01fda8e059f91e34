"""The machinery every scenario of ``bench.py`` shares: a fresh event loop per repetition,
bounded in time; child-process bookkeeping; rows, repetitions and their interleaving; the
number formats of the tables. The scenarios themselves live in ``bench.py`` and in one module
per family (``scale_shutdown.py``, ``loop_lag.py``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio
import trio
import uvloop

T = TypeVar("T")

Backend = Literal["asyncio", "uvloop", "trio"]
Kind = Literal["ours", "peer", "floor", "limit"]
Job = Callable[[], Awaitable[None]]
Measurement = float | list[float] | dict[str, float]
Rep = Callable[[int], Measurement]
X = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash

TRUE = "/bin/true"
SLEEP = "/bin/sleep"
HEAD = "/usr/bin/head"
CAT = "/bin/cat"
SH = "/bin/sh"
WAITER_ENV = "ANYIO_PROC_WAITER"
MiB = 1 << 20
LIMIT_S = 180.0  # no single repetition may take longer than this
ALL_BACKENDS: tuple[Backend, ...] = ("asyncio", "uvloop", "trio")

now = time.perf_counter_ns


# ---------------------------------------------------------------------------------------------
# Running one repetition in a fresh event loop, bounded in time
# ---------------------------------------------------------------------------------------------


def run_anyio(backend: Backend, fn: Callable[[], Awaitable[T]]) -> T:
    """``fn`` under anyio on ``backend`` (uvloop = anyio's asyncio backend on a uvloop loop)."""

    async def bounded() -> T:
        with anyio.fail_after(LIMIT_S):
            return await fn()

    if backend == "uvloop":
        return anyio.run(
            bounded, backend="asyncio", backend_options={"loop_factory": uvloop.new_event_loop}
        )
    return anyio.run(bounded, backend=backend)


def run_asyncio(use_uvloop: bool, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``fn`` on a plain asyncio loop (the default one, or uvloop's), without anyio."""
    loop = uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # what asyncio.run() does (it attaches the child watcher)
    try:
        return loop.run_until_complete(asyncio.wait_for(fn(), LIMIT_S))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run_trio(fn: Callable[[], Awaitable[T]]) -> T:
    """``fn`` on trio, without anyio."""

    async def bounded() -> T:
        with trio.fail_after(LIMIT_S):
            return await fn()

    return trio.run(bounded)


# ---------------------------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------------------------


def children() -> list[int]:
    """Our child processes, zombies included, from /proc/self/task/*/children."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return pids


def reap_leftovers(allowed: Sequence[int] = ()) -> int:
    """Kill and reap any child not in ``allowed``; return how many there were."""
    leftovers = [pid for pid in children() if pid not in allowed]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in leftovers:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # another thread (a child watcher) got it first
            pass
    return len(leftovers)


def snapshot() -> dict[str, float]:
    """Threads, fds and resident memory of this process."""
    with open("/proc/self/status") as f:
        status = f.read()
    os_threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert os_threads is not None
    assert rss is not None
    return {
        "py_threads": float(threading.active_count()),
        "os_threads": float(os_threads.group(1)),
        "fds": float(len(os.listdir("/proc/self/fd"))),
        "rss_mib": int(rss.group(1)) / 1024,
    }


def raw_spawn(argv: Sequence[str]) -> int:
    """The raw floor's spawn: posix_spawn (vfork-style in glibc) and a pidfd."""
    pid = os.posix_spawn(argv[0], list(argv), os.environ)
    return os.pidfd_open(pid)


async def trio_finish(p: trio.Process) -> None:
    """The end of a block around a ``trio.lowlevel.open_process`` child (it has no
    ``aclose``): close our pipe ends, kill the child if it still runs, wait for it."""
    with trio.CancelScope(shield=True):
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                await stream.aclose()
        if p.returncode is None:
            p.kill()
        await p.wait()


def raw_wait(pidfd: int) -> None:
    """The raw floor's wait: blocking waitid(P_PIDFD), then close the pidfd."""
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------------------------------------
# Rows, repetitions, interleaving
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One stack in one scenario. ``rep(size)`` runs one timed repetition in a fresh loop."""

    label: str
    kind: Kind
    rep: Rep
    waiter: str | None = None  # anyio_proc rows: the exit waiter forced for them
    values: list[Measurement] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False  # ``error`` is why the row was skipped, not a failure
    leaked: int = 0
    size: int | None = None  # this row's own size (a row per size), else the scenario's
    max_reps: int | None = None  # fewer repetitions than the scenario's (the largest sizes)
    warm: bool = True  # run in the warm-up (off for all but one row of a same-stack family)
    once_over_s: float | None = None  # a repetition that took longer is not repeated


@dataclass
class Scenario:
    number: int
    title: str
    rows: list[Row]
    size: int
    warm_size: int
    reps: int
    unit: str
    higher_is_better: bool = False
    notes: list[str] = field(default_factory=list)
    allowed_children: list[int] = field(default_factory=list)
    # The scenario's own table (the scalar table of bench.py when None), and the line that
    # says how much was measured (reps, size and unit per stack when None), a format string
    # given ``reps`` (the repetitions may be set on the command line).
    table: Callable[[Scenario], list[str]] | None = None
    size_text: str | None = None


class Skipped(Exception):
    """Raised by a repetition that must not run here (a limit of the system, a time budget):
    the row is reported as skipped with this message, and not run again."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_row(sc: Scenario, row: Row, size: int, record: bool, rep: int = 0) -> None:
    saved = os.environ.get(WAITER_ENV)
    if row.waiter is not None:
        os.environ[WAITER_ENV] = row.waiter
    gc.collect()
    started = time.monotonic()
    try:
        value = row.rep(size)
    except Skipped as exc:
        row.error = f"skipped: {exc}"
        row.skipped = True
        log(f"    {row.label}: {row.error}")
    except Exception as exc:  # a failing stack is reported, not fatal
        row.error = f"{type(exc).__name__}: {exc}"[:200]
        log(f"    {row.label}: FAILED {row.error}")
    else:
        if record:
            row.values.append(value)
    finally:
        if saved is None:
            os.environ.pop(WAITER_ENV, None)
        else:
            os.environ[WAITER_ENV] = saved
        leaked = reap_leftovers(sc.allowed_children)
        if leaked:
            row.leaked += leaked
            log(f"    {row.label}: left {leaked} children behind (killed and reaped)")
    took = time.monotonic() - started
    if record and row.once_over_s is not None and took > row.once_over_s:
        row.max_reps = rep + 1  # slow enough that one figure must do (a time budget)
    log(f"    {row.label:<44} {took:6.2f} s")


def run_scenario(sc: Scenario) -> None:
    log(f"== scenario {sc.number}: {sc.title} ({len(sc.rows)} stacks, {sc.reps} reps)")
    log("  warm-up")
    for row in sc.rows:
        if row.warm:
            run_row(sc, row, sc.warm_size, record=False)
    for r in range(sc.reps):
        log(f"  repetition {r + 1}/{sc.reps}")
        k = r % len(sc.rows)
        for row in sc.rows[k:] + sc.rows[:k]:  # rotate the order: no stack is always first
            if row.error is None and (row.max_reps is None or r < row.max_reps):
                run_row(sc, row, sc.size if row.size is None else row.size, True, r)


# ---------------------------------------------------------------------------------------------
# Numbers in tables
# ---------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float, ref: float | None, higher_is_better: bool) -> str:
    """Time ratio: how many times as long (or as much) as the reference; > 1 is worse."""
    if ref is None or ref <= 0 or value <= 0:
        return "—"
    r = ref / value if higher_is_better else value / ref
    return f"{r:.2f}{X}"


def row_label(row: Row) -> str:
    label = f"**{row.label}**" if row.kind == "ours" else row.label
    if row.leaked:
        label += f" (left {row.leaked} children!)"
    if row.error and row.values:
        label += f" (failed later: {row.error})"
    return label


def spread(values: Sequence[float]) -> str:
    """The range of the values (min to max), or a mark that there was one repetition."""
    if len(values) < 2:
        return "(1 rep)"
    return f"{fmt(min(values))}{DASH}{fmt(max(values))}"


# ---------------------------------------------------------------------------------------------
# System limits
# ---------------------------------------------------------------------------------------------


def raise_fd_limit() -> str:
    """Raise the soft limit on open fds to the hard one (thousands of children hold a pidfd
    each); say what it was and is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return f"open fds: soft limit raised from {soft} to {hard}"
    return f"open fds: limit {soft}"


def user_processes() -> int:
    """How many processes (threads included, as RLIMIT_NPROC counts them) run under our uid."""
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:  # exited meanwhile
            continue
        uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
        threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
        if uids is not None and int(uids.group(1)) == uid:
            count += int(threads.group(1)) if threads is not None else 1
    return count


def process_room() -> int:
    """How many more processes we may start: the least of RLIMIT_NPROC (not enforced for
    root), the kernel's pid_max and threads-max, minus what already runs; a margin of 256 is
    kept for the rest of the machine."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with open("/proc/sys/kernel/threads-max") as f:
        threads_max = int(f.read())
    with open("/proc/loadavg") as f:  # "0.10 0.20 0.30 1/234 5678": 234 threads exist
        running = int(f.read().split()[3].split("/")[1])
    room = min(pid_max, threads_max) - running
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if os.getuid() != 0 and soft != resource.RLIM_INFINITY:
        room = min(room, soft - user_processes())
    return room - 256


def fd_room() -> int:
    """How many more fds this process may open, by its soft limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft - len(os.listdir("/proc/self/fd"))
