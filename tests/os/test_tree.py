"""Process trees: ``Command.kill_tree`` and ``Command.die_with_parent``.

RELIABILITY.md C4, C5 and C7. Every tree is a real one (``sh -c`` three levels deep,
grandchildren that call ``setsid`` or ignore SIGTERM), checked from the outside: its
processes print their pids, and every process of a test's tree carries a marker in its
environment, so ``/proc/*/environ`` finds them all, including any that escaped and are no
longer anyone's child of ours. The ``strays`` fixture kills those at teardown, so a failing
test leaves nothing behind; the autouse ``no_leaks`` fixture then checks that the test
process has no child, fd or waiter thread left.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import anyio_proc._os.pdeathsig
import anyio_proc._os.tree
from anyio_proc import Child, Command, spawn

from ..helpers import PY, alive, group_members, poll_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="process trees are read from /proc: Linux only"
)

MARKER = "ANYIO_PROC_TREE_TEST"
REPO = Path(__file__).resolve().parents[2]
SHORT_GRACE = 0.2  # a tree member ignoring SIGTERM costs this much, then gets SIGKILL

# Grandchildren (level 3). Each prints its own pid once it is in the state under test.
SLEEPER = "sleep 100 & echo $!"
SETSID = "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(100)"
SETSID_IGNORING = (
    "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(100)"
)
GRANDCHILDREN = {
    "sleeps": SLEEPER,
    "calls setsid": f"{shlex.quote(PY)} -c {shlex.quote(SETSID)} &",
    # SIG_IGN survives exec, so the sleep that replaces this shell ignores SIGTERM.
    "ignores SIGTERM": "sh -c " + shlex.quote("trap '' TERM; echo $$; exec sleep 100") + " &",
    "calls setsid, ignores SIGTERM": f"{shlex.quote(PY)} -c {shlex.quote(SETSID_IGNORING)} &",
}


def tree(*grandchildren: str) -> tuple[Command, int]:
    """``sh`` (level 1) runs ``sh`` (level 2) which starts ``grandchildren`` (level 3).

    Every process prints its pid on stdout; returns the command and how many pids to read.
    """
    level2 = "\n".join(["echo $$", *grandchildren, "wait"])
    level1 = f"echo $$; sh -c {shlex.quote(level2)} & wait"
    return Command("sh", "-c", level1).stdout_piped(), 2 + len(grandchildren)


async def read_pids(child: Child, count: int) -> list[int]:
    """The first ``count`` pids the tree prints: once read, those processes are set up."""
    assert child.stdout is not None
    pids: list[int] = []
    with anyio.fail_after(10):
        async for line in child.stdout.lines():
            pids.append(int(line))
            if len(pids) == count:
                break
    assert len(pids) == count, f"the tree printed only {pids}"
    return pids


def exited(pidfd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the process behind ``pidfd`` (any process) to exit."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def doomed(pid: int) -> bool:
    """True if ``pid`` is gone, a zombie, or has SIGKILL pending (it will never run again).

    The pending bit stays set from the moment the signal is sent until the process exits,
    so unlike a liveness check this cannot pass during the short time a kill takes.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except OSError:
        return True
    kill_bit = 1 << (signal.SIGKILL - 1)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return fields["State"].split()[0] in ("Z", "X") or bool(pending & kill_bit)


class Strays:
    """The processes of one test's trees, found from the outside by an environment marker.

    Descendants inherit the environment whatever they do (``setsid``, double fork,
    re-parenting), and ``/proc/<pid>/environ`` keeps what the process was started with.
    """

    def __init__(self) -> None:
        self.value = uuid.uuid4().hex
        self._needle = f"{MARKER}={self.value}".encode()

    def mark(self, cmd: Command) -> Command:
        return cmd.env(MARKER, self.value)

    def env(self) -> dict[str, str]:
        return {**os.environ, MARKER: self.value}

    def live(self) -> list[int]:
        """Every live process carrying this test's marker (a zombie's environ is empty, and
        so, for an instant, is that of a process in the middle of an exec)."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if self._needle in environ.split(b"\0"):
                found.append(int(name))
        return found

    def kill_all(self) -> list[int]:
        """SIGKILL every marked process (through a pidfd, so never a recycled pid); wait."""
        killed = []
        for pid in self.live():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
                exited(fd, 5.0)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
        return killed


@pytest.fixture
def strays() -> Iterator[Strays]:
    found = Strays()
    yield found
    # Runs before no_leaks checks the test process: our own children among these are then
    # dead and only need reaping, which no_leaks does (and reports).
    found.kill_all()


@pytest.fixture(params=["pidfds+children", "pids+scan"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The walk as on this kernel, and as without pidfds (Linux < 5.3, fds exhausted) and
    without ``/proc/<pid>/task/<tid>/children`` (CONFIG_PROC_CHILDREN unset)."""
    if request.param == "pids+scan":
        from anyio_proc._os import pidfds  # Linux only, as this module's tests

        monkeypatch.setattr(pidfds, "_use_pidfds", False)
        monkeypatch.setattr(anyio_proc._os.tree, "_CHILDREN_FILE", False)
    return str(request.param)


# -- kill_tree and the exit policy -------------------------------------------------------------


def grouped(cmd: Command, grouping: str) -> Command:
    """``cmd`` in its own process group, its own session, or neither."""
    if grouping == "process_group":
        return cmd.process_group(0)
    if grouping == "new_session":
        return cmd.new_session()
    return cmd


@pytest.mark.parametrize("grouping", ["none", "process_group", "new_session"])
async def test_exit_policy_stops_a_three_level_tree(strays: Strays, grouping: str) -> None:
    cmd, count = tree(SLEEPER, SLEEPER)
    cmd = strays.mark(cmd).kill_tree()
    cmd = grouped(cmd, grouping)
    async with spawn(cmd) as child:
        pids = await read_pids(child, count)
        assert pids[0] == child.pid
        # The marker finds them all (environ reads empty during an exec: wait that out).
        await poll_until(lambda: sorted(strays.live()) == sorted(pids))
    # aclose() returned only once everything it found had exited: no polling needed.
    assert [pid for pid in pids if alive(pid)] == []
    assert strays.live() == []
    assert child.returncode == -signal.SIGTERM


@pytest.mark.parametrize("grouping", ["none", "process_group", "new_session"])
async def test_exit_policy_reaches_a_grandchild_that_called_setsid(
    strays: Strays, grouping: str
) -> None:
    cmd, count = tree(SLEEPER, GRANDCHILDREN["calls setsid"])
    cmd = strays.mark(cmd).kill_tree()
    cmd = grouped(cmd, grouping)
    async with spawn(cmd) as child:
        pids = await read_pids(child, count)
        escapee = pids[-1]
        assert os.getsid(escapee) == escapee  # outside our group and session
        assert escapee not in group_members(os.getpgid(child.pid))
    assert [pid for pid in pids if alive(pid)] == []
    assert strays.live() == []


@pytest.mark.parametrize(
    ("grandchild", "walk"),
    [
        ("ignores SIGTERM", "pidfds+children"),
        ("calls setsid, ignores SIGTERM", "pidfds+children"),
        ("calls setsid, ignores SIGTERM", "pids+scan"),
    ],
    indirect=["walk"],
)
async def test_exit_policy_kills_a_grandchild_that_ignores_sigterm(
    strays: Strays, grandchild: str, walk: str
) -> None:
    # The shells die of SIGTERM at once, and the grandchild, re-parented to init, is no
    # longer anyone's descendant: only what the walk found before signalling can reach it.
    cmd, count = tree(SLEEPER, GRANDCHILDREN[grandchild])
    cmd = strays.mark(cmd).kill_tree().shutdown(timeout=SHORT_GRACE)
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        async with spawn(cmd) as child:
            pids = await read_pids(child, count)
    assert [pid for pid in pids if alive(pid)] == []
    assert strays.live() == []
    assert child.returncode == -signal.SIGTERM  # the root itself went at the first signal


async def test_without_kill_tree_the_descendants_outlive_the_block(strays: Strays) -> None:
    # The problem kill_tree solves, and proof that the checks above can fail: the exit
    # policy signals the child only, or its group, and the rest lives on.
    cmd, count = tree(SLEEPER, GRANDCHILDREN["calls setsid"])
    async with spawn(strays.mark(cmd).process_group(0)) as child:
        pids = await read_pids(child, count)
    escapee = pids[-1]
    assert alive(escapee)
    assert strays.live() == [escapee]  # the group went; the setsid grandchild did not


@pytest.mark.usefixtures("walk")
async def test_kill_kills_the_whole_tree(strays: Strays) -> None:
    cmd, count = tree(SLEEPER, GRANDCHILDREN["calls setsid, ignores SIGTERM"])
    async with spawn(strays.mark(cmd).kill_tree()) as child:
        pids = await read_pids(child, count)
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
        # kill() only sends; the others are not our children and die on their own time.
        await poll_until(lambda: strays.live() == [])
    assert [pid for pid in pids if alive(pid)] == []


async def test_kill_reaches_descendants_forked_during_the_walk(strays: Strays) -> None:
    # The root forks without pause; each new process leaves the session at once. Freezing
    # each level before reading its children means none can appear behind the walk's back.
    forker = (
        "import os, time\n"
        "for n in range(300):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(100)\n"
        "        os._exit(0)\n"
        "    if n == 5:\n"
        "        print('forking', flush=True)\n"
        "time.sleep(100)\n"
    )
    cmd = strays.mark(Command(PY, "-c", forker).stdout_piped().kill_tree())
    async with spawn(cmd) as child:
        assert child.stdout is not None
        with anyio.fail_after(10):
            assert await anext(child.stdout.lines()) == "forking"
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
        await poll_until(lambda: strays.live() == [])


async def test_kill_tree_on_a_child_without_descendants(strays: Strays) -> None:
    async with spawn(strays.mark(Command("sleep", "100")).kill_tree()) as child:
        child.kill()
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
    async with spawn(Command("true").kill_tree()) as child:
        with anyio.fail_after(5):
            assert await child.wait() == 0
    assert strays.live() == []


async def test_kill_tree_after_the_child_exited_leaves_the_orphans(strays: Strays) -> None:
    # Documented limit: once the child has exited, its children were re-parented and no
    # walk can find them. Nothing is signalled; the teardown kills the orphan.
    cmd = strays.mark(Command("sh", "-c", "sleep 100 & echo $!").stdout_piped().kill_tree())
    async with spawn(cmd) as child:
        orphan = (await read_pids(child, 1))[0]
        with anyio.fail_after(5):
            assert await child.wait() == 0
    assert alive(orphan)


def test_a_descendant_is_named_by_its_parent_and_start_time() -> None:
    # What keeps a signal from reaching a process that reused a descendant's pid: it is
    # adopted only as the child of the (stopped) process it was listed under, and without a
    # pidfd, signalled only while its start time still matches.
    tree_mod: Any = anyio_proc._os.tree
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        assert tree_mod._adopt(sleeper.pid, 1) is None  # not init's child: a stranger
        held = tree_mod._adopt(sleeper.pid, os.getpid())
        assert held is not None
        assert held.fd is not None
        held.close()
        impostor = tree_mod._Proc(sleeper.pid, held.start + 1, None)
        assert not impostor.send(signal.SIGKILL)
        assert not impostor.alive()
        same = tree_mod._Proc(sleeper.pid, held.start, None)
        assert same.alive()
        assert same.send(signal.SIGKILL)
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


# -- die_with_parent ---------------------------------------------------------------------------

HARNESS = """
import os, sys, threading, time
import anyio
from anyio_proc import Command, spawn

where, armed = sys.argv[1], sys.argv[2] == "1"
kept = []

async def start():
    child = await spawn(Command("sleep", "100").die_with_parent(armed))
    kept.append(child)  # never collected, never closed: only our death ends it
    print(child.pid, flush=True)

if where == "main":
    anyio.run(start)
else:
    thread = threading.Thread(target=anyio.run, args=(start,))
    thread.start()
    thread.join()
    # join() returns a little before the kernel has released the thread: wait for that,
    # after which a parent-death signal its exit caused would be pending in the child.
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/self/task/{thread.native_id}") and time.monotonic() < deadline:
        time.sleep(0.001)
print("ready", flush=True)
time.sleep(100)
"""


@pytest.mark.parametrize(
    ("where", "armed"),
    [("main", True), ("worker", True), ("main", False)],
    ids=["main-thread", "worker-thread", "not-armed"],
)
def test_die_with_parent_child_dies_with_a_killed_parent(
    strays: Strays, where: str, armed: bool
) -> None:
    env = {**strays.env(), "PYTHONPATH": str(REPO)}
    harness = subprocess.Popen(
        [PY, "-c", HARNESS, where, "1" if armed else "0"], stdout=subprocess.PIPE, env=env
    )
    try:
        assert harness.stdout is not None
        grandchild = int(harness.stdout.readline())
        assert harness.stdout.readline() == b"ready\n"
        pidfd = os.pidfd_open(grandchild)
        try:
            # Spawned from a worker thread that has exited since: not killed with it.
            assert not doomed(grandchild)
            harness.kill()  # SIGKILL: no atexit hook, no finaliser, no kill_on_drop
            assert harness.wait() == -signal.SIGKILL
            if armed:
                assert exited(pidfd, 10), "the child outlived its parent"
            else:
                assert not exited(pidfd, 0)  # the control: nothing else would kill it
        finally:
            os.close(pidfd)
    finally:
        harness.kill()
        harness.wait()
        assert harness.stdout is not None
        harness.stdout.close()


async def test_die_with_parent_child_outlives_the_thread_that_spawned_it(
    anyio_backend: Any,
) -> None:
    # RELIABILITY C7: PR_SET_PDEATHSIG fires when the forking *thread* exits.
    echo = "import sys\nfor line in sys.stdin:\n    print(line.strip(), flush=True)\n"
    cmd = Command(PY, "-c", echo).stdin_piped().stdout_piped().die_with_parent()
    started: list[Child] = []

    async def start() -> None:
        started.append(await spawn(cmd))

    backend, options = anyio_backend
    thread = threading.Thread(
        target=lambda: anyio.run(start, backend=backend, backend_options=options)
    )
    thread.start()
    thread.join()
    tid = thread.native_id
    # Once the kernel has released the thread, a parent-death signal it caused is queued.
    await poll_until(lambda: not os.path.exists(f"/proc/self/task/{tid}"))
    async with started[0] as child:
        assert child.stdin is not None
        assert child.stdout is not None
        # A reply proves it runs: a process with SIGKILL pending never returns to user code.
        await child.stdin.send(b"ping\n")
        with anyio.fail_after(10):
            assert await anext(child.stdout.lines()) == "ping"
        assert await child.wait() == 0


def test_die_with_parent_spawn_errors_from_a_worker_thread() -> None:
    # The fork is handed to the forker thread; its errors come back to the caller, and the
    # forker, with no child to outlive, ends (no_leaks checks that no thread is left).
    errors: list[BaseException] = []

    async def start() -> None:
        try:
            await spawn(Command("/nonexistent/program").die_with_parent())
        except FileNotFoundError as exc:
            errors.append(exc)

    thread = threading.Thread(target=anyio.run, args=(start,))
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "/nonexistent/program" in str(errors[0])


async def test_die_with_parent_arms_sigkill_after_the_other_options(tmp_path: Path) -> None:
    flag = tmp_path / "pre_exec ran"
    report = (
        "import ctypes, os\n"
        "value = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
        "print(value.value, os.getpgid(0) == os.getpid(), flush=True)\n"
    )
    cmd = (
        Command(PY, "-c", report)
        .stdout_piped()
        .die_with_parent()
        .process_group(0)
        .pre_exec(flag.touch)
    )
    output = await cmd.output()
    assert output.check().stdout == f"{int(signal.SIGKILL)} True\n".encode()
    assert flag.exists()
    # Without it, nothing is armed.
    plain = await Command(PY, "-c", report).output()
    assert plain.check().stdout == b"0 False\n"


async def test_die_with_parent_takes_the_fork_path(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[object] = []
    real = os.posix_spawn

    def recording(*args: Any, **kwargs: Any) -> int:
        spawned.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "posix_spawn", recording)
    assert await Command("true").status() == 0
    fast_path = bool(spawned)  # posix_spawn is used when available (Linux)
    spawned.clear()
    assert await Command("true").die_with_parent().status() == 0
    assert spawned == []
    assert fast_path or sys.platform != "linux"


async def test_die_with_parent_when_the_parent_died_before_arming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent can die between fork and prctl; the child then belongs to init already and
    # the signal would never come. Simulated by making the expected parent someone else.
    monkeypatch.setattr(anyio_proc._os.pdeathsig, "_parent_pid", lambda: 1)
    ran = tmp_path / "ran"
    cmd = Command("sh", "-c", f"touch {shlex.quote(str(ran))}").die_with_parent()
    assert await cmd.status() == -signal.SIGKILL
    assert not ran.exists()


def test_die_with_parent_is_refused_where_it_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anyio_proc._os.pdeathsig, "SUPPORTED", False)
    with pytest.raises(ValueError, match="die_with_parent"):
        Command("true").die_with_parent()
    assert Command("true").die_with_parent(False) == Command("true")


def test_builders_are_immutable_and_compare() -> None:
    base = Command("true")
    assert base.kill_tree() == base.kill_tree(True) != base
    assert base.kill_tree().kill_tree(False) == base
    if sys.platform == "linux":
        assert base.die_with_parent() != base
    assert base._spec.kill_tree is False
    assert base._spec.die_with_parent is False


async def test_the_exit_policy_waits_for_a_slow_stop_with_the_event_loop_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process of the tree slow to stop (uninterruptible sleep, a vfork) is waited for
    up to a bound; the exit policy's walk lets other tasks run meanwhile. Here the child
    reads as running until another task has run a few turns: a walk that blocked the loop
    would only get past it by its bound."""
    import anyio_proc._os.tree as tree_mod

    turns = 0
    lie_about: set[int] = set()
    ended_by_turns: list[bool] = []
    real_stopped = tree_mod._stopped

    def slow_to_stop(pid: int) -> bool:
        if pid in lie_about:
            if turns < 3:
                return False
            lie_about.discard(pid)
            ended_by_turns.append(True)
        return real_stopped(pid)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        async with spawn(Command("sleep", "60").kill_tree()) as child:
            monkeypatch.setattr(tree_mod, "_stopped", slow_to_stop)
            lie_about.add(child.pid)
            tg.start_soon(count_turns)
        tg.cancel_scope.cancel()
    assert ended_by_turns == [True]


async def test_a_walk_cut_short_continues_what_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the exit policy's walk (here raised where it waits for a level to
    stop; an interrupt could land there) must not leave the tree stopped."""
    import anyio_proc._os.tree as tree_mod

    async def interrupted(pids: list[int], deadline: float) -> None:
        raise RuntimeError("interrupted")

    async with spawn(Command("sleep", "60").kill_tree()) as child:
        monkeypatch.setattr(tree_mod, "_await_stopped", interrupted)
        with pytest.raises(RuntimeError, match="interrupted"):
            await child._process.send_everything(signal.SIGTERM)
        monkeypatch.undo()
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
        assert state != b"T"
        assert child.returncode is None  # nothing was signalled
