"""The one ``/proc/<pid>/stat`` parser (``procfs.read_stat``) and the group queries built on
it, on real processes: the tree walk, the session walk, the group checks and the thread
waiter all read their fields through it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

if sys.platform != "linux":
    pytest.skip("/proc is Linux's", allow_module_level=True)

from anyio_proc._os.groups import group_has_members, group_in_session
from anyio_proc._os.procfs import read_stat

# A command name (what the kernel shows between parentheses) with spaces and parentheses:
# the fields must be read after its last ')'.
TRICKY_NAME = "x) (y z) 1 2"


def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll ``/proc`` until ``predicate()`` holds (a state change with no event), bounded."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_read_stat_reads_the_fields_after_a_tricky_command_name(tmp_path: Path) -> None:
    link = tmp_path / TRICKY_NAME
    link.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(link), "100"], start_new_session=True)
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            assert f"({TRICKY_NAME})".encode() in f.read()  # the name the kernel shows
        stat = read_stat(proc.pid)
        assert stat is not None
        assert (stat.ppid, stat.pgid, stat.sid) == (os.getpid(), proc.pid, proc.pid)
        assert stat.state in ("R", "S")
        assert not stat.stopped
        assert not stat.exited
        ours = read_stat(os.getpid())
        assert ours is not None
        assert stat.start >= ours.start  # clock ticks after boot: it started after us

        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: (now := read_stat(proc.pid)) is not None and now.stopped)
        proc.kill()
        wait_for(lambda: (now := read_stat(proc.pid)) is not None and now.exited)
        zombie = read_stat(proc.pid)
        assert zombie is not None
        assert zombie.start == stat.start  # the same process, with the pid, until reaped
    finally:
        proc.kill()
        proc.wait()
    assert read_stat(proc.pid) is None  # reaped: gone


def test_read_stat_of_a_thread() -> None:
    process = read_stat(os.getpid())
    thread = read_stat(os.getpid(), threading.get_native_id())
    assert process is not None
    assert thread is not None
    assert thread.state == "R"  # this thread is reading it
    assert (thread.ppid, thread.pgid, thread.sid) == (process.ppid, process.pgid, process.sid)
    assert read_stat(os.getpid(), 2**22 + 1) is None  # no such thread (above pid_max)


def test_group_queries() -> None:
    # The member is the leader's child, in its group; the leader then becomes a `sleep`
    # that never reaps it, so the member stays a zombie once killed.
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 100 & echo $!; exec sleep 100"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert leader.stdout is not None
        member = int(leader.stdout.readline())
        # Once the shell has become `sleep`: before that it may reap the member itself.
        wait_for(lambda: _comm(leader.pid) == "sleep")
        assert group_in_session(leader.pid, leader.pid) is True
        assert group_in_session(leader.pid, os.getsid(0)) is False
        assert group_has_members(leader.pid, leader.pid) is True
        os.kill(member, signal.SIGKILL)
        wait_for(lambda: (now := read_stat(member)) is not None and now.exited)
        assert group_has_members(leader.pid, leader.pid) is False  # a zombie does not count
        assert group_in_session(leader.pid, leader.pid) is True  # the leader is in it
        assert group_in_session(2**22 + 1, leader.pid) is False  # above pid_max: empty
    finally:
        leader.kill()
        leader.wait()
        leader.stdout.close()  # type: ignore[union-attr]
