#!/usr/bin/env python3
"""What ``Command.die_with_parent()`` costs per spawn.

It needs a step in the child before exec (``prctl(PR_SET_PDEATHSIG)``), which
``posix_spawn`` cannot run, so the spawn goes through ``subprocess.Popen`` with a
``preexec_fn``, and CPython then uses a full ``fork()`` of this process instead of the
``vfork``-style clone. Three variants, each timed as N sequential spawn+wait of
``/bin/true`` (``await cmd.status()``), interleaved in rotating order so that drift in the
machine's load hits all of them alike:

- ``posix_spawn``: the default fast path;
- ``Popen, no pre-exec``: forced onto Popen by ``current_dir`` (Popen still vforks);
- ``die_with_parent``: Popen + ``preexec_fn``, hence ``fork()``.

``fork()`` copies the page tables, so its cost grows with the parent's memory:
``--ballast-mib`` allocates and touches that much before measuring.

    python benchmarks/die_with_parent_cost.py                    # N=200, 9 repetitions
    python benchmarks/die_with_parent_cost.py --ballast-mib 512
    python benchmarks/die_with_parent_cost.py --backend trio --n 100 --reps 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import anyio

from anyio_proc import Command

TRUE = "/bin/true"


def variants() -> dict[str, Command]:
    here = os.getcwd()
    return {
        "posix_spawn": Command(TRUE),
        "Popen, no pre-exec": Command(TRUE).current_dir(here),
        "die_with_parent": Command(TRUE).die_with_parent(),
    }


async def time_batch(cmd: Command, n: int) -> float:
    """Seconds per spawn+wait, over ``n`` sequential runs."""
    start = time.perf_counter()
    for _ in range(n):
        status = await cmd.status()
        if status != 0:
            raise RuntimeError(f"{cmd!r} failed: {status}")
    return (time.perf_counter() - start) / n


def run(backend: str, n: int, reps: int, warmup: int) -> dict[str, list[float]]:
    commands = variants()
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}

    async def main() -> None:
        for name in names:  # warm-up: imports, ctypes lookup of prctl, caches
            await time_batch(commands[name], warmup)
        for rep in range(reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                samples[name].append(await time_batch(commands[name], n))

    anyio.run(main, backend=backend)
    return samples


def report(samples: dict[str, list[float]]) -> None:
    base = statistics.median(samples["posix_spawn"])
    print(f"{'variant':<22}{'median µs':>11}{'min µs':>9}{'max µs':>9}{'ratio':>8}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:<22}{median * 1e6:>11.0f}{min(values) * 1e6:>9.0f}"
            f"{max(values) * 1e6:>9.0f}{median / base:>8.2f}"
        )
    cost = statistics.median(samples["die_with_parent"]) - base
    print(f"die_with_parent costs {cost * 1e6:.0f} µs more per spawn+wait than posix_spawn")


def main() -> None:
    if sys.platform != "linux":
        sys.exit("die_with_parent is Linux-only")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="spawns per timed batch")
    parser.add_argument("--reps", type=int, default=9, help="batches per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed spawns per variant")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--ballast-mib", type=int, default=0, help="memory to hold, touched")
    args = parser.parse_args()

    ballast = bytearray(args.ballast_mib << 20)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1  # touch every page, so it is mapped and fork() must copy its PTEs
    with open("/proc/self/status") as f:
        rss = next(line.split(":")[1].strip() for line in f if line.startswith("VmRSS"))
    print(
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, backend {args.backend}, RSS {rss}, "
        f"N={args.n} spawn+wait of {TRUE} per batch, {args.reps} batches per variant"
    )
    samples = run(args.backend, args.n, args.reps, args.warmup)
    report(samples)
    del ballast


if __name__ == "__main__":
    main()
