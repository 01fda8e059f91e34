#!/usr/bin/env python3
"""A pipeline started by anyio_proc against the same pipeline started by ``sh -c``.

    python benchmarks/pipeline_bench.py                  # 1 GiB, 7 runs each, asyncio
    python benchmarks/pipeline_bench.py --size 256M --reps 5 --backend trio

``head -c SIZE /dev/zero | cat | wc -c`` moves SIZE bytes through two pipes. anyio_proc
joins the three processes with OS pipes, as the shell does, so no byte passes through
Python; the ratio should be 1 within noise. The two variants alternate (A B, B A, ...),
each run in a fresh event loop, and the medians are compared: wall time, and the CPU time
(user + system) of the pipeline's processes and ours, which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import time
from typing import TYPE_CHECKING

import anyio

from anyio_proc import Command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in UNITS else ""
    return int(text[: len(text) - len(unit)]) * UNITS[unit]


async def run_ours(size: int) -> bytes:
    pipeline = Command("head", "-c", str(size), "/dev/zero") | Command("cat") | Command("wc", "-c")
    out = await pipeline.output()
    out.check()
    return out.stdout


async def run_shell(size: int) -> bytes:
    line = f"head -c {size} /dev/zero | cat | wc -c"
    out = await Command.shell(line).output()
    out.check()
    return out.stdout


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped descendants (the shell's children are
    reaped by the shell, and counted with it)."""
    ours = resource.getrusage(resource.RUSAGE_SELF)
    theirs = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ours.ru_utime + ours.ru_stime + theirs.ru_utime + theirs.ru_stime


def timed(fn: Callable[[int], Awaitable[bytes]], size: int, backend: str) -> tuple[float, float]:
    """(wall, cpu) seconds of one run."""
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = anyio.run(fn, size, backend=backend)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    if int(result) != size:
        raise SystemExit(f"wc counted {int(result)} bytes, expected {size}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="bytes through the pipeline (1G, 256M...)")
    parser.add_argument("--reps", type=int, default=7, help="runs of each variant")
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    args = parser.parse_args()
    size = parse_size(args.size)
    print(f"pipeline: head -c {size} /dev/zero | cat | wc -c   ({args.reps} runs each)")
    print(f"shell line: sh -c {shlex.quote(f'head -c {size} /dev/zero | cat | wc -c')}")
    timed(run_ours, 1 << 20, args.backend)  # warm-up: imports, page cache, binaries
    timed(run_shell, 1 << 20, args.backend)
    ours: list[tuple[float, float]] = []
    shell: list[tuple[float, float]] = []
    for rep in range(args.reps):
        order = [(run_ours, ours), (run_shell, shell)]
        if rep % 2:
            order.reverse()
        for fn, times in order:
            times.append(timed(fn, size, args.backend))
    for index, what in enumerate(("wall", "cpu")):
        ours_median = statistics.median(t[index] for t in ours)
        shell_median = statistics.median(t[index] for t in shell)
        print(f"{what} time")
        print(f"  anyio_proc Pipeline: median {ours_median:.3f} s  (runs: {fmt(ours, index)})")
        print(f"  sh -c:               median {shell_median:.3f} s  (runs: {fmt(shell, index)})")
        print(f"  ratio anyio_proc / sh: {ours_median / shell_median:.3f}")
    sys.stdout.flush()


def fmt(times: list[tuple[float, float]], index: int) -> str:
    return ", ".join(f"{t[index]:.3f}" for t in times)


if __name__ == "__main__":
    main()
