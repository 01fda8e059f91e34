"""Pid reuse: a stale ``Child`` never signals the process that got its pid (RELIABILITY C2,
H2; rust-lang/rust #13131).

The pid of a child that exited and was reaped (by us, or behind our back by somebody
else) is handed to a newcomer, on purpose: as root, ``/proc/sys/kernel/ns_last_pid`` makes
the next fork get the number we want; otherwise we fork short-lived processes until the
counter wraps round to it. Then every signalling path of the stale ``Child`` is used
(``send_signal``, ``terminate``, ``kill``, the exit policy of ``aclose``) and the newcomer,
which blocks every signal it can, must have none pending and still be alive.
"""

from __future__ import annotations

import os
import signal
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

from anyio_proc import Child, Command, Stdio, spawn

from ..helpers import PY, alive, proc_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"

# Blocks every signal it can, so one sent to it stays visible as pending in /proc; says
# its pid once blocked; exits when its stdin reaches end-of-file.
NEWCOMER = (
    "import os, signal, sys\n"
    "blockable = set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, blockable)\n"
    "print(os.getpid(), flush=True)\n"
    "sys.stdin.read()\n"
)


def _can_place_pids() -> bool:
    try:
        with open(NS_LAST_PID, "r+"):
            return True
    except OSError:
        return False


PLACE_PIDS = _can_place_pids()


def _place_next_pid(pid: int) -> None:
    """Make the next process created in this pid namespace get ``pid`` (best effort: any
    process on the machine forking meanwhile takes it first, and the caller retries)."""
    if PLACE_PIDS:
        with open(NS_LAST_PID, "w") as f:
            f.write(str(pid - 1))
        return
    # Without the knob: create and reap processes until the counter sits right before it.
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for _ in range(pid_max + 1000):
        with open(NS_LAST_PID) as f:
            if int(f.read()) == pid - 1:
                return
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
    raise AssertionError("the pid counter never came round")


def pending_signals(pid: int) -> tuple[int, int]:
    """``(thread pending, process pending)`` signal masks of ``pid``."""
    masks = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigPnd", "ShdPnd"):
                masks[key] = int(value, 16)
    return masks["SigPnd"], masks["ShdPnd"]


class Newcomer:
    """A process that got a stale child's pid; ``holder`` is our Child for it (a child of
    ours) or for the shell that started it (a stranger: somebody else's child)."""

    def __init__(self, holder: Child, pid: int) -> None:
        self.holder = holder
        self.pid = pid

    def assert_untouched(self) -> None:
        assert alive(self.pid), "the newcomer died: a stale signal reached it"
        assert pending_signals(self.pid) == (0, 0), "a stale signal reached the newcomer"


async def _start_newcomer(kind: str) -> tuple[Child, int]:
    if kind == "child":
        cmd = Command(PY, "-c", NEWCOMER)
    elif kind == "group-leader":
        cmd = Command(PY, "-c", NEWCOMER).process_group(0)
    else:  # a grandchild: not ours to wait for, so waitid() cannot see it
        # (A background job's stdin is /dev/null unless redirected from another fd.)
        cmd = Command("sh", "-c", 'exec 3<&0; "$0" -c "$1" <&3 3<&- & wait', PY, NEWCOMER)
    child = await spawn(cmd.stdin_piped().stdout_piped().stderr(Stdio.NULL))
    assert child.stdout is not None
    with anyio.fail_after(10):
        line = b""
        while not line.endswith(b"\n"):
            line += await child.stdout.receive()
    return child, int(line)


@asynccontextmanager
async def recycle(pid: int, kind: str) -> AsyncIterator[Newcomer]:
    """Start a newcomer with ``pid``; bounded retries."""
    for _ in range(100):
        if kind == "stranger" and _held(pid - 1):
            # The shell must take the number just before its background job's, and a
            # process or thread holds it (our group census's worker thread may, for a few
            # seconds after it ran): start over with another stale child.
            raise PidTaken(pid)
        # The shell takes a pid before its background job: aim one further back for it.
        _place_next_pid(pid - 1 if kind == "stranger" else pid)
        holder, got = await _start_newcomer(kind)
        if got == pid:
            try:
                yield Newcomer(holder, got)
            finally:
                await holder.aclose()
            return
        await holder.aclose()
        if proc_state(pid) is not None:
            # Some other process on the machine took the number and still runs: no
            # newcomer of ours can get it; the caller starts over with a new stale child.
            raise PidTaken(pid)
    pytest.fail(f"could not get pid {pid} back after 100 tries")


def _held(pid: int) -> bool:
    """Whether a process or a thread (of any process) has the number ``pid``."""
    return os.path.exists(f"/proc/{pid}")


class PidTaken(Exception):
    """The pid to recycle is held by a process that is not ours."""


STALE_HOW = ["reaped-by-us", "reaped-elsewhere"]
NEWCOMER_KINDS = ["child", "group-leader", "stranger"]


@pytest.mark.parametrize("how", STALE_HOW)
@pytest.mark.parametrize("group", [False, True], ids=["plain", "group"])
async def test_stale_child_never_signals_the_newcomer(how: str, group: bool) -> None:
    for newcomer_kind in NEWCOMER_KINDS:
        for _ in range(5):
            try:
                await stale_child_meets_newcomer(how, newcomer_kind, group)
                break
            except PidTaken:
                continue  # a busy machine: try again with another pid
        else:
            pytest.fail("other processes kept taking the recycled pid")


async def stale_child_meets_newcomer(how: str, newcomer_kind: str, group: bool) -> None:
    cmd = Command("sleep", "30").shutdown(timeout=0.2)
    stale = await spawn(cmd.process_group(0) if group else cmd)
    try:
        pid = stale.pid
        if how == "reaped-by-us":
            stale.kill()
            with anyio.fail_after(5):
                assert await stale.wait() == -signal.SIGKILL
                # A group leader's zombie is kept (pinning the group number) until the
                # exit policy has run: only then is the pid free.
                await stale.aclose()
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # the Child has not seen the exit
        assert proc_state(pid) is None
        async with recycle(pid, newcomer_kind) as newcomer:
            newcomer.assert_untouched()
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
                stale.send_signal(sig)
            stale.terminate()
            stale.kill()
            newcomer.assert_untouched()
            with anyio.fail_after(5):
                status = await stale.wait()
            if how == "reaped-by-us":
                assert status == -signal.SIGKILL
            else:
                assert status.known is False
            with anyio.fail_after(5):
                await stale.aclose()  # the exit policy: must not signal the number either
            stale.kill()
            newcomer.assert_untouched()
            # And the newcomer is otherwise fine: it exits normally at end of input.
            assert newcomer.holder.stdin is not None
            await newcomer.holder.stdin.aclose()
            with anyio.fail_after(5):
                assert await newcomer.holder.wait() == 0
    finally:
        await stale.aclose()
