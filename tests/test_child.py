"""``Child`` and ``spawn()``: lifetime, waiting, reaping, signals, process groups, exit policy.

DESIGN.md sections 3 and 4; RELIABILITY.md sections A (lifecycle and reaping) and C (kill,
signals and process trees). Every test drives real processes and looks at the result from
the outside (``/proc``, ``waitpid``); the autouse ``no_leaks`` fixture in ``conftest.py``
additionally fails any test that leaves a child, an fd or a waiter thread behind.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from anyio_proc import Child, Command, ExitStatus, ProcessFailed, Stdio, spawn
from anyio_proc._os.waiters import available_waiters

from .helpers import (
    alive,
    children,
    group_members,
    join_our_threads,
    poll_until,
    proc_state,
    py,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

# A Python child that ignores SIGTERM, then says so.
IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(100)\n"
)

# A Python child that exits with 100 + signum on the signal named by argv[1], once ready.
EXITS_ON_SIGNAL = (
    "import signal, sys, time\n"
    "sig = int(sys.argv[1])\n"
    "def handler(signum, frame):\n"
    "    sys.exit(100 + signum)\n"
    "signal.signal(sig, handler)\n"
    "print('ready', flush=True)\n"
    "time.sleep(100)\n"
)

BACKEND_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


# -- helpers ---------------------------------------------------------------------------------


async def first_line(child: Child) -> str:
    """The first line the child prints on its (piped) stdout."""
    assert child.stdout is not None
    with anyio.fail_after(10):
        lines: AsyncIterator[str] = child.stdout.lines()
        return await anext(lines)


def spy(
    patch: pytest.MonkeyPatch, owner: object, name: str, calls: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """Record every call of ``owner.name`` in ``calls`` and pass it through.

    Also replaces any alias of the function held by the library's modules (``killpg =
    os.killpg`` at import time), so a spy cannot be bypassed by how the library imports it.
    """
    real = getattr(owner, name)

    def wrapper(*args: Any) -> Any:
        calls.append((name, args))
        return real(*args)

    patch.setattr(owner, name, wrapper)
    for module_name, module in list(sys.modules.items()):
        if module_name == "anyio_proc" or module_name.startswith("anyio_proc."):
            for attribute, value in list(vars(module).items()):
                if value is real:
                    patch.setattr(module, attribute, wrapper)


class SignalSpy:
    """Counts every signal-sending call the library could make, and passes each through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raw_calls: list[tuple[str, tuple[Any, ...]]] = []
        spy(monkeypatch, os, "kill", self.raw_calls)
        spy(monkeypatch, os, "killpg", self.raw_calls)
        spy(monkeypatch, signal, "pidfd_send_signal", self.raw_calls)

    @property
    def calls(self) -> list[tuple[str, int, int]]:
        """``(function, pid/pgid/pidfd, signal)`` for each call so far."""
        return [(name, args[0], args[1]) for name, args in self.raw_calls]

    def clear(self) -> None:
        self.raw_calls.clear()


@pytest.fixture
def signal_spy(monkeypatch: pytest.MonkeyPatch) -> SignalSpy:
    return SignalSpy(monkeypatch)


# -- spawn(): the two ways to own a child -----------------------------------------------------


async def test_async_with_spawn_binds_the_lifetime() -> None:
    async with spawn(Command("sleep", "100")) as child:
        assert isinstance(child, Child)
        assert isinstance(child, anyio.abc.Process)
        pid = child.pid
        assert alive(pid)
        assert child.returncode is None
        assert child.try_wait() is None
        assert alive(pid)  # polling did not disturb it
    # Leaving the block applied the default exit policy (SIGTERM) and reaped the child.
    assert child.returncode == -signal.SIGTERM
    assert proc_state(pid) is None


async def test_await_spawn_gives_the_child_to_the_caller() -> None:
    child = await spawn(Command("sleep", "100"))
    pid = child.pid
    try:
        assert alive(pid)
        assert child.returncode is None
    finally:
        await child.aclose()
    assert child.returncode == -signal.SIGTERM
    assert proc_state(pid) is None
    await child.aclose()  # a second aclose() is a no-op
    assert child.returncode == -signal.SIGTERM

    # ... or `async with child:` does the aclose().
    child = await spawn(Command("sleep", "100"))
    async with child as same:
        assert same is child
        assert child.returncode is None
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None


async def test_spawn_accepts_an_argument_list_and_a_program_name() -> None:
    async with spawn(["sh", "-c", "exit 3"]) as child:
        with anyio.fail_after(10):
            assert await child.wait() == 3
    ctx = spawn("true")
    async with ctx as child:
        with pytest.raises(RuntimeError):
            await ctx.__aenter__()  # a spawn() context is entered once
        with anyio.fail_after(10):
            assert await child.wait() == 0


def test_spawn_outside_an_event_loop_raises_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="event loop"):
        spawn(Command("true"))


async def test_pid_is_the_process_id_of_the_child() -> None:
    cmd = Command(*py("import os; print(os.getpid())")).stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdout is not None
        with anyio.fail_after(10):
            reported = int(await child.stdout.read_all())
            await child.wait()
    assert reported == child.pid


# -- wait() ------------------------------------------------------------------------------------


async def test_wait_returns_an_exit_status() -> None:
    async with spawn(Command("sh", "-c", "exit 5")) as child:
        assert child.returncode is None or child.returncode == 5
        with anyio.fail_after(10):
            status = await child.wait()
        assert isinstance(status, ExitStatus)
        assert status == 5
        assert status.code == 5
        assert status.signal is None
        assert not status.success
        assert child.returncode == 5


async def test_wait_closes_stdin_first() -> None:
    # cat exits only at EOF on stdin: wait() must close our end, or this would deadlock.
    cmd = Command("cat").stdin_piped().stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        await child.stdin.send(b"hello\n")
        with anyio.fail_after(5):
            assert await child.wait() == 0
            assert await child.stdout.read_all() == b"hello\n"
        # As if the child had closed its end: Broken, not Closed (reserved for user/block).
        with pytest.raises(anyio.BrokenResourceError):
            await child.stdin.send(b"more\n")
    # After the block closed the stream, it reports ClosedResourceError.
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdin.send(b"more\n")


async def test_wait_does_not_wait_for_stdout_eof() -> None:
    # The grandchild keeps stdout open for 30 s; wait() is about the direct child only.
    # process_group(0): the block's exit policy then stops the grandchild as well.
    cmd = Command("sh", "-c", "sleep 30 & exit 0").stdout_piped().process_group(0)
    async with spawn(cmd) as child:
        start = time.monotonic()
        with anyio.fail_after(3):
            status = await child.wait()
        assert status == 0
        assert time.monotonic() - start < 3
        grandchildren = group_members(child.pid)
        assert grandchildren, "the grandchild should still be holding stdout"
    assert group_members(child.pid) == []
    assert not any(alive(pid) for pid in grandchildren)


async def test_wait_after_kill_does_not_wait_for_a_grandchild_holding_stdout() -> None:
    # RELIABILITY C3 (cpython gh-119710): sh forks sleep (no exec, as ':' follows), we kill
    # only sh; sleep still holds stdout. process_group(0) so the block cleans sleep up.
    cmd = Command("sh", "-c", "sleep 30; :").stdout_piped().process_group(0)
    async with spawn(cmd) as child:
        await poll_until(lambda: len(group_members(child.pid)) >= 2)
        child.send_signal(signal.SIGKILL)  # the direct child only, not the group
        with anyio.fail_after(2):
            assert await child.wait() == -signal.SIGKILL
        assert [pid for pid in group_members(child.pid) if pid != child.pid]
    assert group_members(child.pid) == []


async def test_several_tasks_wait_at_once() -> None:
    results: list[ExitStatus] = []

    async def wait_for(child: Child) -> None:
        results.append(await child.wait())

    async with spawn(Command("sleep", "100")) as child:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(wait_for, child)
                await anyio.wait_all_tasks_blocked()
                assert results == []
                assert child.returncode is None
                child.kill()
    assert results == [-signal.SIGKILL] * 4


async def test_wait_is_fused() -> None:
    # RELIABILITY A1: once the status is known it is cached; no further wait syscall.
    async with spawn(Command("sh", "-c", "exit 2")) as child:
        with anyio.fail_after(10):
            first = await child.wait()
        assert first == 2
        waits: list[tuple[str, tuple[Any, ...]]] = []
        with pytest.MonkeyPatch.context() as patch:
            spy(patch, os, "waitid", waits)
            spy(patch, os, "waitpid", waits)
            assert await child.wait() == 2
            assert child.try_wait() == 2
            assert child.returncode == 2
        assert waits == []
        # Reaped: nothing is left for anyone else to collect.
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)
    assert child.returncode == 2
    with anyio.fail_after(10):
        assert await child.wait() == 2  # still fine after the block


async def test_try_wait_reaps_and_caches() -> None:
    async with spawn(Command("sh", "-c", "exit 4")) as child:
        await poll_until(lambda: proc_state(child.pid) == "Z")
        status = child.try_wait()
        assert status == 4
        assert isinstance(status, ExitStatus)
        assert proc_state(child.pid) is None  # reaped by try_wait
        assert child.try_wait() == 4
        with anyio.fail_after(10):
            assert await child.wait() == 4


async def test_a_blocked_wait_completes_when_another_task_reaps() -> None:
    # RELIABILITY A7 (trio #2209): task A blocks in wait(); task B reaps through try_wait()
    # without letting A run in between. A must still complete.
    done = anyio.Event()
    results: list[ExitStatus] = []

    async def task_a(child: Child) -> None:
        results.append(await child.wait())
        done.set()

    async with spawn(Command("sleep", "100")) as child, anyio.create_task_group() as tg:
        tg.start_soon(task_a, child)
        await anyio.wait_all_tasks_blocked()
        child.kill()
        # No checkpoint in this loop: A cannot run until B has reaped.
        deadline = time.monotonic() + 5
        status = child.try_wait()
        while status is None and time.monotonic() < deadline:
            time.sleep(0.001)
            status = child.try_wait()
        assert status == -signal.SIGKILL
        assert proc_state(child.pid) is None
        with anyio.fail_after(5):
            await done.wait()
    assert results == [-signal.SIGKILL]


async def test_waiting_does_not_busy_poll() -> None:
    # RELIABILITY A8: the wait blocks on an event; it does not loop on waitid()/time.sleep().
    calls: list[tuple[str, tuple[Any, ...]]] = []
    async with spawn(Command("sleep", "0.3")) as child:
        with pytest.MonkeyPatch.context() as patch:
            spy(patch, os, "waitid", calls)
            spy(patch, time, "sleep", calls)
            with anyio.fail_after(10):
                assert await child.wait() == 0
    names = [name for name, _ in calls]
    assert names.count("sleep") == 0
    assert names.count("waitid") < 10, names


# -- death by signal and signalling -----------------------------------------------------------


async def test_death_by_abort_reports_the_signal() -> None:
    # RELIABILITY A2. No core file: RLIMIT_CORE is 0 in the child.
    code = "import os, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.abort()"
    async with spawn(Command(*py(code))) as child:
        with anyio.fail_after(10):
            status = await child.wait()
    assert status == -signal.SIGABRT
    assert status.signal == signal.SIGABRT
    assert status.code is None
    assert not status.success
    assert "SIGABRT" in str(status)
    with pytest.raises(ProcessFailed) as info:
        status.check()
    assert "SIGABRT" in str(info.value)


def test_status_with_an_unknown_signal_number_still_formats() -> None:
    status = ExitStatus(-9876543)
    assert status.signal == 9876543
    assert "9876543" in str(status)
    assert "9876543" in str(ProcessFailed(status, ["x"]))


async def test_signals_give_the_expected_status() -> None:
    cases: list[tuple[Callable[[Child], None], int]] = [
        (Child.terminate, -signal.SIGTERM),
        (Child.kill, -signal.SIGKILL),
        (lambda child: child.send_signal(signal.SIGUSR1), -signal.SIGUSR1),
    ]
    for send, expected in cases:
        async with spawn(Command("sleep", "100")) as child:
            send(child)
            with anyio.fail_after(10):
                status = await child.wait()
        assert status == expected
        assert status.signal == -expected
        assert child.returncode == expected


async def test_a_stopped_child_is_still_running() -> None:
    async with spawn(Command("sleep", "100")) as child:
        child.send_signal(signal.SIGSTOP)
        await poll_until(lambda: proc_state(child.pid) == "T")
        assert child.try_wait() is None
        assert child.returncode is None
        with anyio.move_on_after(0.1) as scope:
            await child.wait()  # stopping is not exiting
        assert scope.cancelled_caught
        child.send_signal(signal.SIGCONT)
        child.kill()
        with anyio.fail_after(10):
            assert await child.wait() == -signal.SIGKILL


async def test_sighup_kills_a_child_and_an_ignored_sighup_is_inherited() -> None:
    # RELIABILITY C1 asks for SIGHUP at its default in the child. anyio_proc keeps what
    # subprocess, posix_spawn and `nohup` users rely on instead: an ignored SIGHUP is
    # inherited (only SIGPIPE and SIGXFSZ, which Python itself changes, are restored).
    # A test that signals SIGHUP therefore makes sure it is at its default first.
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        async with spawn(Command("sleep", "100")) as child:
            assert signal.SIGHUP not in _ignored_signals(child.pid)
            child.send_signal(signal.SIGHUP)
            with anyio.fail_after(10):
                assert await child.wait() == -signal.SIGHUP
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        async with spawn(Command("sleep", "100")) as child:
            ignored = _ignored_signals(child.pid)
            assert signal.SIGHUP in ignored
            assert signal.SIGPIPE not in ignored
    finally:
        signal.signal(signal.SIGHUP, previous)


def _ignored_signals(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                mask = int(line.split()[1], 16)
                return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigIgn line")


async def test_signals_after_reap_are_no_ops(signal_spy: SignalSpy) -> None:
    # RELIABILITY C2: a reaped pid may belong to someone else by now; never signal it.
    async with spawn(Command("true")) as child:
        with anyio.fail_after(10):
            assert await child.wait() == 0
        signal_spy.clear()
        child.send_signal(signal.SIGUSR1)
        child.terminate()
        child.kill()
        assert signal_spy.calls == []
        assert child.returncode == 0
    assert signal_spy.calls == []
    assert child.returncode == 0

    # A group leader is reaped by aclose(); after that, not even the group is signalled.
    child = await spawn(Command("true").process_group(0))
    try:
        with anyio.fail_after(10):
            assert await child.wait() == 0
    finally:
        await child.aclose()
    assert proc_state(child.pid) is None
    signal_spy.clear()
    child.send_signal(signal.SIGUSR1)
    child.terminate()
    child.kill()
    assert signal_spy.calls == []
    assert child.returncode == 0


async def test_signalling_an_exited_but_unreaped_child_is_harmless() -> None:
    # cpython #88319: no ProcessLookupError for a child that exited before we looked.
    async with spawn(Command("sh", "-c", "exit 3")) as child:
        await poll_until(lambda: proc_state(child.pid) == "Z")
        child.terminate()
        child.kill()
        child.send_signal(signal.SIGUSR1)
        with anyio.fail_after(10):
            assert await child.wait() == 3  # the real status, not the signal


# -- the exit policy --------------------------------------------------------------------------


async def test_exit_policy_terminates_a_running_child(signal_spy: SignalSpy) -> None:
    start = time.monotonic()
    async with spawn(Command("sleep", "100")) as child:
        pass
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None
    assert time.monotonic() - start < 4  # no grace period spent, no escalation
    sent = [sig for _, _, sig in signal_spy.calls]
    assert sent == [signal.SIGTERM]

    # A child that has already exited gets no signal at all.
    signal_spy.clear()
    async with spawn(Command("true")) as child:
        await poll_until(lambda: proc_state(child.pid) == "Z")
    assert child.returncode == 0
    assert signal_spy.calls == []


async def test_exit_policy_escalates_to_sigkill() -> None:
    cmd = Command(*py(IGNORES_SIGTERM)).stdout_piped().shutdown(timeout=0.2)
    with pytest.warns(RuntimeWarning, match="SIGTERM"):
        async with spawn(cmd) as child:
            assert await first_line(child) == "ready"
            start = time.monotonic()
    elapsed = time.monotonic() - start
    assert child.returncode == -signal.SIGKILL
    assert proc_state(child.pid) is None
    assert 0.2 <= elapsed < 3


async def test_exit_policy_uses_the_configured_signal() -> None:
    for sig in (signal.SIGINT, signal.SIGUSR1):
        cmd = Command(*py(EXITS_ON_SIGNAL), str(int(sig))).stdout_piped().shutdown(sig, timeout=5)
        async with spawn(cmd) as child:
            assert await first_line(child) == "ready"
        assert child.returncode == 100 + sig, sig.name
        assert proc_state(child.pid) is None


async def test_exit_policy_runs_when_the_body_raises() -> None:
    cmd = Command("sleep", "100").stdout_piped()
    with pytest.raises(ValueError, match="boom") as info:
        async with spawn(cmd) as child:
            raise ValueError("boom")
    assert type(info.value) is ValueError
    assert child.returncode == -signal.SIGTERM
    assert proc_state(child.pid) is None
    assert child.stdout is not None
    assert child.stdout.closed
    with pytest.raises(anyio.ClosedResourceError):
        await child.stdout.receive()


# -- process groups ---------------------------------------------------------------------------

GROUP_SCRIPT = "sleep 100 & sleep 100 & echo ready; wait"


@pytest.mark.parametrize("kind", ["process_group", "new_session"])
async def test_exit_policy_stops_the_whole_group(kind: str) -> None:
    cmd = Command("sh", "-c", GROUP_SCRIPT).stdout_piped()
    cmd = cmd.process_group(0) if kind == "process_group" else cmd.new_session()
    async with spawn(cmd) as child:
        assert await first_line(child) == "ready"
        assert os.getpgid(child.pid) == child.pid
        if kind == "new_session":
            assert os.getsid(child.pid) == child.pid
        members = group_members(child.pid)
        assert len(members) == 3
    assert group_members(child.pid) == []
    assert not any(alive(pid) for pid in members)
    assert child.returncode is not None
    assert proc_state(child.pid) is None


async def test_kill_kills_the_group() -> None:
    cmd = Command("sh", "-c", GROUP_SCRIPT).stdout_piped().process_group(0)
    async with spawn(cmd) as child:
        assert child.stdout is not None
        assert await first_line(child) == "ready"
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
            # Every holder of stdout is gone, so the pipe reaches EOF.
            assert await child.stdout.read_all() == b""
        await poll_until(lambda: group_members(child.pid) == [])


async def test_group_leader_zombie_is_kept_until_the_block_ends() -> None:
    # DESIGN section 4: the leader's zombie pins the group number while members run.
    cmd = Command("sh", "-c", "sleep 100 &").process_group(0)
    async with spawn(cmd) as child:
        with anyio.fail_after(5):
            assert await child.wait() == 0
        assert proc_state(child.pid) == "Z"
        members = group_members(child.pid)
        assert members, "the background sleep should still run"
        assert child.try_wait() == 0
        assert child.returncode == 0
        assert proc_state(child.pid) == "Z"
        with anyio.fail_after(5):
            assert await child.wait() == 0
        assert proc_state(child.pid) == "Z"
    assert group_members(child.pid) == []
    assert not any(alive(pid) for pid in members)
    assert proc_state(child.pid) is None
    assert child.returncode == 0


async def test_kill_reaches_the_group_after_the_leader_exited() -> None:
    cmd = Command("sh", "-c", "sleep 100 &").process_group(0)
    async with spawn(cmd) as child:
        with anyio.fail_after(5):
            assert await child.wait() == 0
        members = group_members(child.pid)
        assert members
        child.kill()
        await poll_until(lambda: group_members(child.pid) == [])
        assert child.returncode == 0
    assert proc_state(child.pid) is None


async def test_escaped_descendant_holding_stdout(tmp_path: Path) -> None:
    # RELIABILITY C5: a descendant that left the group (setsid) holds stdout open; output()
    # cannot see EOF, so a timeout must end it, with our pipe ends closed (fixture checks).
    pid_file = tmp_path / "escapee"
    cmd = Command("sh", "-c", f"setsid sleep 30 & echo $! > {pid_file}; echo hi")
    try:
        start = time.monotonic()
        try:
            with anyio.fail_after(0.5):
                result = await cmd.output()
        except TimeoutError:
            pass
        else:
            assert result.stdout == b"hi\n"
        assert time.monotonic() - start < 3
    finally:
        await poll_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        escapee = int(pid_file.read_text())
        try:
            os.kill(escapee, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- kill_on_drop and dropped children --------------------------------------------------------


async def test_kill_on_drop_kills_and_reaps(signal_spy: SignalSpy) -> None:
    child = await spawn(Command("sleep", "100").kill_on_drop())
    pid = child.pid
    assert alive(pid)
    signal_spy.clear()
    with pytest.warns(ResourceWarning):
        del child
        gc.collect()
    assert [sig for _, _, sig in signal_spy.calls] == [signal.SIGKILL]
    assert join_our_threads(timeout=5) == []
    assert proc_state(pid) is None  # killed and reaped, not left a zombie


async def test_kill_on_drop_signals_only_a_running_unkilled_child(signal_spy: SignalSpy) -> None:
    # Killed already (and exited, not yet reaped): the drop reaps it without a second kill
    # and without a warning.
    child = await spawn(Command("sleep", "100").kill_on_drop())
    pid = child.pid
    child.kill()
    await poll_until(lambda: proc_state(pid) == "Z")
    del child
    gc.collect()
    assert [sig for _, _, sig in signal_spy.calls] == [signal.SIGKILL]
    assert join_our_threads(timeout=5) == []
    assert proc_state(pid) is None

    # Reaped already: nothing to signal.
    child = await spawn(Command("true").kill_on_drop())
    with anyio.fail_after(10):
        assert await child.wait() == 0
    signal_spy.clear()
    del child
    gc.collect()
    assert signal_spy.calls == []


async def test_kill_on_drop_spares_a_disowned_grandchild() -> None:
    # RELIABILITY A5: only the direct child is killed; the grandchild waits until its parent
    # has gone (killed, then reaped) and then still writes to the inherited stdout.
    inner = "echo started; while kill -0 $PPID 2>/dev/null; do sleep 0.01; done; echo child ran"
    cmd = Command("sh", "-c", f"sh -c '{inner}' & exec sleep 100").stdout_piped()
    child = await spawn(cmd.kill_on_drop())
    stdout = child.stdout
    assert stdout is not None
    with anyio.fail_after(5):
        assert await stdout.receive() == b"started\n"  # the grandchild exists
    with pytest.warns(ResourceWarning):
        del child
        gc.collect()
    try:
        with anyio.fail_after(5):
            assert await stdout.read_all() == b"child ran\n"
    finally:
        await stdout.aclose()


async def test_dropped_child_without_kill_on_drop_is_reaped(signal_spy: SignalSpy) -> None:
    # RELIABILITY A4: no kill, but no permanent zombie either once it exits by itself.
    read_fd, write_fd = os.pipe()
    try:
        child = await spawn(Command("cat").stdin(read_fd).stdout(Stdio.NULL))
    finally:
        os.close(read_fd)
    pid = child.pid
    try:
        with pytest.warns(ResourceWarning):
            del child
            gc.collect()
        assert signal_spy.calls == []
        assert alive(pid)  # not killed: kill_on_drop is off
    finally:
        os.close(write_fd)  # cat sees EOF and exits
    assert join_our_threads(timeout=5) == []
    assert proc_state(pid) is None


# -- the host application's environment ------------------------------------------------------


async def test_wait_with_sigchld_ignored() -> None:
    # RELIABILITY A6 (bpo-32115): with SIGCHLD at SIG_IGN the kernel reaps children itself.
    # wait() must not hang. On Linux the status is lost: ExitStatus.known is False.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        async with spawn(Command("sleep", "100")) as child:
            child.kill()
            with anyio.fail_after(2):
                status = await child.wait()
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert isinstance(status, ExitStatus)
    assert status.known is False
    assert status.code is None
    assert not status.success
    assert "unknown" in str(status)
    assert proc_state(child.pid) is None


RUN_PAIRS = [("asyncio", "trio"), ("trio", "uvloop"), ("uvloop", "asyncio")]


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize(("first", "second"), RUN_PAIRS, ids=["-".join(p) for p in RUN_PAIRS])
def test_child_spawned_in_one_run_is_waited_in_another(
    first: str, second: str, waiter: str
) -> None:
    # RELIABILITY A9: the Child is not tied to the event loop that created it.
    del waiter

    async def start() -> Child:
        child = await spawn(Command("sh", "-c", "echo hi; exec sleep 100").stdout_piped())
        with anyio.move_on_after(0.05):
            await child.wait()  # a cancelled wait registered things with this loop
        return child

    async def finish(child: Child) -> ExitStatus:
        try:
            assert await first_line(child) == "hi"
            child.kill()
            with anyio.fail_after(5):
                return await child.wait()
        finally:
            await child.aclose()

    backend, options = BACKEND_OPTIONS[first]
    child = anyio.run(start, backend=backend, backend_options=options)
    backend, options = BACKEND_OPTIONS[second]
    status = anyio.run(finish, child, backend=backend, backend_options=options)
    assert status == -signal.SIGKILL
    assert proc_state(child.pid) is None


THREAD_PAIRS = [("asyncio", "asyncio"), ("uvloop", "trio"), ("trio", "trio")]


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("pair", THREAD_PAIRS, ids=["-".join(p) for p in THREAD_PAIRS])
def test_two_event_loops_in_two_threads(pair: tuple[str, str], waiter: str) -> None:
    # RELIABILITY A10: no dependency on the main thread (SIGCHLD handlers live there).
    del waiter
    statuses: list[int] = []
    errors: list[BaseException] = []

    async def spawn_many() -> list[int]:
        results: list[int] = []

        async def one() -> None:
            async with spawn(Command("true")) as child:
                results.append(await child.wait())

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(30):
                    tg.start_soon(one)
        return results

    def thread_main(name: str) -> None:
        backend, options = BACKEND_OPTIONS[name]
        try:
            statuses.extend(anyio.run(spawn_many, backend=backend, backend_options=options))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(name,)) for name in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert statuses == [0] * 60


async def test_many_concurrent_short_children() -> None:
    # RELIABILITY C6: fast exits and signal deaths in bulk; every wait completes.
    results: list[int] = []

    async def worker(n: int) -> None:
        for i in range(8):
            cmd = Command("sh", "-c", "kill -INT $$") if (n + i) % 3 == 0 else Command("true")
            async with spawn(cmd) as child:
                results.append(await child.wait())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(worker, n)
    assert len(results) == 160
    assert set(results) == {0, -signal.SIGINT}
    assert results.count(-signal.SIGINT) == sum(
        1 for n in range(20) for i in range(8) if (n + i) % 3 == 0
    )
    assert children() == {}


# -- task_status and logging ------------------------------------------------------------------


async def test_task_group_start_gives_the_child() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            child = await tg.start(Command("sleep", "100").status)
            assert isinstance(child, Child)
            assert alive(child.pid)
            assert child.returncode is None
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert proc_state(child.pid) is None


async def test_debug_logging_records_spawn_signal_and_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anyio_proc")
    async with spawn(Command("sleep", "100")) as child:
        child.terminate()
        with anyio.fail_after(10):
            await child.wait()
    pid = str(child.pid)
    records = [r for r in caplog.records if r.name.startswith("anyio_proc")]
    messages = [r.getMessage() for r in records]
    assert all(r.levelno == logging.DEBUG for r in records), messages

    def index(predicate: Callable[[str], bool]) -> int:
        for i, message in enumerate(messages):
            if predicate(message):
                return i
        raise AssertionError(f"no matching record in {messages}")

    spawned = index(lambda m: pid in m and "sleep" in m and "100" in m)
    signalled = index(lambda m: pid in m and "SIGTERM" in m)
    exited = index(
        lambda m: (
            pid in m
            and "exit" in m
            and ("15" in m or "SIGTERM" in m)
            and re.search(r"\d+(\.\d+)?\s*m?s\b", m) is not None
        )
    )
    assert spawned < signalled < exited


def test_no_output_by_default() -> None:
    # DESIGN section 8: "nothing is printed by default" -- in a fresh interpreter.
    script = (
        "import anyio\n"
        "from anyio_proc import Command, spawn\n"
        "async def main():\n"
        "    async with spawn(Command('sleep', '100')) as child:\n"
        "        child.kill()\n"
        "        await child.wait()\n"
        "anyio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert done.stderr == b""


# -- taking a pipe over ---------------------------------------------------------------------

GOODBYE = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    sys.stdout.write('goodbye\\n'); sys.stderr.write('err-bye\\n'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('up', flush=True)\n"
    "while True: time.sleep(1)\n"
)


async def test_a_taken_pipe_outlives_the_exit_policy_with_the_last_words() -> None:
    # Without take_stdout() the policy closes the pipe once the child is reaped, and what
    # the child said in its SIGTERM handler is lost unless read in time.
    cmd = Command(sys.executable, "-c", GOODBYE).stdout_piped().stderr_piped()
    async with spawn(cmd) as child:
        out, err = child.take_stdout(), child.take_stderr()
        assert child.stdout is None
        assert child.stderr is None
        seen = b""
        while b"up\n" not in seen:
            seen += await out.receive()
    async with out, err:
        assert (seen + await out.read_all()).splitlines() == [b"up", b"goodbye"]
        assert await err.read_all() == b"err-bye\n"


async def test_taking_a_pipe_twice_or_one_never_piped_is_an_error() -> None:
    async with spawn(Command("true").stdout_piped()) as child:
        child.take_stdout()
        with pytest.raises(RuntimeError, match="stdout"):
            child.take_stdout()
        with pytest.raises(RuntimeError, match="stderr"):
            child.take_stderr()
