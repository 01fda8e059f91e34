"""Threads: event loops of different kinds in different threads spawning at once, and
spawning from worker threads through ``anyio.from_thread`` (RELIABILITY A10, H4).

Nothing of the library depends on the main thread (no SIGCHLD handler) or on one global
event loop: each loop waits for its own children, and none steals another's status.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from anyio_proc import Child, Command, ExitStatus, spawn
from anyio_proc._os.waiters import available_waiters

from .helpers import children

LOOPS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {"debug": True}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}

READY_THEN_SLEEP = Command("sh", "-c", "echo ready; exec sleep 30").stdout_piped()


async def workload(tag: str, count: int) -> dict[int, tuple[str, int]]:
    """``count`` children of four kinds, eight at a time; ``{i: (kind, returncode)}``."""
    results: dict[int, tuple[str, int]] = {}
    limiter = anyio.CapacityLimiter(8)

    async def one(i: int) -> None:
        async with limiter:
            kind = ("exit", "output", "cancelled", "killed")[i % 4]
            if kind == "exit":
                status = await Command("sh", "-c", f"exit {i % 50}").status()
            elif kind == "output":
                out = await Command("echo", tag, str(i)).output()
                assert out.stdout == f"{tag} {i}\n".encode()
                status = out.status
            elif kind == "cancelled":
                with anyio.CancelScope() as scope:
                    async with spawn(READY_THEN_SLEEP) as child:
                        assert child.stdout is not None
                        assert await child.stdout.receive() == b"ready\n"
                        scope.cancel()
                        await anyio.sleep_forever()
                assert scope.cancelled_caught
                status = await child.wait()
            else:
                async with spawn(Command("sleep", "30")) as child:
                    child.kill()
                    status = await child.wait()
            results[i] = (kind, int(status))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
    return results


def expected(count: int) -> dict[int, tuple[str, int]]:
    codes = {"exit": 0, "output": 0, "cancelled": -signal.SIGTERM, "killed": -signal.SIGKILL}
    result = {}
    for i in range(count):
        kind = ("exit", "output", "cancelled", "killed")[i % 4]
        result[i] = (kind, i % 50 if kind == "exit" else codes[kind])
    return result


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
def test_asyncio_and_trio_in_two_threads_spawn_at_once(waiter: str) -> None:
    del waiter  # in force through ANYIO_PROC_WAITER
    count = 80
    barrier = threading.Barrier(3)
    results: dict[str, dict[int, tuple[str, int]]] = {}
    errors: list[BaseException] = []

    def thread_main(name: str) -> None:
        backend, options = LOOPS[name]

        async def main() -> dict[int, tuple[str, int]]:
            await anyio.to_thread.run_sync(barrier.wait, 10.0)  # start together
            return await workload(name, count)

        try:
            results[name] = anyio.run(main, backend=backend, backend_options=options)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=thread_main, args=(name,), name=f"loop-{name}")
        for name in ("asyncio", "trio")
    ]
    for thread in threads:
        thread.start()
    # The main thread runs a third loop (uvloop) meanwhile.
    barrier.wait(10.0)
    backend, options = LOOPS["uvloop"]
    results["uvloop"] = anyio.run(
        workload, "uvloop", count, backend=backend, backend_options=options
    )
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for name in ("asyncio", "trio", "uvloop"):
        assert results[name] == expected(count), name
    assert children() == {}


# -- from worker threads -------------------------------------------------------------------


async def test_spawn_from_worker_threads_through_from_thread() -> None:
    async def talk(i: int) -> tuple[bytes, int]:
        cmd = Command("sh", "-c", "read line; echo got $line; exit 4").stdin_piped()
        async with spawn(cmd.stdout_piped()) as child:
            assert child.stdin is not None
            assert child.stdout is not None
            await child.stdin.send(f"{i}\n".encode())
            data = await child.stdout.read_all()
            return data, int(await child.wait())

    def worker(n: int) -> list[tuple[bytes, int]]:
        return [anyio.from_thread.run(talk, n * 10 + k) for k in range(5)]

    results: dict[int, list[tuple[bytes, int]]] = {}

    async def run_worker(n: int) -> None:
        results[n] = await anyio.to_thread.run_sync(worker, n)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(run_worker, n)
    for n in range(4):
        assert results[n] == [(f"got {n * 10 + k}\n".encode(), 4) for k in range(5)]


async def test_a_worker_thread_owns_a_child_through_from_thread() -> None:
    # The Child is created, signalled, waited for and closed from a thread that has no
    # event loop of its own, every call going through the loop's thread.
    async def start() -> Child:
        return await spawn(READY_THEN_SLEEP)

    async def first_line(child: Child) -> bytes:
        assert child.stdout is not None
        return await child.stdout.receive()

    def worker() -> tuple[ExitStatus, ExitStatus | None]:
        child = anyio.from_thread.run(start)
        try:
            assert anyio.from_thread.run(first_line, child) == b"ready\n"
            before = anyio.from_thread.run_sync(child.try_wait)
            anyio.from_thread.run_sync(child.send_signal, signal.SIGUSR1)
            status = anyio.from_thread.run(child.wait)
        finally:
            anyio.from_thread.run(child.aclose)
        return status, before

    with anyio.fail_after(10):
        status, before = await anyio.to_thread.run_sync(worker)
    assert before is None
    assert status == -signal.SIGUSR1


# -- our threads never take the program's signals ---------------------------------------


def _waiter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("anyio_proc waiter")]


def _held_back(native_id: int) -> set[int]:
    with open(f"/proc/self/task/{native_id}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(
    "thread" not in available_waiters() or not hasattr(signal, "pthread_sigmask"),
    reason="the thread waiter and per-thread masks are POSIX's",
)
async def test_a_waiter_thread_holds_back_the_signals_meant_for_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel hands a signal for the process to any thread not holding it back, and
    # passes the main thread over when it has a signal pending already: a second Ctrl-C
    # landing in a waiter thread would leave the main thread's blocking call running.
    monkeypatch.setenv("ANYIO_PROC_WAITER", "thread")
    async with spawn(Command("sleep", "100")) as child, anyio.create_task_group() as tg:
        tg.start_soon(child.wait)
        await anyio.wait_all_tasks_blocked()  # the wait is blocked: its thread runs
        waiters = _waiter_threads()
        assert waiters, threading.enumerate()
        for thread in waiters:
            assert thread.native_id is not None
            held = _held_back(thread.native_id)
            assert {signal.SIGINT, signal.SIGTERM, signal.SIGALRM} <= held, held
        assert signal.SIGINT not in _held_back(threading.main_thread().native_id or 0)
        child.kill()
