"""Many children at once: every one is reaped and nothing leaks (the autouse fixture checks
children, fds and waiter threads after each test)."""

from __future__ import annotations

import signal
import time

import anyio
import pytest

from anyio_proc import Child, Command, ExitStatus, spawn

from .helpers import alive, children

pytestmark = pytest.mark.slow

TRUE = Command("true")


async def test_thousand_short_children_at_concurrency_32() -> None:
    total, concurrency = 1000, 32
    limiter = anyio.CapacityLimiter(concurrency)
    statuses: dict[int, ExitStatus] = {}
    pids: set[int] = set()
    running = 0
    most_running = 0

    async def run_one(i: int) -> None:
        nonlocal running, most_running
        async with limiter:
            running += 1
            most_running = max(most_running, running)
            try:
                async with spawn(TRUE) as child:
                    pids.add(child.pid)
                    statuses[i] = await child.wait()
            finally:
                running -= 1

    started = time.monotonic()
    with anyio.fail_after(50):
        async with anyio.create_task_group() as tg:
            for i in range(total):
                tg.start_soon(run_one, i)
    elapsed = time.monotonic() - started

    assert len(statuses) == total
    assert all(status == 0 and status.success for status in statuses.values())
    assert most_running <= concurrency
    assert not pids & set(children())  # none left, not even as a zombie
    print(f"{total} children in {elapsed:.2f} s, at most {most_running} at once")


async def test_200_children_killed_by_cancelling_their_task_group() -> None:
    total = 200
    spawned: list[Child] = []
    all_spawned = anyio.Event()

    async def run_one() -> None:
        # `sleep` exits at once on the shutdown signal (SIGTERM).
        async with spawn(Command("sleep", "60")) as child:
            spawned.append(child)
            if len(spawned) == total:
                all_spawned.set()
            await child.wait()
        pytest.fail("the child's wait() returned instead of being cancelled")

    started = time.monotonic()
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            for _ in range(total):
                tg.start_soon(run_one)
            await all_spawned.wait()
            assert all(child.returncode is None for child in spawned)
            tg.cancel_scope.cancel()
    elapsed = time.monotonic() - started

    assert len(spawned) == total
    for child in spawned:
        status = child.returncode
        assert status is not None
        assert status == -signal.SIGTERM
        assert not alive(child.pid)
    assert not {child.pid for child in spawned} & set(children())
    print(f"{total} children spawned and cancelled in {elapsed:.2f} s")
