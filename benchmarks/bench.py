#!/usr/bin/env python3
"""Side-by-side benchmarks: anyio_proc against the other ways of running child processes.

Every stack of a scenario runs in the same invocation, interleaved (A B C, B C A, C A B…), each
repetition in a fresh event loop, with the same warm-up; the tables give medians, spread and
ratios against the best peer and against the synchronous floor. See benchmarks/README.md.

    python benchmarks/bench.py                   # everything, about 16 minutes on 2 cores
    python benchmarks/bench.py --quick           # smaller sizes, about 3 minutes
    python benchmarks/bench.py --scenarios 7,8,9,10  # issue 13's scale scenarios only
    python benchmarks/bench.py --scenarios 1,3 --reps 9
    python benchmarks/bench.py --profile         # cProfile of anyio_proc spawn+wait on asyncio

Scenarios 1-6 compare stacks; 7-10 measure scale (issue 13): 7 mass shutdown at growing N
(``scale_shutdown.py``), 8 event-loop lag (``loop_lag.py``), 9 the parent's CPU per spawn at
concurrency 64, 10 stdout from a writer of 1 MiB pieces. ``harness.py`` holds what they share.

``ANYIO_PROC_WAITER=pidfd|thread`` restricts the anyio_proc rows to that exit waiter; without
it, scenarios 1 and 3 show both waiters and the others use the automatic choice.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import fcntl
import hashlib
import io
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, Literal

import anyio
import anyio.abc
import trio
import trio.lowlevel
from harness import (
    ALL_BACKENDS,
    CAT,
    DASH,
    HEAD,
    SH,
    SLEEP,
    TRUE,
    WAITER_ENV,
    Backend,
    Job,
    MiB,
    Rep,
    Row,
    Scenario,
    X,
    children,
    fmt,
    now,
    pct,
    process_room,
    raise_fd_limit,
    ratio,
    raw_spawn,
    raw_wait,
    reap_leftovers,
    row_label,
    run_anyio,
    run_asyncio,
    run_scenario,
    run_trio,
    snapshot,
    spread,
    trio_finish,
)
from loop_lag import scenario8
from scale_shutdown import scenario7

import anyio_proc
from anyio_proc import Command, Stdio, spawn

ALL_SCENARIOS = tuple(range(1, 11))
READ_CHUNK = 65536  # every stack reads with this size; the pipe holds 64 KiB
DD = "/bin/dd"
WRITE_CHUNK = 1 << 20  # every stack is handed 1 MiB per send


# ---------------------------------------------------------------------------------------------
# Generic drivers: sequential, pooled, sampled
# ---------------------------------------------------------------------------------------------


async def seq_async(job: Job, n: int, warm: int) -> float:
    """µs per ``job`` run back to back."""
    for _ in range(warm):
        await job()
    t0 = now()
    for _ in range(n):
        await job()
    return (now() - t0) / n / 1e3


def seq_sync(job: Callable[[], None], n: int, warm: int) -> float:
    for _ in range(warm):
        job()
    t0 = now()
    for _ in range(n):
        job()
    return (now() - t0) / n / 1e3


async def pool_anyio(job: Job, total: int, conc: int) -> float:
    """Processes per second: ``total`` jobs, ``conc`` at a time, in an anyio task group."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await job()

    t0 = now()
    async with anyio.create_task_group() as tg:
        for _ in range(conc):
            tg.start_soon(worker)
    return total / ((now() - t0) / 1e9)


async def pool_trio(job: Job, total: int, conc: int) -> float:
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await job()

    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(worker)
    return total / ((now() - t0) / 1e9)


async def pool_asyncio(job: Job, total: int, conc: int) -> float:
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await job()

    t0 = now()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return total / ((now() - t0) / 1e9)


# ---------------------------------------------------------------------------------------------
# Scenario 1: sequential spawn + wait of /bin/true
# ---------------------------------------------------------------------------------------------


def job_anyio_proc(cmd: Command) -> Job:
    async def job() -> None:
        async with spawn(cmd) as child:
            await child.wait()

    return job


def job_anyio_open(argv: list[str]) -> Job:
    async def job() -> None:
        async with await anyio.open_process(argv, stdin=None, stdout=None, stderr=None) as p:
            await p.wait()

    return job


def job_trio_run(argv: list[str]) -> Job:
    async def job() -> None:
        await trio.run_process(argv, stdin=None)

    return job


def job_asyncio(argv: list[str]) -> Job:
    async def job() -> None:
        p = await asyncio.create_subprocess_exec(*argv)
        await p.wait()

    return job


def job_sync(argv: list[str]) -> Callable[[], None]:
    def job() -> None:
        subprocess.run(argv, check=True)

    return job


def job_raw(argv: list[str]) -> Callable[[], None]:
    def job() -> None:
        raw_wait(raw_spawn(argv))

    return job


def waiter_variants(both: bool) -> list[str | None]:
    """The waiters anyio_proc rows run with: forced by the user, both, or automatic."""
    forced = os.environ.get(WAITER_ENV)
    if forced:
        return [forced]
    return ["pidfd", "thread"] if both else [None]


def ours_label(what: str, backend: Backend, waiter: str | None) -> str:
    return f"{what} · {backend}" + (f" [{waiter}]" if waiter else "")


def ours_rows(make: Callable[[Backend], Rep], *, both_waiters: bool, what: str) -> list[Row]:
    """anyio_proc on every backend, with each waiter variant."""
    return [
        Row(ours_label(what, b, w), "ours", make(b), waiter=w)
        for w in waiter_variants(both_waiters)
        for b in ALL_BACKENDS
    ]


def anyio_rows(what: str, make: Callable[[Backend], Rep]) -> list[Row]:
    """anyio's own API, on asyncio and trio (uvloop adds nothing there but the loop)."""
    backends: tuple[Backend, ...] = ("asyncio", "trio")
    return [Row(f"{what} · {b}", "peer", make(b)) for b in backends]


def scenario1(quick: bool) -> Scenario:
    argv = [TRUE]
    cmd = Command(TRUE)
    warm = 20

    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(seq_async, job_anyio_proc(cmd), n, warm))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(seq_async, job_anyio_open(argv), n, warm))

    rows = ours_rows(ours, both_waiters=True, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_open)
    rows += [
        Row(
            "trio.run_process",
            "peer",
            lambda n: run_trio(partial(seq_async, job_trio_run(argv), n, warm)),
        ),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(seq_async, job_asyncio(argv), n, warm)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(seq_async, job_asyncio(argv), n, warm)),
        ),
        Row("subprocess.run (sync floor)", "floor", lambda n: seq_sync(job_sync(argv), n, warm)),
        Row(
            "raw: posix_spawn + pidfd + waitid",
            "limit",
            lambda n: seq_sync(job_raw(argv), n, warm),
        ),
    ]
    return Scenario(
        1,
        "sequential spawn + wait of /bin/true",
        rows,
        size=100 if quick else 300,
        warm_size=10,
        reps=3 if quick else 7,
        unit="µs/process",
        notes=[
            (
                f"Each repetition: a fresh event loop, {warm} untimed spawns, then the timed ones "
                "back to back; the value is wall time / processes."
            ),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 2: many spawns at concurrency 64
# ---------------------------------------------------------------------------------------------

CONCURRENCY = 64


def sync_batches(total: int, conc: int) -> float:
    """The sync floor: Popen ``conc`` children, then wait for all of them; repeat."""
    for p in [subprocess.Popen([TRUE]) for _ in range(conc)]:
        p.wait()
    t0 = now()
    left = total
    while left > 0:
        batch = [subprocess.Popen([TRUE]) for _ in range(min(conc, left))]
        left -= len(batch)
        for p in batch:
            p.wait()
    return total / ((now() - t0) / 1e9)


def raw_batches(total: int, conc: int, warm: bool = True) -> float:
    if warm:
        for fd in [raw_spawn([TRUE]) for _ in range(conc)]:
            raw_wait(fd)
    t0 = now()
    left = total
    while left > 0:
        batch = [raw_spawn([TRUE]) for _ in range(min(conc, left))]
        left -= len(batch)
        for fd in batch:
            raw_wait(fd)
    return total / ((now() - t0) / 1e9)


def pooled(
    pool: Callable[[Job, int, int], Awaitable[float]], job: Job, total: int
) -> Callable[[], Awaitable[float]]:
    """One warm round of ``CONCURRENCY`` jobs, then the timed ``total``."""

    async def go() -> float:
        await pool(job, CONCURRENCY, CONCURRENCY)
        return await pool(job, total, CONCURRENCY)

    return go


def pooled_asyncio(job: Job, total: int) -> Callable[[], Coroutine[Any, Any, float]]:
    async def go() -> float:
        await pool_asyncio(job, CONCURRENCY, CONCURRENCY)
        return await pool_asyncio(job, total, CONCURRENCY)

    return go


def scenario2(quick: bool) -> Scenario:
    argv = [TRUE]
    cmd = Command(TRUE)

    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, pooled(pool_anyio, job_anyio_proc(cmd), n))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, pooled(pool_anyio, job_anyio_open(argv), n))

    rows = ours_rows(ours, both_waiters=False, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_open)
    rows += [
        Row(
            "trio.run_process",
            "peer",
            lambda n: run_trio(pooled(pool_trio, job_trio_run(argv), n)),
        ),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, pooled_asyncio(job_asyncio(argv), n)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, pooled_asyncio(job_asyncio(argv), n)),
        ),
        Row(
            "Popen 64 at a time, wait all (sync floor)",
            "floor",
            lambda n: sync_batches(n, CONCURRENCY),
        ),
        Row(
            "raw: posix_spawn+pidfd 64 at a time, waitid",
            "limit",
            lambda n: raw_batches(n, CONCURRENCY),
        ),
    ]
    return Scenario(
        2,
        f"spawn + wait of /bin/true, {CONCURRENCY} at a time",
        rows,
        size=500 if quick else 2000,
        warm_size=128,
        reps=2 if quick else 4,
        unit="processes/s",
        higher_is_better=True,
        notes=[
            (
                f"{CONCURRENCY} worker tasks take jobs from a shared counter; each job is a whole "
                f"spawn + wait. One untimed round of {CONCURRENCY} jobs first, in the same loop."
            ),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 9: parent CPU per spawn + wait at concurrency 64 (scenario 2's drivers, CPU time)
# ---------------------------------------------------------------------------------------------


def job_bare_anyio(argv: list[str]) -> Job:
    """The least an anyio program can do per child: ``posix_spawn``, a pidfd,
    ``anyio.wait_readable`` on it, ``waitid(P_PIDFD)``."""

    async def job() -> None:
        fd = raw_spawn(argv)
        try:
            await anyio.wait_readable(fd)
            os.waitid(os.P_PIDFD, fd, os.WEXITED)  # noqa: ASYNC222 (readable: it has exited)
        finally:
            os.close(fd)

    return job


def raw_batches_cpu(total: int) -> dict[str, float]:
    """The sync floor of scenario 2, timed in CPU: one untimed batch, then ``total``."""
    raw_batches(CONCURRENCY, CONCURRENCY, warm=False)
    c0 = time.process_time()
    pps = raw_batches(total, CONCURRENCY, warm=False)
    return {"cpu_us": (time.process_time() - c0) / total * 1e6, "pps": pps}


def pooled_cpu(
    pool: Callable[[Job, int, int], Awaitable[float]], job: Job, total: int
) -> Callable[[], Awaitable[dict[str, float]]]:
    """Scenario 2's ``pooled``, timed in CPU: one untimed round, then ``total`` jobs."""

    async def go() -> dict[str, float]:
        await pool(job, CONCURRENCY, CONCURRENCY)
        c0 = time.process_time()
        pps = await pool(job, total, CONCURRENCY)
        return {"cpu_us": (time.process_time() - c0) / total * 1e6, "pps": pps}

    return go


def pooled_cpu_asyncio(job: Job, total: int) -> Callable[[], Coroutine[Any, Any, dict[str, float]]]:
    async def go() -> dict[str, float]:
        await pool_asyncio(job, CONCURRENCY, CONCURRENCY)
        c0 = time.process_time()
        pps = await pool_asyncio(job, total, CONCURRENCY)
        return {"cpu_us": (time.process_time() - c0) / total * 1e6, "pps": pps}

    return go


BARE = "bare anyio loop: posix_spawn + pidfd + wait_readable + waitid"


def scenario9(quick: bool) -> Scenario:
    argv = [TRUE]
    cmd = Command(TRUE)
    backends: tuple[Backend, ...] = ("asyncio", "trio")

    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, pooled_cpu(pool_anyio, job_anyio_proc(cmd), n))

    def bare(b: Backend) -> Rep:
        return lambda n: run_anyio(b, pooled_cpu(pool_anyio, job_bare_anyio(argv), n))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, pooled_cpu(pool_anyio, job_anyio_open(argv), n))

    ref: dict[str, str] = {}  # row label -> the bare loop's row on the same backend
    rows: list[Row] = []
    for b in ALL_BACKENDS:
        rows.append(Row(f"anyio_proc · {b}", "ours", ours(b)))
        ref[f"anyio_proc · {b}"] = f"{BARE} · {b}"
    rows += [Row(f"{BARE} · {b}", "limit", bare(b)) for b in ALL_BACKENDS]
    for b in backends:
        rows.append(Row(f"anyio.open_process · {b}", "peer", anyio_open(b)))
        ref[f"anyio.open_process · {b}"] = f"{BARE} · {b}"
    rows += [
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, pooled_cpu_asyncio(job_asyncio(argv), n)),
        ),
        Row(
            "raw: posix_spawn+pidfd 64 at a time, blocking waitid (sync floor)",
            "floor",
            raw_batches_cpu,
        ),
    ]
    ref["asyncio.create_subprocess_exec · asyncio"] = f"{BARE} · asyncio"

    def table(sc: Scenario) -> list[str]:
        med: dict[str, dict[str, float]] = {}
        for row in sc.rows:
            vals = [v for v in row.values if isinstance(v, dict)]
            if vals:
                med[row.label] = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
        peers = [med[r.label]["cpu_us"] for r in sc.rows if r.kind == "peer" and r.label in med]
        best = min(peers) if peers else None
        lines = [
            (
                f"| stack | CPU µs per spawn+wait (median) | spread | {X} bare anyio loop "
                f"(same backend) | {X} best peer | processes/s (median) |"
            ),
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in sc.rows:
            if row.label not in med:
                lines.append(f"| {row.label} | {row.error or 'no data'} | | | | |")
                continue
            m = med[row.label]
            cpus = [v["cpu_us"] for v in row.values if isinstance(v, dict)]
            base = med.get(ref.get(row.label, ""), {}).get("cpu_us")
            lines.append(
                f"| {row_label(row)} | {fmt(m['cpu_us'])} | {spread(cpus)} | "
                f"{ratio(m['cpu_us'], base, False)} | {ratio(m['cpu_us'], best, False)} | "
                f"{fmt(m['pps'])} |"
            )
        return lines

    return Scenario(
        9,
        f"parent CPU per spawn + wait of /bin/true, {CONCURRENCY} at a time",
        rows,
        size=500 if quick else 2000,
        warm_size=128,
        reps=2 if quick else 3,
        unit="CPU µs/process",
        notes=[
            (
                f"Scenario 2's drivers ({CONCURRENCY} worker tasks, one untimed round first), "
                "timed in the parent's CPU time (`time.process_time()`: all its threads, "
                "not the children's), the figure of merit issue 13 chose over wall time. "
                f"The bare anyio loop is the least an anyio program can do per child: "
                "`os.posix_spawn`, `os.pidfd_open`, `await anyio.wait_readable(pidfd)`, "
                "`os.waitid(P_PIDFD, pidfd, WEXITED)`; each row is compared with it on its "
                "own backend. The sync floor spawns 64, then blocks in `waitid` on each."
            ),
        ],
        table=table,
    )


# ---------------------------------------------------------------------------------------------
# Scenario 3: exit-notification latency
# ---------------------------------------------------------------------------------------------

OBSERVER_CODE = r"""
import os, select, signal, sys, time
delay = float(sys.argv[1])
out = sys.stdout.buffer
try:  # real-time priority: woken ahead of every ordinary task, the parent included
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    out.write(b"SCHED_FIFO\n")
except OSError:
    out.write(b"SCHED_OTHER\n")
out.flush()
for line in sys.stdin.buffer:
    fd = os.pidfd_open(int(line))
    time.sleep(delay)                       # the parent is idle in wait() by now
    signal.pidfd_send_signal(fd, signal.SIGKILL)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll()                           # readable: the child has exited
    t = time.perf_counter_ns()              # CLOCK_MONOTONIC, shared with the parent
    os.close(fd)
    out.write(b"%d\n" % t)
    out.flush()
"""
OBSERVER_DELAY = 0.003


class Observer:
    """A helper *process* that kills a child and timestamps its exit through its own pidfd.

    A thread in the benchmark process would have to take the GIL back before reading the
    clock, while the event loop it is racing holds that GIL: its timestamps would come late
    and the measured delays would shrink (or go negative). A separate process has its own.
    It runs under SCHED_FIFO where allowed: woken by the exit, it gets a CPU ahead of every
    ordinary task (the parent included), so on a busy machine its timestamp is not the one
    that comes late. (Spinning on ``poll(0)`` instead would hold a CPU the dying child and
    the parent both need, on 2 cores.) The measured delay is everything the parent's side
    adds, its own wake-up included, which is what a caller of ``wait()`` experiences.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OBSERVER_CODE, str(OBSERVER_DELAY)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.policy = self.proc.stdout.readline().decode().strip()

    def arm(self, pid: int) -> None:
        """Have the observer open a pidfd on ``pid``, wait a bit, then SIGKILL it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"%d\n" % pid)
        self.proc.stdin.flush()

    def exit_time(self) -> int:
        """When the observer saw the armed child exit (perf_counter_ns)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the observer process died")
        return int(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


Sample = Callable[[], Awaitable[int]]


async def samples_async(sample: Sample, n: int, warm: int) -> list[float]:
    for _ in range(warm):
        await sample()
    return [await sample() / 1e3 for _ in range(n)]


def samples_sync(sample: Callable[[], int], n: int, warm: int) -> list[float]:
    for _ in range(warm):
        sample()
    return [sample() / 1e3 for _ in range(n)]


def scenario3(quick: bool, obs: Observer) -> Scenario:
    argv = [SLEEP, "60"]
    cmd = Command(*argv)
    warm = 3

    async def s_anyio_proc() -> int:
        async with spawn(cmd) as child:
            obs.arm(child.pid)
            await child.wait()
            t = now()
        return t - obs.exit_time()

    async def s_anyio_open() -> int:
        async with await anyio.open_process(argv, stdin=None, stdout=None, stderr=None) as p:
            obs.arm(p.pid)
            await p.wait()
            t = now()
        return t - obs.exit_time()

    async def s_trio() -> int:
        p = await trio.lowlevel.open_process(argv)
        try:
            obs.arm(p.pid)
            await p.wait()
            t = now()
        finally:
            await trio_finish(p)
        return t - obs.exit_time()

    async def s_asyncio() -> int:
        p = await asyncio.create_subprocess_exec(*argv)
        obs.arm(p.pid)
        await p.wait()
        t = now()
        return t - obs.exit_time()

    def s_sync() -> int:
        p = subprocess.Popen(argv)
        obs.arm(p.pid)
        p.wait()
        t = now()
        return t - obs.exit_time()

    def s_raw() -> int:
        pid = os.posix_spawn(argv[0], argv, os.environ)
        fd = os.pidfd_open(pid)
        obs.arm(pid)
        raw_wait(fd)
        t = now()
        return t - obs.exit_time()

    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(samples_async, s_anyio_proc, n, warm))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(samples_async, s_anyio_open, n, warm))

    rows = ours_rows(ours, both_waiters=True, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_open)
    rows += [
        Row(
            "trio.lowlevel.open_process",
            "peer",
            lambda n: run_trio(partial(samples_async, s_trio, n, warm)),
        ),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(samples_async, s_asyncio, n, warm)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(samples_async, s_asyncio, n, warm)),
        ),
        Row("Popen.wait (sync floor)", "floor", lambda n: samples_sync(s_sync, n, warm)),
        Row("raw: blocking waitid(P_PIDFD)", "limit", lambda n: samples_sync(s_raw, n, warm)),
    ]
    return Scenario(
        3,
        "exit-notification latency (child's exit → wait() returns)",
        rows,
        size=20 if quick else 60,
        warm_size=5,
        reps=3 if quick else 5,
        unit="µs",
        notes=[
            (
                "Child: `sleep 60`. A separate observer process (scheduling policy: "
                f"{obs.policy}) opens its own pidfd on the child, waits "
                f"{OBSERVER_DELAY * 1e3:g} ms (the parent is idle in `wait()` by then), sends "
                "SIGKILL, blocks in `poll()` on the pidfd and reads CLOCK_MONOTONIC when it "
                "turns readable. The value is the parent's CLOCK_MONOTONIC right after "
                "`wait()` returns minus that; all samples of all repetitions are pooled. The "
                "raw row is the floor of the method: a thread blocked in `waitid` on the "
                "same exit."
            ),
        ],
        allowed_children=[obs.proc.pid],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 4: pipe throughput, stdout and stdin
# ---------------------------------------------------------------------------------------------


def mib_per_s(nbytes: int, t0: int) -> float:
    return nbytes / MiB / ((now() - t0) / 1e9)


def check_total(got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"transferred {got} bytes, expected {want}")


Producer = Callable[[int], list[str]]  # the command that writes ``size`` bytes to stdout


def head_argv(size: int) -> list[str]:
    """``head -c``: small writes (about 8 KiB each)."""
    return [HEAD, "-c", str(size), "/dev/zero"]


def dd_argv(size: int) -> list[str]:
    """``dd bs=1M``: 1 MiB writes, so the pipe's capacity is the bottleneck."""
    return [DD, "if=/dev/zero", f"bs={WRITE_CHUNK}", f"count={size // WRITE_CHUNK}", "status=none"]


async def read_anyio_proc(
    size: int, producer: Producer = head_argv, chunk: int = READ_CHUNK
) -> float:
    cmd = Command(*producer(size)).stdout_piped()
    t0 = now()
    total = 0
    async with spawn(cmd) as child:
        stream = child.stdout
        assert stream is not None
        while True:
            try:
                total += len(await stream.receive(chunk))
            except anyio.EndOfStream:
                break
        (await child.wait()).check()
    check_total(total, size)
    return mib_per_s(size, t0)


async def read_anyio_open(
    size: int, producer: Producer = head_argv, chunk: int = READ_CHUNK
) -> float:
    argv = producer(size)
    t0 = now()
    total = 0
    async with await anyio.open_process(argv, stdin=None, stdout=subprocess.PIPE, stderr=None) as p:
        stream = p.stdout
        assert stream is not None
        while True:
            try:
                total += len(await stream.receive(chunk))
            except anyio.EndOfStream:
                break
        if await p.wait() != 0:
            raise RuntimeError(f"{argv[0]} failed")
    check_total(total, size)
    return mib_per_s(size, t0)


async def read_trio(size: int, producer: Producer = head_argv, chunk: int = READ_CHUNK) -> float:
    argv = producer(size)
    t0 = now()
    total = 0
    p = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        stream = p.stdout
        assert stream is not None
        while data := await stream.receive_some(chunk):
            total += len(data)
        if await p.wait() != 0:
            raise RuntimeError(f"{argv[0]} failed")
    finally:
        await trio_finish(p)
    check_total(total, size)
    return mib_per_s(size, t0)


async def read_asyncio(size: int, producer: Producer = head_argv, chunk: int = READ_CHUNK) -> float:
    argv = producer(size)
    t0 = now()
    total = 0
    p = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
    stream = p.stdout
    assert stream is not None
    while data := await stream.read(chunk):
        total += len(data)
    if await p.wait() != 0:
        raise RuntimeError(f"{argv[0]} failed")
    check_total(total, size)
    return mib_per_s(size, t0)


def read_sync(size: int, producer: Producer = head_argv, chunk: int = READ_CHUNK) -> float:
    argv = producer(size)
    t0 = now()
    total = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        fd = p.stdout.fileno()
        while data := os.read(fd, chunk):
            total += len(data)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed")
    check_total(total, size)
    return mib_per_s(size, t0)


def pipe_limit(size: int) -> float:
    """Two C programs: the same producer as the stdout rows (head, small writes)."""
    t0 = now()
    subprocess.run([SH, "-c", f"{HEAD} -c {size} /dev/zero | {CAT} >/dev/null"], check=True)
    return mib_per_s(size, t0)


def pipe_limit_dd(size: int) -> float:
    """Two C programs, the writer using 1 MiB writes like the stdin rows."""
    t0 = now()
    count = size // WRITE_CHUNK
    line = f"dd if=/dev/zero bs={WRITE_CHUNK} count={count} status=none | {CAT} >/dev/null"
    subprocess.run([SH, "-c", line], check=True)
    return mib_per_s(size, t0)


async def write_anyio_proc(size: int) -> float:
    cmd = Command(CAT).stdin_piped().stdout(Stdio.NULL)
    data = bytes(WRITE_CHUNK)
    t0 = now()
    async with spawn(cmd) as child:
        stream = child.stdin
        assert stream is not None
        for _ in range(size // WRITE_CHUNK):
            await stream.send(data)
        await stream.aclose()
        (await child.wait()).check()
    return mib_per_s(size, t0)


async def write_anyio_open(size: int) -> float:
    data = bytes(WRITE_CHUNK)
    t0 = now()
    async with await anyio.open_process(
        [CAT], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None
    ) as p:
        stream = p.stdin
        assert stream is not None
        for _ in range(size // WRITE_CHUNK):
            await stream.send(data)
        await stream.aclose()
        if await p.wait() != 0:
            raise RuntimeError("cat failed")
    return mib_per_s(size, t0)


async def write_trio(size: int) -> float:
    data = bytes(WRITE_CHUNK)
    t0 = now()
    p = await trio.lowlevel.open_process([CAT], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        stream = p.stdin
        assert stream is not None
        for _ in range(size // WRITE_CHUNK):
            await stream.send_all(data)
        await stream.aclose()
        if await p.wait() != 0:
            raise RuntimeError("cat failed")
    finally:
        await trio_finish(p)
    return mib_per_s(size, t0)


async def write_asyncio(size: int) -> float:
    data = bytes(WRITE_CHUNK)
    t0 = now()
    p = await asyncio.create_subprocess_exec(CAT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    stream = p.stdin
    assert stream is not None
    for _ in range(size // WRITE_CHUNK):
        stream.write(data)
        await stream.drain()
    stream.close()
    await stream.wait_closed()
    if await p.wait() != 0:
        raise RuntimeError("cat failed")
    return mib_per_s(size, t0)


def write_sync(size: int) -> float:
    data = bytes(WRITE_CHUNK)
    t0 = now()
    with subprocess.Popen([CAT], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as p:
        assert p.stdin is not None
        for _ in range(size // WRITE_CHUNK):
            p.stdin.write(data)
    if p.returncode != 0:
        raise RuntimeError("cat failed")
    return mib_per_s(size, t0)


def scenario4(quick: bool, direction: Literal["stdout", "stdin"]) -> Scenario:
    reading = direction == "stdout"
    ours = read_anyio_proc if reading else write_anyio_proc
    anyio_open = read_anyio_open if reading else write_anyio_open
    native_trio = read_trio if reading else write_trio
    native_asyncio = read_asyncio if reading else write_asyncio
    sync = read_sync if reading else write_sync

    def ours_rep(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(ours, n))

    def anyio_rep(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(anyio_open, n))

    rows = ours_rows(ours_rep, both_waiters=False, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_rep)
    rows += [
        Row("trio.lowlevel.open_process", "peer", lambda n: run_trio(partial(native_trio, n))),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(native_asyncio, n)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(native_asyncio, n)),
        ),
        Row(
            "Popen + os.read (sync floor)" if reading else "Popen + stdin.write (sync floor)",
            "floor",
            sync,
        ),
        Row("pipe limit: sh -c 'head | cat >/dev/null'", "limit", pipe_limit),
    ]
    if not reading:
        rows.append(Row("pipe limit: sh -c 'dd bs=1M | cat >/dev/null'", "limit", pipe_limit_dd))
    size = (64 if quick else 256) * MiB
    if reading:
        title = f"stdout throughput: {size // MiB} MiB from `head -c {size} /dev/zero`"
        how = (
            f"Each stack's stream API reads {READ_CHUNK} bytes at a time (`receive`, "
            "`receive_some`, `StreamReader.read`, `os.read`) until EOF"
        )
    else:
        title = f"stdin throughput: {size // MiB} MiB into `cat >/dev/null`"
        how = (
            f"Each stack's send API is handed the same {WRITE_CHUNK // MiB} MiB `bytes` "
            f"{size // WRITE_CHUNK} times (`send`, `send_all`, `write`+`drain`, "
            "`BufferedWriter.write`), then stdin is closed"
        )
    return Scenario(
        4,
        title,
        rows,
        size=size,
        warm_size=8 * MiB,
        reps=2 if quick else 5,
        unit="MiB/s",
        higher_is_better=True,
        notes=[
            how + "; timed end to end, from before the spawn to after the reaped exit. "
            "The pipe limit rows are the same transfer between two C programs; `head` "
            "writes in small pieces (about 8 KiB), so for stdin `dd bs=1M` (the stacks' "
            "chunk size) is the fairer ceiling.",
        ],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 10: stdout from a writer of 1 MiB pieces (scenario 4's readers, another producer)
# ---------------------------------------------------------------------------------------------

LARGE_READ = 1 << 20  # scenario 10: every stack is asked for up to 1 MiB per read


def read_sync_grown(size: int, producer: Producer = dd_argv, chunk: int = LARGE_READ) -> float:
    """A blocking ``os.read`` loop on a pipe grown to 1 MiB before the child starts."""
    argv = producer(size)
    t0 = now()
    total = 0
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, LARGE_READ)
        p = subprocess.Popen(argv, stdout=w)
        os.close(w)
        w = -1
        while data := os.read(r, chunk):
            total += len(data)
        if p.wait() != 0:
            raise RuntimeError(f"{argv[0]} failed")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    check_total(total, size)
    return mib_per_s(size, t0)


def scenario10(quick: bool) -> Scenario:
    def large(fn: Callable[..., Awaitable[float]], n: int) -> Callable[[], Awaitable[float]]:
        return partial(fn, n, dd_argv, LARGE_READ)

    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, large(read_anyio_proc, n))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, large(read_anyio_open, n))

    rows = ours_rows(ours, both_waiters=False, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_open)
    rows += [
        Row(
            "trio.lowlevel.open_process",
            "peer",
            lambda n: run_trio(partial(read_trio, n, dd_argv, LARGE_READ)),
        ),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(read_asyncio, n, dd_argv, LARGE_READ)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(read_asyncio, n, dd_argv, LARGE_READ)),
        ),
        Row("os.read loop, pipe grown to 1 MiB (sync floor)", "floor", read_sync_grown),
        Row(
            "Popen + os.read, 64 KiB pipe",
            "limit",
            lambda n: read_sync(n, dd_argv, LARGE_READ),
        ),
        Row("pipe limit: sh -c 'dd bs=1M | cat >/dev/null'", "limit", pipe_limit_dd),
    ]
    size = 64 * MiB
    return Scenario(
        10,
        f"stdout from a writer of 1 MiB pieces: `{' '.join(dd_argv(size))}`",
        rows,
        size=size,
        warm_size=8 * MiB,
        reps=3 if quick else 7,
        unit="MiB/s",
        higher_is_better=True,
        notes=[
            (
                "Scenario 4's readers with `dd bs=1M` as the producer, each stack's stream API "
                f"asked for up to {LARGE_READ // MiB} MiB per read (`receive`, `receive_some`, "
                "`StreamReader.read`, `os.read`) until EOF; timed end to end, from before the "
                "spawn to after the reaped exit. The sync floor is a blocking `os.read` loop "
                "on a pipe grown to 1 MiB (`F_SETPIPE_SZ`) before the child starts; the 64 KiB "
                "row is the same loop on a pipe left as it is, and the pipe limit row the same "
                "transfer between two C programs (`cat` reads 128 KiB at a time)."
            ),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 5: 1000 concurrently running children
# ---------------------------------------------------------------------------------------------

SCALE_ARGV = [SLEEP, "60"]


def scale_result(
    base: dict[str, float], running: dict[str, float], times: list[int]
) -> dict[str, float]:
    t0, t1, t2, t3 = times
    return {
        "start_s": (t1 - t0) / 1e9,
        "py_threads": running["py_threads"],
        "os_threads": running["os_threads"],
        "d_threads": running["os_threads"] - base["os_threads"],
        "d_fds": running["fds"] - base["fds"],
        "d_rss_mib": running["rss_mib"] - base["rss_mib"],
        "shutdown_ms": (t3 - t2) / 1e6,
    }


Hold = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]


async def scale_anyio(hold: Hold, n: int) -> dict[str, float]:
    """``n`` tasks each hold a running child; cancel the task group; all must be reaped."""
    count = 0
    ready = anyio.Event()

    def started() -> None:
        nonlocal count
        count += 1
        if count == n:
            ready.set()

    base = snapshot()
    t0 = now()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(hold, started)
        await ready.wait()
        t1 = now()
        running = snapshot()
        t2 = now()
        tg.cancel_scope.cancel()
    t3 = now()
    return scale_result(base, running, [t0, t1, t2, t3])


async def hold_anyio_proc(started: Callable[[], None]) -> None:
    async with spawn(Command(*SCALE_ARGV)):
        started()
        await anyio.sleep_forever()


async def hold_anyio_open(started: Callable[[], None]) -> None:
    # anyio's Process.aclose(): a cancelled wait() kills the child and waits, shielded.
    async with await anyio.open_process(SCALE_ARGV, stdin=None, stdout=None, stderr=None):
        started()
        await anyio.sleep_forever()


async def scale_trio(n: int) -> dict[str, float]:
    """trio.run_process under nursery.start; cancellation goes through its deliver_cancel."""
    count = 0
    ready = trio.Event()

    async def launch(nursery: trio.Nursery) -> None:
        nonlocal count
        await nursery.start(partial(trio.run_process, SCALE_ARGV, stdin=None, check=False))
        count += 1
        if count == n:
            ready.set()

    base = snapshot()
    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(launch, nursery)
        await ready.wait()
        t1 = now()
        running = snapshot()
        t2 = now()
        nursery.cancel_scope.cancel()
    t3 = now()
    return scale_result(base, running, [t0, t1, t2, t3])


async def scale_asyncio(n: int) -> dict[str, float]:
    """Tasks holding create_subprocess_exec children; cancelled, each does kill + wait."""
    count = 0
    ready = asyncio.Event()
    forever = asyncio.Event()

    async def hold() -> None:
        nonlocal count
        p = await asyncio.create_subprocess_exec(*SCALE_ARGV)
        try:
            count += 1
            if count == n:
                ready.set()
            await forever.wait()
        finally:
            if p.returncode is None:
                p.kill()
            await p.wait()

    async def cancel_all() -> None:
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if not isinstance(result, asyncio.CancelledError):
                raise RuntimeError(f"a task failed: {result!r}")

    base = snapshot()
    t0 = now()
    tasks = [asyncio.ensure_future(hold()) for _ in range(n)]
    # Like a task group: stop waiting if any holder fails before all are running.
    all_done: asyncio.Future[Any] = asyncio.gather(*tasks)
    try:
        is_ready: asyncio.Future[Any] = asyncio.ensure_future(ready.wait())
        await asyncio.wait([all_done, is_ready], return_when=asyncio.FIRST_COMPLETED)
        is_ready.cancel()
        if not ready.is_set():
            all_done.result()  # raises the failure
        t1 = now()
        running = snapshot()
        t2 = now()
        await cancel_all()
        t3 = now()
    finally:
        if not all(task.done() for task in tasks):
            await cancel_all()
        if not all_done.cancelled():
            all_done.exception()  # retrieved: the holders' outcomes were checked above
    return scale_result(base, running, [t0, t1, t2, t3])


def scale_sync(n: int) -> dict[str, float]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = snapshot()
        t0 = now()
        procs.extend(subprocess.Popen(SCALE_ARGV) for _ in range(n))
        t1 = now()
        running = snapshot()
        t2 = now()
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        t3 = now()
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                p.wait()
    return scale_result(base, running, [t0, t1, t2, t3])


def scale_raw(n: int) -> dict[str, float]:
    fds: list[int] = []
    try:
        base = snapshot()
        t0 = now()
        fds.extend(raw_spawn(SCALE_ARGV) for _ in range(n))
        t1 = now()
        running = snapshot()
        t2 = now()
        for fd in fds:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        while fds:
            raw_wait(fds.pop())
        t3 = now()
    finally:
        for fd in fds:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            raw_wait(fd)
    return scale_result(base, running, [t0, t1, t2, t3])


def scenario5(quick: bool) -> Scenario:
    def ours(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(scale_anyio, hold_anyio_proc, n))

    def anyio_open(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(scale_anyio, hold_anyio_open, n))

    rows = ours_rows(ours, both_waiters=False, what="anyio_proc")
    rows += anyio_rows("anyio.open_process", anyio_open)
    rows += [
        Row("trio.run_process", "peer", lambda n: run_trio(partial(scale_trio, n))),
        Row(
            "asyncio.create_subprocess_exec · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(scale_asyncio, n)),
        ),
        Row(
            "asyncio.create_subprocess_exec · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(scale_asyncio, n)),
        ),
        Row("Popen N, kill, wait (sync floor)", "floor", scale_sync),
        Row("raw: posix_spawn+pidfd N, kill, waitid", "limit", scale_raw),
    ]
    n = 200 if quick else 1000
    return Scenario(
        5,
        f"scale: {n} concurrently running `sleep 60` children",
        rows,
        size=n,
        warm_size=20,
        reps=1 if quick else 3,
        unit="ms shutdown",
        notes=[
            (
                f"{n} tasks each hold one child (anyio_proc: `async with spawn(...)` around "
                "`sleep_forever()`; anyio: `async with await open_process(...)`; trio: "
                "`nursery.start(trio.run_process, ...)`; asyncio: a task that does `kill()` + "
                "`wait()` when cancelled; sync/raw: a list). Once all are running, threads "
                "(`threading.active_count()` / `Threads:` in /proc/self/status), fds "
                "(/proc/self/fd) and VmRSS are read; then the group is cancelled and timed "
                "until every child is reaped. anyio_proc and trio stop children with SIGTERM "
                "(their policy), the others with SIGKILL. Δ = difference from just before "
                "the first spawn."
            ),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Scenario 6: capture all output
# ---------------------------------------------------------------------------------------------

OUTPUT_SIZE = 10 * MiB


def capture_jobs(size: int) -> tuple[Job, Job, Job, Job, Callable[[], None]]:
    argv = [HEAD, "-c", str(size), "/dev/zero"]
    cmd = Command(*argv)

    async def ours() -> None:
        out = await cmd.output()
        out.check()
        check_total(len(out.stdout), size)

    async def anyio_run() -> None:
        done = await anyio.run_process(argv, stdin=subprocess.DEVNULL)
        check_total(len(done.stdout), size)

    async def trio_run() -> None:
        done = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True
        )
        check_total(len(done.stdout), size)

    async def asyncio_communicate() -> None:
        p = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, _ = await p.communicate()
        if p.returncode != 0:
            raise RuntimeError("head failed")
        check_total(len(out), size)

    def sync_run() -> None:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        check_total(len(done.stdout), size)

    return ours, anyio_run, trio_run, asyncio_communicate, sync_run


def scenario6(quick: bool) -> Scenario:
    ours, anyio_run, trio_run, asyncio_comm, sync_run = capture_jobs(OUTPUT_SIZE)
    warm = 1

    def ours_rep(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(seq_async, ours, n, warm)) / 1e3

    def anyio_rep(b: Backend) -> Rep:
        return lambda n: run_anyio(b, partial(seq_async, anyio_run, n, warm)) / 1e3

    rows = ours_rows(ours_rep, both_waiters=False, what="anyio_proc Command.output()")
    rows += anyio_rows("anyio.run_process", anyio_rep)
    rows += [
        Row(
            "trio.run_process(capture_stdout=True)",
            "peer",
            lambda n: run_trio(partial(seq_async, trio_run, n, warm)) / 1e3,
        ),
        Row(
            "asyncio communicate() · asyncio",
            "peer",
            lambda n: run_asyncio(False, partial(seq_async, asyncio_comm, n, warm)) / 1e3,
        ),
        Row(
            "asyncio communicate() · uvloop",
            "peer",
            lambda n: run_asyncio(True, partial(seq_async, asyncio_comm, n, warm)) / 1e3,
        ),
        Row(
            "subprocess.run(capture_output=True) (sync floor)",
            "floor",
            lambda n: seq_sync(sync_run, n, warm) / 1e3,
        ),
    ]
    return Scenario(
        6,
        f"capture all output: {OUTPUT_SIZE // MiB} MiB from `head -c {OUTPUT_SIZE} /dev/zero`",
        rows,
        size=5 if quick else 10,
        warm_size=2,
        reps=3 if quick else 7,
        unit="ms/call",
        notes=[
            (
                "Each stack's capture-everything call (stdin /dev/null, stdout and stderr piped), "
                f"back to back after {warm} untimed call in the same loop; the length is checked."
            ),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def scalar_table(sc: Scenario) -> list[str]:
    stats: dict[str, float] = {}
    for row in sc.rows:
        vals = [v for v in row.values if isinstance(v, float)]
        if vals:
            stats[row.label] = statistics.median(vals)
    pick = max if sc.higher_is_better else min
    peers = [stats[r.label] for r in sc.rows if r.kind == "peer" and r.label in stats]
    best = pick(peers) if peers else None
    floors = [stats[r.label] for r in sc.rows if r.kind == "floor" and r.label in stats]
    floor = floors[0] if floors else None
    lines = [
        f"| stack | {sc.unit} (median) | spread (min{DASH}max) | {X} best peer | {X} sync floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sc.rows:
        vals = [v for v in row.values if isinstance(v, float)]
        if not vals:
            lines.append(f"| {row.label} | {row.error or 'no data'} | | | |")
            continue
        med = stats[row.label]
        lines.append(
            f"| {row_label(row)} | {fmt(med)} | {fmt(min(vals))}{DASH}{fmt(max(vals))} | "
            f"{ratio(med, best, sc.higher_is_better)} | {ratio(med, floor, sc.higher_is_better)} |"
        )
    return lines


def latency_table(sc: Scenario) -> list[str]:
    pooled: dict[str, list[float]] = {}
    for row in sc.rows:
        pooled[row.label] = [s for v in row.values if isinstance(v, list) for s in v]
    med = {k: statistics.median(v) for k, v in pooled.items() if v}
    peers = [med[r.label] for r in sc.rows if r.kind == "peer" and r.label in med]
    best = min(peers) if peers else None
    floors = [med[r.label] for r in sc.rows if r.kind == "floor" and r.label in med]
    floor = floors[0] if floors else None
    lines = [
        f"| stack | median µs | p90 µs | p99 µs | samples | {X} best peer | {X} sync floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sc.rows:
        vals = pooled[row.label]
        if not vals:
            lines.append(f"| {row.label} | {row.error or 'no data'} | | | | | |")
            continue
        m = med[row.label]
        lines.append(
            f"| {row_label(row)} | {fmt(m)} | {fmt(pct(vals, 0.9))} | {fmt(pct(vals, 0.99))} | "
            f"{len(vals)} | {ratio(m, best, False)} | {ratio(m, floor, False)} |"
        )
    return lines


def scale_table(sc: Scenario) -> list[str]:
    keys = ["start_s", "py_threads", "os_threads", "d_threads", "d_fds", "d_rss_mib", "shutdown_ms"]
    med: dict[str, dict[str, float]] = {}
    for row in sc.rows:
        vals = [v for v in row.values if isinstance(v, dict)]
        if vals:
            med[row.label] = {k: statistics.median(v[k] for v in vals) for k in keys}
    peers = [med[r.label]["shutdown_ms"] for r in sc.rows if r.kind == "peer" and r.label in med]
    best = min(peers) if peers else None
    floors = [med[r.label]["shutdown_ms"] for r in sc.rows if r.kind == "floor" and r.label in med]
    floor = floors[0] if floors else None
    lines = [
        (
            f"| stack | start {sc.size} (s) | threads py / OS (Δ) | Δ fds | Δ RSS MiB | "
            f"shutdown ms | shutdown {X} best peer | {X} sync floor |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sc.rows:
        if row.label not in med:
            lines.append(f"| {row.label} | {row.error or 'no data'} | | | | | | |")
            continue
        m = med[row.label]
        lines.append(
            f"| {row_label(row)} | {m['start_s']:.2f} | {m['py_threads']:.0f} / "
            f"{m['os_threads']:.0f} ({m['d_threads']:+.0f}) | {m['d_fds']:+.0f} | "
            f"{m['d_rss_mib']:+.1f} | "
            f"{fmt(m['shutdown_ms'])} | {ratio(m['shutdown_ms'], best, False)} | "
            f"{ratio(m['shutdown_ms'], floor, False)} |"
        )
    return lines


def report(scenarios: list[Scenario]) -> str:
    out: list[str] = []
    for sc in scenarios:
        out.append(f"### {sc.number}. {sc.title}")
        out.append("")
        out.extend(f"{note}" for note in sc.notes)
        out.append(
            sc.size_text.format(reps=sc.reps)
            if sc.size_text
            else (
                f"{sc.reps} repetitions {X} "
                f"{sc.size // MiB if sc.number in (4, 10) else sc.size} "
                f"{_size_word(sc)} per stack."
            )
        )
        out.append("")
        if sc.table is not None:
            out.extend(sc.table(sc))
        elif sc.number == 3:
            out.extend(latency_table(sc))
        elif sc.number == 5:
            out.extend(scale_table(sc))
        else:
            out.extend(scalar_table(sc))
        out.append("")
    return "\n".join(out)


def _size_word(sc: Scenario) -> str:
    return {
        1: "processes",
        2: "processes",
        3: "samples",
        4: "MiB",
        5: "children",
        6: "calls",
        9: "processes",
        10: "MiB",
    }.get(sc.number, sc.unit)


def header(args: argparse.Namespace, loads: list[float], code: str) -> str:
    uname = platform.uname()
    forced = os.environ.get(WAITER_ENV)
    return "\n".join(
        [
            f"- date: {datetime.date.today().isoformat()}",
            (
                f"- Python {platform.python_version()} ({platform.python_implementation()}), "
                f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} cores"
            ),
            (
                f"- anyio_proc {_version('anyio_proc')}, anyio {_version('anyio')}, "
                f"trio {_version('trio')}, uvloop {_version('uvloop')}"
            ),
            f"- anyio_proc measured: {code}",
            f"- command: `bench.py {' '.join(sys.argv[1:])}`"
            + (f" with {WAITER_ENV}={forced}" if forced else ""),
            "- 1-minute load average at start / end: "
            + " / ".join(f"{x:.2f}" for x in loads)
            + " (this run itself adds about 1; more means other processes competed for the cores)",
        ]
    )


def code_version() -> str:
    """Which anyio_proc was measured: where it was imported from, its git commit and
    whether the package had uncommitted changes, and a hash of its sources."""
    pkg = os.path.dirname(os.path.abspath(anyio_proc.__file__))
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(pkg):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as f:
                    digest.update(f.read())
    where = f"{pkg} (sources sha256 {digest.hexdigest()[:12]})"
    try:
        commit = subprocess.run(
            ["git", "-C", pkg, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", pkg, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return where + ", not a git checkout"
    return where + f", git {commit}" + (" with uncommitted changes" if dirty else "")


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"


# ---------------------------------------------------------------------------------------------
# Profiling
# ---------------------------------------------------------------------------------------------


def _layer_of(filename: str, func: str) -> str:
    """Which layer a profiled function belongs to (cProfile names builtins with file "~")."""
    if "posix_spawn" in func:
        return "posix_spawn (the parent waits for the child's exec)"
    if "'poll' of 'select.epoll'" in func:
        return "asleep in the event loop's epoll (the child runs)"
    if filename == "~" and "posix." in func:
        return "other system calls (pidfd_open, waitid, /proc, close)"
    for marker, layer in (
        ("/anyio_proc/", "anyio_proc"),
        ("/anyio/", "anyio"),
        ("asyncio", "event loop (asyncio, selectors, trio)"),
        ("selectors", "event loop (asyncio, selectors, trio)"),
        ("/trio/", "event loop (asyncio, selectors, trio)"),
    ):
        if marker in filename:
            return layer
    return "everything else (sniffio, builtins, stdlib)"


def profile_layers(stats: pstats.Stats, n: int) -> list[tuple[str, float]]:
    """Own time per spawn, summed by layer."""
    totals: dict[str, float] = {}
    for (filename, _line, func), entry in stats.stats.items():  # type: ignore[attr-defined]
        layer = _layer_of(filename, func)
        totals[layer] = totals.get(layer, 0.0) + entry[2]
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [(name, seconds / n * 1e6) for name, seconds in ranked]


def profile_spawn_wait(n: int, top: int) -> str:
    """cProfile of anyio_proc's sequential spawn + wait on asyncio and on trio: own time by
    layer, then the top entries by cumulative time (asyncio)."""
    job = job_anyio_proc(Command(TRUE))
    buf = io.StringIO()
    for backend in ("asyncio", "trio"):
        prof = cProfile.Profile()
        prof.runcall(run_anyio, backend, partial(seq_async, job, n, 20))
        stats = pstats.Stats(prof, stream=buf)
        layers = profile_layers(stats, n + 20)
        total = sum(us for _, us in layers)
        buf.write(f"\n{backend}: {n} spawn + wait of {TRUE} under cProfile, own time per spawn\n\n")
        buf.write("| layer | µs/spawn | share |\n|---|---:|---:|\n")
        for name, us in layers:
            buf.write(f"| {name} | {us:,.0f} | {us / total:.0%} |\n")
        buf.write(f"| total (the profiler inflates Python code) | {total:,.0f} | |\n")
        if backend == "asyncio":
            stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    p.add_argument(
        "--scenarios",
        default=",".join(map(str, ALL_SCENARIOS)),
        help="comma-separated scenario numbers (1-10; 7-10 are issue 13's scale scenarios)",
    )
    p.add_argument("--reps", type=int, default=None, help="repetitions for every scenario")
    p.add_argument("--only", default=None, help="only stacks whose label contains this text")
    p.add_argument("--json", default=None, metavar="PATH", help="also write raw results here")
    p.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=2000,
        default=None,
        metavar="N",
        help="instead: cProfile N anyio_proc spawn+wait on asyncio (default 2000)",
    )
    p.add_argument("--top", type=int, default=15, help="profile entries to show")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    forced = os.environ.get(WAITER_ENV)
    if forced and forced not in ("pidfd", "thread"):
        print(f"{WAITER_ENV} must be pidfd or thread here, not {forced!r}", file=sys.stderr)
        return 2
    if args.profile is not None:
        print(profile_spawn_wait(args.profile, args.top))
        return 0 if not children() else 1
    wanted = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    if any(s not in ALL_SCENARIOS for s in wanted):
        print(f"scenarios are numbered 1 to {ALL_SCENARIOS[-1]}", file=sys.stderr)
        return 2
    if children():
        print("this process already has children; start it on its own", file=sys.stderr)
        return 2

    code = code_version()
    limits = raise_fd_limit()  # thousands of children hold a pidfd each
    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    done: list[Scenario] = []
    observer: Observer | None = None
    try:
        for number in wanted:
            batch: list[Scenario]
            if number == 3:
                observer = Observer()
                batch = [scenario3(args.quick, observer)]
            elif number == 4:
                batch = [scenario4(args.quick, "stdout"), scenario4(args.quick, "stdin")]
            else:
                batch = [
                    {
                        1: scenario1,
                        2: scenario2,
                        5: scenario5,
                        6: scenario6,
                        7: scenario7,
                        8: scenario8,
                        9: scenario9,
                        10: scenario10,
                    }[number](args.quick)
                ]
            for sc in batch:
                if args.only:
                    sc.rows = [r for r in sc.rows if args.only in r.label]
                if args.reps is not None:
                    sc.reps = args.reps
                if sc.rows:
                    run_scenario(sc)
                    done.append(sc)
            if observer is not None:
                observer.close()
                observer = None
    finally:
        if observer is not None:
            observer.close()
        leftovers = reap_leftovers()

    elapsed = time.monotonic() - started
    loads.append(os.getloadavg()[0])
    leaked = sum(r.leaked for sc in done for r in sc.rows)
    print(header(args, loads, code))
    print(f"- {limits}; processes: room for {process_room()} more at the end")
    print(f"- total run time: {elapsed:.0f} s")
    print(
        "- children left behind at the end (/proc/self/task/*/children): "
        + (f"{leftovers} (killed and reaped)" if leftovers else "none")
        + (f"; during the run {leaked} were found after some stack" if leaked else "")
    )
    print()
    print(report(done))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [
                    {
                        "scenario": sc.number,
                        "title": sc.title,
                        "unit": sc.unit,
                        "rows": [
                            {
                                "label": r.label,
                                "kind": r.kind,
                                "waiter": r.waiter,
                                "values": r.values,
                                "error": r.error,
                                "leaked": r.leaked,
                            }
                            for r in sc.rows
                        ],
                    }
                    for sc in done
                ],
                f,
                indent=1,
            )
    return 1 if leftovers or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
