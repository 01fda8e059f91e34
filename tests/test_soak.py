"""Soak (RELIABILITY H6, E1, E4): 20 000 spawns mixing successes, failures, cancellations,
missing programs and piped conversations, 32 at a time, while fds, threads, children and
RSS are sampled; none may grow.

Design: 10 000 spawns per exit waiter (the part that holds per-child resources: a pidfd,
or a pipe and a thread), in chunks of 500, each chunk one ``anyio.run`` on the next
backend in turn (asyncio, uvloop, trio), so every loop is soaked under every waiter within
a few minutes on 2 cores. Samples are taken between chunks, when no event loop exists, so
nothing a loop legitimately holds is counted: fds and children must be back at the baseline
exactly at every sample, no thread of the library's may be left (the event loops' worker
pools, which run the group census, may keep idle threads a while), and RSS must not trend
upwards (least-squares slope over the second half, after allocator warm-up, within an
allowance for allocator steps), nor may the number of objects the garbage collector
tracks. The figures are printed
(``pytest -s -m slow``).
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any

import anyio
import pytest

from anyio_proc import Command, spawn
from anyio_proc._os.waiters import available_waiters

from .helpers import children, join_our_threads, open_fds

pytestmark = pytest.mark.slow

BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("asyncio", {}),
    ("asyncio", {"use_uvloop": True}),
    ("trio", {}),
]
PER_WAITER = 10_000
CHUNK = 500
CONCURRENCY = 32
#: Allowed RSS trend: far below what keeping anything per spawn would cost (a Child with
#: its streams and waiter is several KiB), far above allocator noise.
MAX_RSS_SLOPE = 256.0  # bytes per spawn
#: Python objects the garbage collector tracks: a registry keeping one entry per spawn
#: would add at least one per spawn, however small it is.
MAX_OBJECT_SLOPE = 0.01  # objects per spawn

PAGE = resource.getpagesize()
MISSING = "anyio-proc-soak-no-such-program"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def chunk(start: int, count: int, tally: dict[str, int]) -> None:
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            kind = i % 6
            if kind == 0:
                status = await Command("true").status()
                assert status == 0
                tally["success"] += 1
            elif kind == 1:
                status = await Command("sh", "-c", "exit 3").status()
                assert status == 3
                tally["failure"] += 1
            elif kind == 2:
                with anyio.CancelScope() as scope:
                    async with spawn(Command("sleep", "30")) as child:
                        scope.cancel()
                        await child.wait()
                assert child.returncode is not None
                tally["cancelled"] += 1
            elif kind == 3:
                try:
                    await Command(MISSING).stdin_piped().stdout_piped().status()
                except FileNotFoundError:
                    tally["missing"] += 1
            elif kind == 4:
                cmd = Command("cat").stdin_piped().stdout_piped()
                async with spawn(cmd) as child:
                    assert child.stdin is not None
                    assert child.stdout is not None
                    await child.stdin.send(b"ping\n")
                    assert await child.stdout.receive() == b"ping\n"
                    tally["conversation"] += 1
            else:
                out = await Command("sh", "-c", "echo out; echo err >&2; kill -9 $$").output()
                assert out.stdout == b"out\n"
                assert out.stderr == b"err\n"
                assert out.status.signal == 9
                tally["killed"] += 1

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(start, start + count):
                tg.start_soon(one, i)


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


@pytest.mark.timeout(900)
@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
def test_soak(waiter: str) -> None:
    tally = dict.fromkeys(
        ("success", "failure", "cancelled", "missing", "conversation", "killed"), 0
    )
    # Warm up every loop once, then take the baseline.
    for backend, options in BACKENDS:
        anyio.run(chunk, 0, 60, tally, backend=backend, backend_options=options)
    gc.collect()
    fds = open_fds()
    spawned: list[float] = []
    rss_samples: list[float] = []
    object_samples: list[float] = []
    started = time.monotonic()
    done = 0
    for n in range(PER_WAITER // CHUNK):
        backend, options = BACKENDS[n % len(BACKENDS)]
        anyio.run(chunk, done, CHUNK, tally, backend=backend, backend_options=options)
        done += CHUNK
        gc.collect()
        assert open_fds() == fds, f"fds changed after {done} spawns"
        # The library's own threads (waiters, reapers) are gone; the event loops' worker
        # pools (which run the group census) keep idle threads for a while, as they may.
        assert join_our_threads(timeout=10) == [], f"our threads left after {done} spawns"
        assert children() == {}, f"children left after {done} spawns"
        spawned.append(done)
        rss_samples.append(rss())
        object_samples.append(len(gc.get_objects()))
    elapsed = time.monotonic() - started
    half = len(spawned) // 2
    rss_slope = slope(spawned[half:], rss_samples[half:])
    object_slope = slope(spawned[half:], object_samples[half:])
    print(
        f"\nsoak [{waiter}]: {done} spawns in {elapsed:.1f} s ({done / elapsed:.0f}/s), "
        f"outcomes {tally}; fds {len(fds)} unchanged and no thread of ours left at all "
        f"{len(spawned)} samples; RSS {rss_samples[0] / 2**20:.1f} -> "
        f"{rss_samples[-1] / 2**20:.1f} MiB (second half within "
        f"{(max(rss_samples[half:]) - min(rss_samples[half:])) / 1024:.0f} KiB), "
        f"second-half slope {rss_slope:+.2f} bytes/spawn; tracked objects "
        f"{object_samples[0]} -> {object_samples[-1]}, slope {object_slope:+.4f}/spawn"
    )
    assert all(count > 0 for count in tally.values()), tally
    assert rss_slope < MAX_RSS_SLOPE, f"RSS grows by {rss_slope:.1f} bytes per spawn"
    assert object_slope < MAX_OBJECT_SLOPE, f"{object_slope:.4f} more objects per spawn"
