"""Another part of the program reaps our children (RELIABILITY A6, A7, H3).

A SIGCHLD handler calling ``waitpid(-1, WNOHANG)`` (gap-packages/io #138, gevent #645,
shellous #129), or code reaping our pid directly with ``os.waitpid(pid)``: the exit status
is gone, but ``wait()``, ``try_wait()``, signals and the exit policy must neither hang nor
raise. The status is then ``ExitStatus.unknown()`` (value 0, ``known`` false), as the
README documents, unless our waiter got there first, in which case it is the real one.
Every test runs on every backend and under every exit waiter (``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from anyio_proc import Child, Command, ExitStatus, spawn

from ..helpers import group_members, proc_state


def reap_everything(signum: int, frame: Any) -> None:
    """The foreign SIGCHLD handler: reap every exited child of the process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture
def foreign_sigchld_reaper() -> Iterator[None]:
    previous = signal.signal(signal.SIGCHLD, reap_everything)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


def assert_real_or_unknown(status: ExitStatus, expected: int) -> None:
    """The status is the real one (our waiter reaped first) or documented as lost."""
    assert isinstance(status, ExitStatus)
    if status.known:
        assert status == expected
    else:
        assert status == 0
        assert status.code is None
        assert status.signal is None
        assert not status.success
        assert "unknown" in str(status)


async def wait_until_zombie(pid: int) -> None:
    # No event tells a parent "exited but not reaped" without reaping: poll /proc.
    with anyio.fail_after(5):
        while True:
            if proc_state(pid) == "Z":
                return
            await anyio.sleep(0.002)


# -- the direct reap: deterministic, the status is always lost ---------------------------------


async def test_wait_after_our_pid_was_reaped_directly() -> None:
    async with spawn(Command("sleep", "100")) as child:
        child.kill()
        os.waitpid(child.pid, 0)  # somebody else takes the status
        with anyio.fail_after(2):
            status = await child.wait()
        assert status.known is False
        assert_real_or_unknown(status, -signal.SIGKILL)
        # Fused: the unknown status is the answer from now on.
        assert child.try_wait() is status
        assert child.returncode == 0
        with anyio.fail_after(2):
            assert await child.wait() is status
        # Signals are no-ops now: the pid may already be somebody else's.
        child.send_signal(signal.SIGTERM)
        child.kill()
    assert child.returncode == 0


async def test_try_wait_after_a_direct_reap_of_an_exited_child() -> None:
    async with spawn(Command("sh", "-c", "exit 5")) as child:
        await wait_until_zombie(child.pid)
        os.waitpid(child.pid, 0)
        status = child.try_wait()
        assert status is not None
        assert status.known is False
    assert child.try_wait() is status


async def test_exit_policy_after_a_direct_reap_does_not_hang() -> None:
    # The block's shutdown sees a reaped child: no signal to a possibly recycled pid, no
    # wait for ever, the block is left at once.
    with anyio.fail_after(2):
        async with spawn(Command("sh", "-c", "exit 6").shutdown(timeout=30)) as child:
            await wait_until_zombie(child.pid)
            os.waitpid(child.pid, 0)
    assert child.returncode == 0
    assert child.try_wait() is not None
    assert child.try_wait().known is False  # type: ignore[union-attr]


async def test_group_leader_zombie_reaped_by_someone_else() -> None:
    # We keep a group leader's zombie to pin its group number; somebody else reaping it
    # must not make the exit policy hang or fail.
    cmd = Command("sh", "-c", "exit 7").process_group(0).shutdown(timeout=30)
    with anyio.fail_after(5):
        async with spawn(cmd) as child:
            assert await child.wait() == 7
            assert proc_state(child.pid) == "Z"  # kept on purpose
            os.waitpid(child.pid, 0)
    assert child.returncode == 7  # read before the foreign reap: not lost
    assert group_members(child.pid) == []


async def test_pending_wait_when_a_thread_reaps_our_pid() -> None:
    # A7: a wait() already blocked when somebody else reaps. The foreign thread sits in a
    # blocking waitpid(pid), so it usually wins the race against our waiter, but either
    # outcome is legitimate; hanging is not.
    async with spawn(Command("sleep", "100")) as child, anyio.create_task_group() as tg:
        results: list[ExitStatus] = []
        done = anyio.Event()

        async def waiter_task() -> None:
            results.append(await child.wait())
            done.set()

        def foreign() -> None:
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass  # our waiter won

        thread = threading.Thread(target=foreign)
        thread.start()
        tg.start_soon(waiter_task)
        await anyio.wait_all_tasks_blocked()
        child.kill()
        with anyio.fail_after(2):
            await done.wait()
        await anyio.to_thread.run_sync(thread.join, 5)
        assert not thread.is_alive()
        assert_real_or_unknown(results[0], -signal.SIGKILL)


async def test_child_reaped_before_its_waiter_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fast child reaped by a foreign SIGCHLD handler between its creation and the making
    # of its waiter: pidfd_open then fails with ESRCH, and the pid may already be recycled,
    # so spawning must neither fail nor kill/wait that pid. Found by the handler test below.
    import anyio_proc._spawn as spawn_module
    from anyio_proc._os.launch import launch as real_launch

    reaped: list[int] = []

    def launch_then_lose_it(*args: Any) -> int:
        pid = real_launch(*args)
        os.waitpid(pid, 0)  # the foreign reaper wins the race
        reaped.append(pid)
        return pid

    monkeypatch.setattr(spawn_module, "launch", launch_then_lose_it)
    with anyio.fail_after(5):
        async with spawn(Command("true").shutdown(timeout=30)) as child:
            assert reaped == [child.pid]
            child.send_signal(signal.SIGTERM)  # no-op: nothing to signal any more
            status = await child.wait()
            assert status.known is False
            assert child.try_wait() is status
    assert child.returncode == 0


# -- a SIGCHLD handler reaping everything: racy, so many children -------------------------------


@pytest.mark.usefixtures("foreign_sigchld_reaper")
async def test_waits_never_hang_under_a_reaping_sigchld_handler() -> None:
    expected: dict[int, int] = {}
    results: dict[int, ExitStatus] = {}

    async def one(i: int) -> None:
        kind = i % 4
        if kind == 0:
            cmd, want = Command("sh", "-c", f"exit {i % 7}"), i % 7
        elif kind == 1:
            cmd, want = Command("sleep", "100"), -signal.SIGKILL
        elif kind == 2:
            cmd, want = Command("sleep", "100"), -signal.SIGTERM
        else:
            cmd, want = Command("sh", "-c", "kill -USR1 $$"), -signal.SIGUSR1
        expected[i] = want
        async with spawn(cmd.shutdown(timeout=5)) as child:
            if kind == 1:
                child.kill()
            elif kind == 2:
                child.terminate()
            results[i] = await child.wait()
            # Later calls agree with the first answer, whichever it was.
            assert child.try_wait() is results[i]
            assert child.returncode == int(results[i])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
    assert sorted(results) == list(range(40))
    for i, status in results.items():
        assert_real_or_unknown(status, expected[i])


@pytest.mark.usefixtures("foreign_sigchld_reaper")
async def test_exit_policy_under_a_reaping_sigchld_handler() -> None:
    # The block's shutdown sends SIGTERM, the handler reaps the child before we do: the
    # block is left well before the grace period, and later signals are no-ops.
    children: list[Child] = []
    with anyio.fail_after(4):
        for _ in range(10):
            async with spawn(Command("sleep", "100").shutdown(timeout=30)) as child:
                children.append(child)
    for child in children:
        status = child.try_wait()
        assert status is not None
        assert_real_or_unknown(status, -signal.SIGTERM)
        child.kill()  # a no-op: reaped, by whichever side


@pytest.mark.usefixtures("foreign_sigchld_reaper")
async def test_output_under_a_reaping_sigchld_handler() -> None:
    with anyio.fail_after(10):
        for i in range(10):
            out = await Command("sh", "-c", f"echo {i}; exit 3").output()
            assert out.stdout == f"{i}\n".encode()
            assert_real_or_unknown(out.status, 3)
