"""Helpers shared by the tests: looking at the process table and fd table from outside."""

from __future__ import annotations

import gc
import glob
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import anyio

PY = sys.executable


def py(code: str) -> list[str]:
    """argv for a Python snippet: portable where a POSIX tool might not exist."""
    return [PY, "-c", code]


def open_fds() -> dict[int, str]:
    """Our open fds with what they point at, after collecting garbage."""
    gc.collect()
    result = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            result[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd listdir itself used, gone by now
    return result


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``'Z'`` for a zombie), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def children() -> dict[int, str]:
    """Every child of this process with its state: running ones and unreaped zombies."""
    kids: dict[int, str] = {}
    for path in glob.glob("/proc/self/task/*/children"):
        try:
            with open(path) as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in map(int, pids):
            state = proc_state(pid)
            if state is not None:
                kids[pid] = state
    return kids


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, grandchildren included."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(name))
    return members


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state != "Z"


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("anyio_proc")]


def join_our_threads(timeout: float) -> list[threading.Thread]:
    """Wait for the library's waiter/reaper threads to end; return those still running."""
    deadline = time.monotonic() + timeout
    for thread in our_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    return our_threads()


def kill_and_reap(pids: object) -> None:
    """Clean up after a failed test so the next one starts from a clean table."""
    for pid in pids:  # type: ignore[attr-defined]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


async def group_gone(pgid: int, timeout: float = 5.0) -> bool:
    """Wait until process group ``pgid`` has no live member; False on timeout.

    Signals to a group land on every member at once, but each dies on its own schedule, and
    nothing notifies a non-parent of the death: polling is the only way to observe it.
    """
    import anyio

    delay = 0.001
    with anyio.move_on_after(timeout):
        while group_members(pgid):
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True
    return False


async def poll_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a state change that has no event (``/proc`` contents), bounded in time."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)
