"""Where the parent's CPU goes in a spawn + wait, at concurrency 64 (scenario 9's load).

Each part of the launch path is wrapped so that its CPU time (``time.process_time_ns``) is
added up; the rest (event loop, pacer, wait, exit policy) is the total minus the spawn. The
wrappers cost about a microsecond each, so the total comes out a little above scenario 9's.

    python benchmarks/spawn_profile.py [asyncio|trio] [N]
"""

from __future__ import annotations

import collections
import os
import sys
import time
from typing import Any

import anyio
from bench import job_anyio_proc, pool_anyio

import anyio_proc._os.posix_spawn as posix_spawn_path
import anyio_proc._spawn as spawn_path
from anyio_proc import Command

spent: collections.Counter[str] = collections.Counter()


def timed(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` with a wrapper that adds its CPU time to ``spent[label]``."""
    fn = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.process_time_ns() - t0

    setattr(owner, name, wrapper)


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    timed(spawn_path, "start_child", "start_child (all of the spawn)")
    timed(spawn_path, "_launch", "  _launch (stdio, environment, launch)")
    timed(posix_spawn_path, "posix_spawn", "    posix_spawn path")
    timed(os, "posix_spawn", "      os.posix_spawn")
    timed(posix_spawn_path, "_file_actions", "      file actions (fd listing < 3.13)")
    timed(posix_spawn_path, "plan_stdio", "      stdio plan")
    timed(spawn_path, "_make_child", "  Child and ProcessHandle")
    job = job_anyio_proc(Command("/bin/true"))

    async def run() -> None:
        await pool_anyio(job, 64, 64)  # warm up, untimed
        spent.clear()
        t0 = time.process_time_ns()
        await pool_anyio(job, n, 64)
        total = time.process_time_ns() - t0
        version = sys.version.split()[0]
        print(f"Python {version}, {backend}: {total / n / 1e3:.1f} µs CPU per spawn+wait")
        for label, ns in spent.items():
            print(f"  {label:42s} {ns / n / 1e3:6.1f} µs")
        outside = total - spent["start_child (all of the spawn)"]
        print(
            f"  {'outside the spawn (loop, pacer, wait, policy)':42s} {outside / n / 1e3:6.1f} µs"
        )

    anyio.run(run, backend=backend)


if __name__ == "__main__":
    main()
