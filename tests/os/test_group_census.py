"""One census of ``/proc`` shared by every process group being waited for.

Shutting down a thousand groups used to list ``/proc`` once per group per poll (quadratic:
seconds of CPU). Now pollers share the last census when it can answer for them, which it
can only if it was begun after their leader's exit was seen: an older one may miss what the
leader started last. These tests hold that rule on real processes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

import anyio
import pytest

from anyio_proc import Command, spawn

from ..helpers import alive

if sys.platform != "linux":
    pytest.skip("the census lists /proc, which is Linux's", allow_module_level=True)

from anyio_proc._os.groups import group_has_members, group_members_seen


def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a state change with no event), bounded."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def exited(pid: int) -> bool:
    """Our child ``pid`` has exited; its zombie is left for us to reap."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return result is not None


def test_a_census_from_before_the_leader_exited_is_not_trusted() -> None:
    # The leader waits on its stdin (a builtin: no process of its own), then starts a
    # member and exits at once. A census taken while it waited shows a group without
    # members; trusted after the exit, it would declare the group gone while the member runs.
    read_end, write_end = os.pipe()
    try:
        leader = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", "read go; sleep 60 & exit 0"],
            os.environ,
            setpgroup=0,
            file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0)],
        )
    finally:
        os.close(read_end)
    try:
        wait_for(lambda: _waiting_on_stdin(leader))
        assert group_has_members(leader, leader) is False  # the census: only the leader
        os.write(write_end, b"go\n")
        wait_for(lambda: exited(leader))
        seen = time.monotonic()
        assert group_members_seen(leader, leader, seen) is True
        wait_for(lambda: group_has_members(leader, leader) is True)
        os.killpg(leader, signal.SIGKILL)
        wait_for(lambda: group_has_members(leader, leader) is False)
    finally:
        os.close(write_end)
        try:
            os.killpg(leader, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(leader, 0)


def _waiting_on_stdin(pid: int) -> bool:
    # Asleep in read(2): the shell has started and forks nothing until it gets a line.
    with open(f"/proc/{pid}/wchan") as f:
        wchan = f.read()
    with open(f"/proc/{pid}/stat", "rb") as f:
        state = f.read().rpartition(b")")[2].split()[0]
    return state == b"S" and ("pipe" in wchan or wchan in ("", "0"))


def test_a_census_answers_every_group_whose_leader_it_saw_exit() -> None:
    # Three leaders exit (their zombies kept); one census begun after that answers for
    # all three: the one with a member left has members, the others have none.
    leaders = [
        os.posix_spawn("/bin/sh", ["sh", "-c", script], os.environ, setpgroup=0)
        for script in ("exit 0", "exit 0", "sleep 60 & exit 0")
    ]
    try:
        for leader in leaders:
            wait_for(lambda leader=leader: exited(leader))  # type: ignore[misc]
        wait_for(lambda: group_has_members(leaders[2], leaders[2]) is True)
        seen = time.monotonic()
        group_has_members(leaders[0], leaders[0])  # the census, taken after every exit
        answers = [group_members_seen(leader, leader, seen) for leader in leaders]
        assert answers == [False, False, True]
    finally:
        for leader in leaders:
            try:
                os.killpg(leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(leader, 0)


async def test_many_groups_whose_leaders_leave_a_member_all_get_the_policy() -> None:
    # Each leader starts a member and exits at once, all at about the same time: the
    # members are found through shared censuses, each gets the shutdown signal, and every
    # block ends with its group gone.
    count = 40
    cmd = Command("sh", "-c", "sleep 60 & echo $!; exit 0").stdout_piped().process_group(0)
    members: list[int] = []

    async def one() -> None:
        async with spawn(cmd) as child:
            assert child.stdout is not None
            async for line in child.stdout.lines():
                member = int(line)
                break
            members.append(member)
            await child.wait()
            assert alive(member)  # still running: the policy must find it

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
    assert len(members) == count
    assert [pid for pid in members if alive(pid)] == []
