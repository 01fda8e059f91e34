"""The pytest plugin for users (``--anyio-proc-leaks``), run on real tests through pytester.

Each test writes a small test suite, runs pytest on it in this process (``runpytest``),
and reads the outcome and the messages. The inner tests really leak: children (killed and
reaped by the plugin, which is also what keeps this suite's own leak check quiet) and fds
(which the plugin leaves open: the inner conftest closes them when its session ends).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from ..helpers import PY, proc_state

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the check reads /proc")

INI = """
[pytest]
addopts = -p no:cacheprovider -p no:trio
anyio_mode = auto
"""

# The inner suites' conftest: every backend for async tests, and a place for what a test
# leaves on purpose, cleaned up once the session is over (after the plugin's last check).
CONFTEST = """
import gc
import os
import pytest

LEFT_FDS = []
LEFT_PROCS = []


@pytest.fixture(params=[
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
])
def anyio_backend(request):
    return request.param


def pytest_sessionfinish():
    gc.enable()
    for fd in LEFT_FDS:
        os.close(fd)
    # Kept here, or Popen.__del__ would warn "still running", an error in our suite. Those
    # the plugin has reaped: poll() finds them gone (ECHILD), so kill() sends nothing.
    for proc in LEFT_PROCS:
        proc.kill()
        proc.wait()
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def leaked_pids(result: pytest.RunResult) -> list[int]:
    """The pids the plugin reported, each once.

    Under CI (the ``CI`` variable set) pytest prints the short summary untruncated, so a
    report appears twice in the output: in the errors section and in the summary.
    """
    found = re.findall(r"^  pid (\d+) ", result.stdout.str(), re.M)
    return list(dict.fromkeys(int(pid) for pid in found))


def line_of(source: str, marker: str) -> int:
    """The line number of the line holding ``marker`` in a test file's ``source``."""
    # makepyfile() strips the blank lines at either end.
    for number, line in enumerate(textwrap.dedent(source).strip().splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(marker)


def assert_gone(pids: list[int]) -> None:
    """Killed and reaped by the plugin: not even a zombie is left."""
    assert pids
    for pid in pids:
        assert proc_state(pid) is None, pid


LEAKING_POPEN = """
import subprocess

from conftest import LEFT_PROCS


def start_server():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "60"]))  # spawn


def test_leaks():
    start_server()  # caller


def test_clean():
    with subprocess.Popen(["sleep", "0"]) as proc:
        proc.wait()
"""


def test_a_leaking_test_fails_naming_the_process_and_where_it_started(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_popen=LEAKING_POPEN)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=2, errors=1)
    spawn, caller = line_of(LEAKING_POPEN, "# spawn"), line_of(LEAKING_POPEN, "# caller")
    result.stdout.re_match_lines(
        [
            r".*ERROR at teardown of test_leaks.*",
            r"anyio_proc: the test left 1 child process behind:",
            r"  pid \d+ \((running|sleeping)\) \['sleep', '60'\]",
            (
                rf"    spawned by subprocess.Popen at test_popen.py:{spawn} in start_server, "
                rf"called from test_popen.py:{caller} in test_leaks"
            ),
            r"\(the processes were killed and reaped; .*\)",
        ]
    )
    assert_gone(leaked_pids(result))


CLEAN = """
import gc
import os
import subprocess
import sys


def test_run():
    subprocess.run(["true"], check=True)


def test_popen_with_pipes():
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.communicate(b"hi") == (b"hi", None)


def test_posix_spawn_and_fork():
    pid = os.posix_spawn("/bin/true", ["true"], os.environ)
    assert os.waitpid(pid, 0)[0] == pid
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[0] == pid


def test_pipe_closed():
    r, w = os.pipe()
    os.close(r)
    os.close(w)


class Pipe:
    def __init__(self):
        self.r, self.w = os.pipe()
        self.me = self  # a reference cycle: only the garbage collector frees it

    def __del__(self):
        os.close(self.r)
        os.close(self.w)


def test_garbage_holding_a_pipe():
    # Garbage is not a leak: the check collects it before it blames the test. (No
    # automatic collection until then: the conftest turns it back on at the end.)
    gc.disable()
    Pipe()


async def test_anyio_proc(anyio_backend):
    from anyio_proc import Command, run_process, spawn

    async with spawn(Command("cat").stdin_piped().stdout_piped()) as child:
        await child.stdin.aclose()
        assert await child.stdout.read_all() == b""
    assert (await run_process(["echo", "x"])).stdout == b"x\\n"


async def test_anyio(anyio_backend):
    import anyio

    assert (await anyio.run_process(["echo", "y"])).stdout == b"y\\n"
    async with await anyio.open_process(["true"]) as proc:
        await proc.wait()
"""


def test_a_clean_test_passes(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_clean=CLEAN)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=11)
    result.stdout.no_fnmatch_line("*anyio_proc: the test left*")


ZOMBIE = """
import os


def test_zombie():
    pid = os.posix_spawn("/bin/true", ["true"], os.environ)  # spawn
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, and nobody reaps it
"""


def test_a_zombie_is_reported_as_unreaped_with_its_argv(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_zombie=ZOMBIE)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=1, errors=1)
    spawn = line_of(ZOMBIE, "# spawn")
    # A zombie's /proc cmdline is empty: the argv is the one noted when it was spawned.
    result.stdout.re_match_lines(
        [
            r"  pid \d+ \(zombie, unreaped\) \['true'\]",
            rf"    spawned by os.posix_spawn at test_zombie.py:{spawn} in test_zombie",
        ]
    )
    assert_gone(leaked_pids(result))


PIPES = """
import os

from conftest import LEFT_FDS


def test_pipe():
    LEFT_FDS.extend(os.pipe())


def test_pidfd():
    LEFT_FDS.append(os.pidfd_open(os.getpid()))
"""


def test_a_leaked_pipe_or_pidfd_is_reported_and_left_open(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_pipes=PIPES)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.re_match_lines(
        [
            r"anyio_proc: the test left 2 fds behind:",
            r"  fd \d+: pipe:\[\d+\]",
            r"  fd \d+: pipe:\[\d+\]",
            r"\(fds are left to their owners\)",
            r"anyio_proc: the test left 1 fd behind:",
            r"  fd \d+: (anon_inode:\[pidfd\]|pidfd:.*)",
        ]
    )


OFF = """
import os
import subprocess

from conftest import LEFT_PROCS


def test_leaks_unchecked(request):
    LEFT_PROCS.append(subprocess.Popen(["sleep", "60"]))
    # Off: nothing registered, nothing wrapped, nothing read from /proc.
    assert request.config.pluginmanager.get_plugin("anyio_proc-leak-check") is None
    assert not hasattr(os.fork, "__wrapped__")
    assert not hasattr(subprocess.Popen._execute_child, "__wrapped__")
"""


def test_without_the_flag_nothing_is_checked_or_wrapped(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_off=OFF)
    suite.runpytest().assert_outcomes(passed=1)


ONE_TEST = """
import subprocess

import pytest

from conftest import LEFT_PROCS


@pytest.mark.anyio_proc_leaks
def test_marked():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "61"]))


def test_with_the_fixture(no_process_leaks):
    LEFT_PROCS.append(subprocess.Popen(["sleep", "62"]))


def test_through_getfixturevalue(request):
    request.getfixturevalue("no_process_leaks")
    LEFT_PROCS.append(subprocess.Popen(["sleep", "63"]))


def test_not_asked():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "64"]))
"""


def test_the_marker_or_the_fixture_check_one_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_one=ONE_TEST)
    result = suite.runpytest()
    result.assert_outcomes(passed=4, errors=3)
    for test, seconds in (("test_marked", 61), ("test_with_the_fixture", 62)):
        result.stdout.re_match_lines(
            [rf".*ERROR at teardown of {test}.*", rf"  pid \d+ \(\w+\) \['sleep', '{seconds}'\]"]
        )
    result.stdout.re_match_lines([r".*ERROR at teardown of test_through_getfixturevalue.*"])
    result.stdout.no_fnmatch_line("*'64'*")
    assert_gone(leaked_pids(result))


OPT_OUT = """
import subprocess

import pytest

from conftest import LEFT_PROCS

pytestmark = pytest.mark.anyio_proc_leaks(enabled=False)


def test_unchecked():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "60"]))


@pytest.mark.anyio_proc_leaks
def test_checked_again():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "65"]))
"""


def test_a_module_can_opt_out_of_the_flag(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_opt_out=OPT_OUT)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.re_match_lines([r".*ERROR at teardown of test_checked_again.*"])


FIXTURES = """
import os
import subprocess

import pytest

from conftest import LEFT_FDS, LEFT_PROCS


@pytest.fixture(scope="session")
def server():
    # A server for the whole session, started during the first test that uses it.
    with subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE) as proc:
        yield proc
        proc.kill()


@pytest.fixture(scope="module")
def channel():
    r, w = os.pipe()
    yield w
    os.close(r)
    os.close(w)


@pytest.fixture
def workers():
    # Function scope: what the test starts here is stopped by this fixture's teardown.
    procs = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def forgetful():
    LEFT_PROCS.append(subprocess.Popen(["sleep", "66"]))  # fixture spawn
    yield


def test_first(server, channel, workers):
    workers.append(subprocess.Popen(["sleep", "60"]))


def test_dynamic(request, workers):
    request.getfixturevalue("server")
    workers.append(subprocess.Popen(["sleep", "60"]))


def test_forgetful_fixture(forgetful):
    pass
"""


def test_what_wider_fixtures_start_is_not_blamed_on_the_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_fixtures=FIXTURES)
    result = suite.runpytest("--anyio-proc-leaks")
    # The session's server, the module's pipe and the workers stopped by their fixture are
    # not the tests' leaks; a function-scoped fixture's child is.
    result.assert_outcomes(passed=3, errors=1)
    spawn = line_of(FIXTURES, "# fixture spawn")
    result.stdout.re_match_lines(
        [
            r".*ERROR at teardown of test_forgetful_fixture.*",
            r"  pid \d+ \(\w+\) \['sleep', '66'\]",
            rf"    spawned by subprocess.Popen at test_fixtures.py:{spawn} in forgetful",
        ]
    )
    assert len(leaked_pids(result)) == 1


TEARDOWN_ERROR = """
import subprocess

import pytest

from conftest import LEFT_PROCS


@pytest.fixture
def broken():
    procs = []
    yield procs
    raise RuntimeError("the fixture's teardown failed before stopping its processes")


def test_leaks_through_a_broken_fixture(broken):
    broken.append(subprocess.Popen(["sleep", "67"]))
    LEFT_PROCS.extend(broken)
"""


def test_a_failed_teardown_keeps_its_error_and_gets_the_leaks_beside_it(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_teardown=TEARDOWN_ERROR)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines(
        [
            r"E +RuntimeError: the fixture's teardown failed before stopping its processes",
            r".*Captured anyio_proc leaks teardown.*",
            r"anyio_proc: the test left 1 child process behind:",
            r"  pid \d+ \(\w+\) \['sleep', '67'\]",
        ]
    )
    assert_gone(leaked_pids(result))


ASYNC = """
import asyncio
import multiprocessing

import anyio
import pytest

import anyio_proc


async def test_clean(anyio_backend):
    # First: in this fresh process, its uvloop case makes the first uvloop loop, and with
    # it libuv's process-wide pipe, which must not be blamed on the test.
    async with await anyio_proc.open_process(["true"]) as proc:
        await proc.wait()
    await anyio.run_process(["true"])


def square(x):
    return x * x


def test_multiprocessing_helpers():
    # Its resource tracker and fork server, started now and kept for the whole process,
    # are not this test's leaks.
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        assert pool.map(square, [3]) == [9]
        pool.close()
        pool.join()


async def test_anyio_proc(anyio_backend):
    await anyio_proc.open_process(["sleep", "71"])  # via-anyio_proc


async def test_anyio(anyio_backend):
    await anyio.open_process(["sleep", "72"])  # via-anyio.


async def test_native(anyio_backend):
    if anyio_backend[0] == "asyncio":
        await asyncio.create_subprocess_exec("sleep", "73")  # via-asyncio
    else:
        import trio

        await trio.lowlevel.open_process(["sleep", "73"])  # via-trio
"""


def test_leaks_through_each_backend_in_a_fresh_process(suite: pytest.Pytester) -> None:
    # In a fresh process: what the event loops' objects say when they are collected after
    # a leak (asyncio's transports: "unclosed", "Event loop is closed") stays there, and
    # so do multiprocessing's helpers.
    suite.makepyfile(test_async=ASYNC)
    result = suite.runpytest_subprocess("--anyio-proc-leaks")
    result.assert_outcomes(passed=13, errors=9)
    out = result.stdout.str()
    # anyio_proc spawns with posix_spawn on Linux; anyio and asyncio with Popen, or libuv
    # on uvloop; trio with Popen in a worker thread (the frames are its waiting task's).
    for backend in ("asyncio", "uvloop", "trio"):
        native = "asyncio" if backend != "trio" else "trio"
        loops = "uvloop's subprocess_exec" if backend == "uvloop" else "subprocess.Popen"
        for test, argv, how, mark in (
            ("test_anyio_proc", "71", "os.posix_spawn", "anyio_proc"),
            ("test_anyio", "72", loops, "anyio."),
            ("test_native", "73", loops, native),
        ):
            line = line_of(ASYNC, f"# via-{mark}")
            block = re.search(
                rf"ERROR at teardown of {test}\[{backend}\] _+\n(.*?)\n(?:_|=)", out, re.S
            )
            assert block, (test, backend, out)
            assert re.search(rf"  pid \d+ \(\w+\) \['sleep', '{argv}'\]", block[1]), block[1]
            assert f"spawned by {how} at test_async.py:{line} in {test}\n" in block[1] + "\n", (
                block[1]
            )
    assert_gone(leaked_pids(result))


FORKS = """
import ctypes
import os
import pty

from conftest import LEFT_FDS


def exec_seen(r, w):
    # Our end of a close-on-exec pipe: EOF once the child has exec'd (its argv is sleep's).
    os.close(w)
    assert os.read(r, 1) == b""
    os.close(r)


def test_fork():
    r, w = os.pipe()
    if os.fork() == 0:  # fork
        os.execv("/bin/sleep", ["sleep", "81"])
    exec_seen(r, w)


def test_forkpty():
    r, w = os.pipe()
    pid, fd = pty.fork()  # forkpty
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "82"])
    LEFT_FDS.append(fd)
    exec_seen(r, w)


def test_unknown():
    # Straight from C: no hook sees it.
    libc = ctypes.CDLL(None, use_errno=True)
    pid = ctypes.c_int()
    argv = (ctypes.c_char_p * 3)(b"sleep", b"83", None)
    assert libc.posix_spawnp(ctypes.byref(pid), b"sleep", None, None, argv, None) == 0
"""


def test_fork_forkpty_and_unknown_spawners(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_forks=FORKS)
    result = suite.runpytest("--anyio-proc-leaks")
    result.assert_outcomes(passed=3, errors=3)
    fork, forkpty = line_of(FORKS, "# fork"), line_of(FORKS, "# forkpty")
    result.stdout.re_match_lines(
        [
            r"  pid \d+ \(\w+\) \['sleep', '81'\]",
            rf"    spawned by os.fork at test_forks.py:{fork} in test_fork",
            r"anyio_proc: the test left 1 child process and 1 fd behind:",
            r"  pid \d+ \(\w+\) \['sleep', '82'\]",
            rf"    spawned by os.forkpty at test_forks.py:{forkpty} in test_forkpty",
            r"  fd \d+: /dev/ptmx",
            r"  pid \d+ \(\w+\) \['sleep', '83'\]",
            r"    spawned by unknown code .*",
        ]
    )
    assert_gone(leaked_pids(result))


# -- the spawn hooks, under an interrupt -------------------------------------------------------

# Run as a separate process: wait until the spawn has made its child (a new entry in the
# harness's children), send it the signal while posix_spawn still waits for that child,
# then let the child go on (its stdin is a FIFO, which it opens before exec).
UNBLOCKER = """
import os, signal, sys, time
target, fifo = int(sys.argv[1]), sys.argv[2]
known = set(sys.argv[3:]) | {str(os.getpid())}
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    with open(f"/proc/{target}/task/{target}/children") as f:
        if set(f.read().split()) - known:
            break
    time.sleep(0.001)
os.kill(target, signal.SIGUSR1)
os.close(os.open(fifo, os.O_WRONLY))
"""

# The harness: a fresh interpreter, whose only thread receives the signal as posix_spawn
# returns (in a process with more threads, another one may take it, a little later).
HARNESS = """
import os, signal, subprocess, sys, tempfile

from anyio_proc._leaks import hooks_on

class Interrupt(BaseException):
    pass

def interrupt(signum, frame):
    raise Interrupt

def children():
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        return set(f.read().split())

signal.signal(signal.SIGUSR1, interrupt)
hooks_on()
with tempfile.TemporaryDirectory() as tmp:
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    before = children()
    argv = [sys.executable, "-c", sys.argv[1], str(os.getpid()), fifo, *before]
    unblocker = subprocess.Popen(argv)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, fifo, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),  # not our stdout: a leaked
    ]  # child would hold it open, and keep the test waiting for its end
    try:
        os.posix_spawn("/bin/sleep", ["sleep", "90"], os.environ, file_actions=actions)
    except Interrupt:
        print("interrupted")
    unblocker.wait()
    left = sorted(children() - before - {str(unblocker.pid)})
    print("left:", left)
    for pid in map(int, left):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


def test_an_interrupt_as_the_hooked_posix_spawn_returns_loses_no_child() -> None:
    # The hook is Python code between posix_spawn's return and its caller: a signal
    # handler's exception lands there, before anybody has the pid. The hook kills and
    # reaps that child, as anyio_proc's own launch does.
    done = subprocess.run(
        [PY, "-c", HARNESS, UNBLOCKER], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.splitlines() == ["interrupted", "left: []"], done.stderr
