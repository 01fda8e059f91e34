"""The exit policy with the fd table full (docs/security.md: "Resource exhaustion is an
error, not a leak").

When a block ends while the program has no fd to spare (``RLIMIT_NOFILE`` reached), the
policy must still reach everything it covers: the members of the child's process group,
the jobs of its session (a child on a terminal), the descendants ``kill_tree`` walks to,
and it must still honour the grace period when another task is already waiting for the
child. The ``/proc`` walks do it by borrowing the one fd held in reserve for them
(``_os/procfs.py``); a second waiter that cannot duplicate the exit fd polls.

The table is filled in this process (the soft limit lowered first, so that stays cheap)
and restored when the block ends. Everything the test needs to look at afterwards is
opened before: the processes that could escape are held by pidfds, so a check or a
clean-up after a failure never touches a stranger that reused a pid. Every async test runs
on asyncio, uvloop and trio, under each exit waiter; the autouse ``no_leaks`` fixture then
checks that no child, fd (the reserve included) or waiter thread is left.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import anyio_proc._os.tree
from anyio_proc import Child, Command, ExitStatus, spawn
from anyio_proc._os.groups import group_has_members

from ..helpers import poll_until, py

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the policy's /proc walks and pidfds are Linux only"
)

# Generous: a loaded 2-core machine can take seconds to start an interpreter.
T = 20.0


class FdTableFull:
    """While entered, every free fd slot is taken: anything that needs a new fd fails with
    EMFILE. The soft limit is lowered just above the highest fd in use, so that filling
    takes a few dozen opens, and put back on exit."""

    def __init__(self) -> None:
        self._fillers: list[int] = []
        self._limits = resource.getrlimit(resource.RLIMIT_NOFILE)

    def __enter__(self) -> FdTableFull:
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, self._limits[1]))
        try:
            while True:
                self._fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                self.__exit__()
                raise
        return self  # the last open failed with EMFILE: the table is full

    def __exit__(self, *exc_info: object) -> None:
        fillers, self._fillers = self._fillers, []
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, self._limits)


class Held:
    """A process that is not our child, held by a pidfd opened while it surely was that
    process (it has just reported its pid and is blocked), so that the checks and the
    clean-up after a failure cannot reach a stranger that reused the number."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)

    def alive(self) -> bool:
        # Readable once the process has exited, whoever its parent is and whether or not
        # it has been reaped.
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return not poller.poll(0)

    def release(self) -> None:
        if self.alive():
            signal.pidfd_send_signal(self.fd, signal.SIGKILL)  # the test failed
        os.close(self.fd)


@pytest.fixture
def held() -> Iterator[list[Held]]:
    processes: list[Held] = []
    yield processes
    for process in processes:
        process.release()


def hold(processes: list[Held], pid: int) -> Held:
    process = Held(pid)
    processes.append(process)
    return process


async def next_line(child: Child) -> str:
    assert child.stdout is not None
    with anyio.fail_after(T):
        return await anext(child.stdout.lines())


# -- a process group --------------------------------------------------------------------------

# A member of the child's group. argv: the file to record in, and "slow" (on SIGTERM, take
# a while, record, exit) or "ignore" (ignore SIGTERM). It prints its pid once set up.
MEMBER = (
    "import os, signal, sys, time\n"
    "record, mode = sys.argv[1:]\n"
    "if mode == 'ignore':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "else:\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "print(os.getpid(), flush=True)\n"
    "if mode == 'ignore':\n"
    "    time.sleep(100)\n"
    "signal.sigwait({signal.SIGTERM})\n"
    "time.sleep(0.3)  # cleaning up: SIGKILL now would lose the record\n"
    "with open(record, 'w') as f:\n"
    "    f.write('SIGTERM')\n"
)


@pytest.mark.parametrize("mode", ["slow", "ignore"])
async def test_a_group_member_gets_the_policy_with_the_fd_table_full(
    tmp_path: Path, held: list[Held], mode: str
) -> None:
    # The leader has exited; its member runs on. Members are found by listing /proc,
    # which needs fds. The member must get SIGTERM and its grace period ("slow" records
    # its clean-up, done 0.3 s after the signal: SIGKILL at once would lose it), and
    # SIGKILL once the grace period is over ("ignore"), with the escalation reported.
    record = tmp_path / "member"
    cmd = (
        Command("sh", "-c", '"$0" -c "$1" "$2" "$3" & exit 0', sys.executable, MEMBER)
        .args([str(record), mode])
        .stdout_piped()
        .process_group(0)
        .shutdown(timeout=T if mode == "slow" else 0.5)
    )
    async with spawn(cmd) as child:
        member = hold(held, int(await next_line(child)))
        with anyio.fail_after(T):
            assert await child.wait() == 0
        assert member.alive()
        with FdTableFull():
            if mode == "slow":
                await child.aclose()
            else:
                with pytest.warns(RuntimeWarning, match="SIGKILL"):
                    await child.aclose()
        assert not member.alive()  # aclose() returned once the group was gone
        assert child.escalated is (mode == "ignore")
    if mode == "slow":
        assert record.read_text() == "SIGTERM"
    else:
        assert not record.exists()


def test_group_members_are_listed_with_the_fd_table_full() -> None:
    # The piece the policy uses, on its own: an answer, not None ("cannot tell").
    with subprocess.Popen(["sleep", "100"], start_new_session=True) as proc:
        try:
            with FdTableFull():
                answers = [group_has_members(proc.pid, 0) for _ in range(3)]
                answers.append(group_has_members(proc.pid, proc.pid))
            assert answers == [True, True, True, False]
        finally:
            proc.kill()


# -- kill_tree ----------------------------------------------------------------------------------

# The child's tree, each process labelled with its place: a grandchild; one that left the
# group and the session (setsid: only parenthood links it to us); a middle process and its
# own child (a great-grandchild, reached by the walk's second level). ``$1`` is what the
# setsid one runs: a plain sleep, or one that ignores SIGTERM (SIG_IGN survives exec).
TREE = (
    'sleep 100 & echo "plain $!"\n'
    'setsid sh -c "$1" & echo "setsid $!"\n'
    'sh -c \'sleep 100 & echo "deep $!"; exec sleep 100\' & echo "middle $!"\n'
    "exec sleep 100\n"
)
SETSID_RUNS = {"sleeps": "exec sleep 100", "ignores SIGTERM": "trap '' TERM; exec sleep 100"}


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


@pytest.mark.parametrize("setsid", list(SETSID_RUNS))
@pytest.mark.parametrize("walk", ["children files", "/proc scan"])
async def test_kill_tree_descendants_are_stopped_with_the_fd_table_full(
    held: list[Held], monkeypatch: pytest.MonkeyPatch, setsid: str, walk: str
) -> None:
    # The walk reads /proc at every level (and, with no pidfd to be had, checks each
    # descendant's start time before signalling it): each descendant must be found, get
    # SIGTERM, and SIGKILL after the grace period if it ignores SIGTERM (a second walk).
    if walk == "/proc scan":  # as without CONFIG_PROC_CHILDREN: every /proc/<pid>/stat
        monkeypatch.setattr(anyio_proc._os.tree, "_CHILDREN_FILE", False)
    ignoring = setsid == "ignores SIGTERM"
    cmd = (
        Command("sh", "-c", TREE, "tree", SETSID_RUNS[setsid])
        .stdout_piped()
        .kill_tree()
        .shutdown(timeout=0.5 if ignoring else T)
    )
    async with spawn(cmd) as child:
        places = {}
        for _ in range(4):
            place, pid = (await next_line(child)).split()
            places[place] = hold(held, int(pid))
        # Every one is set up (setsid and the middle shell have exec'd): the tree is final.
        await poll_until(lambda: all(comm(p.pid) == "sleep" for p in places.values()), T)
        with FdTableFull():
            if ignoring:
                with pytest.warns(RuntimeWarning, match="SIGKILL"):
                    await child.aclose()
            else:
                await child.aclose()
        # aclose() returned once everything it found had exited: nothing to poll for.
        assert [place for place, p in places.items() if p.alive()] == []
        assert child.escalated is ignoring
    assert child.returncode == -signal.SIGTERM


# -- the session of a child on a terminal -----------------------------------------------------

# A job of the child's session, in a process group of its own (as a shell with job control
# makes one): a signal to the child's group misses it. argv: the file to record in. SIGHUP
# is ignored, as under nohup: the test is about what the exit policy sends.
JOB = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "print('job', os.getpid(), flush=True)\n"
    "signal.sigwait({signal.SIGTERM})\n"
    "time.sleep(0.3)  # cleaning up: SIGKILL now would lose the record\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write('SIGTERM')\n"
)
# The child on the terminal: starts JOB, then "exits" at once (its zombie, kept, pins the
# session id) or "runs" until the shutdown signal kills it.
LEADER = (
    "import os, signal, sys\n"
    "code, record, then = sys.argv[1:]\n"
    "os.posix_spawn(sys.executable, [sys.executable, '-c', code, record], os.environ,\n"
    "               setpgroup=0)\n"
    "if then == 'runs':\n"
    "    signal.pause()\n"
)


@pytest.mark.parametrize("then", ["exits", "runs"])
async def test_a_session_job_gets_the_policy_with_the_fd_table_full(
    tmp_path: Path, held: list[Held], then: str
) -> None:
    # Jobs are found by listing /proc for the session id, which needs fds: the job must
    # get SIGTERM and its grace period (it records its clean-up 0.3 s after the signal).
    record = tmp_path / "job"
    cmd = Command(*py(LEADER), JOB, str(record), then).pty().shutdown(timeout=T)
    async with spawn(cmd) as child:
        match = await child.expect(rb"job (\d+)\r\n", timeout=T)
        job = hold(held, int(match.group(1)))
        assert os.getpgid(job.pid) not in (child.pid, os.getpgrp())  # a group of its own
        if then == "exits":
            with anyio.fail_after(T):
                assert await child.wait() == 0
        with FdTableFull():
            await child.aclose()
        assert not job.alive()  # aclose() returned once the session was empty
        assert not child.escalated
    assert record.read_text() == "SIGTERM"
    assert child.returncode == (0 if then == "exits" else -signal.SIGTERM)


# -- a second waiter ------------------------------------------------------------------------

# Exits 0.3 s after SIGTERM, by itself: only a policy that waits out the grace period sees
# that (SIGKILL at once would make it -9).
SLOW_TO_DIE = (
    "import signal, sys, time\n"
    "def term(*args):\n"
    "    time.sleep(0.3)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('up', flush=True)\n"
    "time.sleep(100)\n"
)


async def test_the_policy_waits_beside_another_waiter_with_the_fd_table_full() -> None:
    # A task is already in wait() when the block ends: the policy's own wait cannot have
    # a duplicate of the exit fd. No EMFILE out of the block, and no escalation.
    statuses: list[ExitStatus] = []

    async def watch(child: Child) -> None:
        statuses.append(await child.wait(close_stdin=False))

    with anyio.fail_after(T):
        async with (
            anyio.create_task_group() as tg,
            spawn(Command(*py(SLOW_TO_DIE)).stdout_piped().shutdown(timeout=T)) as child,
        ):
            assert await next_line(child) == "up"
            tg.start_soon(watch, child)
            await anyio.wait_all_tasks_blocked()
            with FdTableFull():
                await child.aclose()
    assert child.returncode == 0
    assert not child.escalated
    assert statuses == [0]


async def test_waits_started_with_the_fd_table_full_see_the_exit() -> None:
    # Several tasks wait at once, the later ones started with no fd to spare; one of
    # those is cancelled, which must leave the child and the others as they were.
    statuses: list[ExitStatus] = []

    async def watch(child: Child) -> None:
        statuses.append(await child.wait())

    async with spawn(Command(*py(SLOW_TO_DIE)).stdout_piped()) as child:
        assert await next_line(child) == "up"
        with anyio.fail_after(T):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, child)
                await anyio.wait_all_tasks_blocked()
                with FdTableFull():
                    with anyio.move_on_after(0.05) as scope:
                        await child.wait()
                    assert scope.cancelled_caught
                    assert child.try_wait() is None
                    tg.start_soon(watch, child)
                    tg.start_soon(watch, child)
                    await anyio.wait_all_tasks_blocked()
                    child.terminate()
                    # Leave the table full until every waiter has seen the exit.
                    await poll_until(lambda: len(statuses) == 3, T)
    assert statuses == [0, 0, 0]
    assert not child.escalated


# -- the reserve fd itself, in fresh interpreters ---------------------------------------------

HARNESS = """\
import errno, json, os, resource, subprocess, sys, threading
from anyio_proc._os import procfs
from anyio_proc._os.groups import group_has_members

def fill():
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, limits[1]))
    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    def empty():
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    return empty

def fds():
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))

report = {}
# Its pipes are not ours: a harness that fails must not leave the test waiting for EOF.
member = subprocess.Popen(["sleep", "100"], start_new_session=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    reserve = procfs._reserve._held[0]
    before = fds()
    if sys.argv[1] == "reused":
        # The program closed the reserve behind our back (closerange, a daemon's clean-up)
        # and the number now holds a file of its own: a walk must not close that file.
        os.close(reserve)
        mine = os.open(os.devnull, os.O_RDONLY)
        if mine != reserve:
            os.dup2(mine, reserve)
            os.close(mine)
        identity = os.stat(os.devnull).st_ino
        empty = fill()
        report["with the table full"] = group_has_members(member.pid, 0)
        empty()
        report["file kept"] = os.fstat(reserve).st_ino == identity
        os.close(reserve)
        report["after"] = group_has_members(member.pid, 0)  # the reserve is made again
        report["reserve back"] = procfs._reserve._held is not None
    elif sys.argv[1] == "threads":
        # Walks from several threads at once, racing for the one slot: each gets an answer
        # or "cannot tell" (None), nothing deadlocks, and the reserve is back afterwards.
        answers = []
        empty = fill()
        def walk():
            for _ in range(20):
                answers.append(group_has_members(member.pid, 0))
        threads = [threading.Thread(target=walk) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        report["stuck"] = sum(thread.is_alive() for thread in threads)
        report["answers"] = sorted(set(map(str, answers)))
        report["found"] = answers.count(True)
        empty()
        group_has_members(member.pid, 0)
        report["reserve back"] = procfs._reserve._held is not None
        report["fds as before"] = fds() == before
finally:
    member.kill()
    member.wait()
print(json.dumps(report))
"""


def run_harness(scenario: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, scenario],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_reserve_closed_behind_our_back_is_not_closed_again() -> None:
    report = run_harness("reused")
    assert report == {
        "with the table full": None,  # no room, and nothing closed to make some
        "file kept": True,
        "after": True,
        "reserve back": True,
    }


def test_walks_from_several_threads_share_the_reserve() -> None:
    report = run_harness("threads")
    assert report["stuck"] == 0
    assert set(report["answers"]) <= {"True", "None"}
    assert report["found"]  # at least the thread holding the lock found the member
    assert report["reserve back"] is True
    assert report["fds as before"] is True
