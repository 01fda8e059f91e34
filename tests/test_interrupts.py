"""An exit policy cut short still kills and reaps (issue 11, item 1; RELIABILITY.md B8).

The exit policy of a block (``Child.aclose()``: shutdown signal, grace period, SIGKILL, reap)
is shielded from anyio cancellation, but some exceptions get through a shield: Ctrl-C
(``KeyboardInterrupt``), ``SystemExit`` raised by a signal handler, and on asyncio a native
``Task.cancel()`` (``asyncio.wait_for``, ``asyncio.timeout``, a cancelled request handler;
``asyncio.Runner`` turns Ctrl-C into one, too). Whatever escapes the policy, the child, its
process group and its tree must be SIGKILLed and the child reaped before the exception goes
on, and the exception must stay what it was.

Each scenario runs in a fresh interpreter (the harness below), whose processes are Python
children that ignore SIGTERM; some start grandchildren (``sleep``) that ignore it too. They
report on a FIFO the test holds: their pids once they are set up, and each SIGTERM they get,
which tells the test that the grace period has begun, so the interrupt is sent then, not
after a guessed delay. Afterwards:

- the harness says, at the moment the exception leaves ``anyio.run()``, which of its own
  children are still there (running, or zombies nobody reaped): none may be;
- every process of the scenario is gone: found from the outside by an environment marker
  (``Strays``), so one the scenario never reported is caught too. Zombies of grandchildren
  are not counted: they wait for init, which here reaps only every few seconds;
- stderr has no "Exception ignored", "Task was destroyed" or "never awaited";
- the interrupt took effect at once: the grace period is cut short, not waited out.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

import anyio_proc
from anyio_proc._os.waiters import available_waiters

from .os.test_tree import Strays, doomed, strays  # noqa: F401  (strays: a fixture)
from .test_cancel import HARNESS_BACKENDS, _wait_until_idle_in_event_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the scenarios are watched through /proc: Linux only"
)

# Long enough that an interrupt which waits the grace period out instead of cutting it short
# is told apart from a slow machine (PROMPT), short enough to keep such a failure cheap.
GRACE = 4.0
PROMPT = GRACE / 2
# Bounds on events that normally take milliseconds: a Python start-up, a kill, an exit.
STARTUP = 20.0
SETTLE = 5.0

REPO = Path(anyio_proc.__file__).resolve().parent.parent
NOTES_VAR = "ANYIO_PROC_TEST_NOTES"

# Every process of a scenario that runs Python code: it survives SIGTERM (and SIGHUP, with
# "hup"), reports each SIGTERM, and starts a `sleep` that ignores SIGTERM in its process
# group ("group") or in a session of its own ("session", reached only by kill_tree).
# SIG_IGN survives exec, so the sleep ignores SIGTERM without any code of its own.
CHILD = """\
import os, shutil, signal, sys, threading

NOTES = os.environ["ANYIO_PROC_TEST_NOTES"]


def note(text):
    # Non-blocking: no reader (a test gone) must not hang us. A failed write is only a
    # missed report, never an exception that would end the process.
    try:
        fd = os.open(NOTES, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, (text + "\\n").encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def on_term(signum, frame):
    note(f"term {os.getpid()}")
    try:
        os.write(1, b"term\\n")  # for a harness that watches our output
    except OSError:
        pass


signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "hup" in sys.argv:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
sleep = shutil.which("sleep")
grandchildren = [
    os.posix_spawn(sleep, ["sleep", "60"], os.environ, setsid=flag == "session")
    for flag in sys.argv[1:]
    if flag in ("group", "session")
]
signal.signal(signal.SIGTERM, on_term)
note(" ".join(["child", str(os.getpid()), *map(str, grandchildren)]))
if "relay" in sys.argv:
    # A later pipeline stage: up once the one before is, and from then on it passes the
    # earlier stage's output on, so a harness watching the last stage sees every "term".
    sys.stdin.buffer.readline()

    def relay():
        for line in sys.stdin.buffer:
            try:
                os.write(1, line)
            except OSError:
                return

    threading.Thread(target=relay, daemon=True).start()
print("up", flush=True)
while True:
    signal.pause()
"""

HARNESS = """\
import asyncio, json, os, signal, sys
import anyio
from anyio_proc import Command, open_process, run_process, spawn
from anyio_proc.services import ReadyLine, Supervisor
from tests.helpers import children

scenario, backend, use_uvloop, child_script, grace, options = sys.argv[1:7]
GRACE = float(grace)
# Ctrl-C as in a program run from a terminal, whatever we inherited: a shell starts
# background jobs with SIGINT ignored, and Python then installs no handler of its own.
signal.signal(signal.SIGINT, signal.default_int_handler)
if "sysexit" in options:
    signal.signal(signal.SIGUSR1, lambda *args: sys.exit(3))


def argv(*flags):
    return [sys.executable, "-I", "-S", child_script, *flags]


def child(*flags):
    return Command(*argv(*flags)).shutdown(timeout=GRACE)


def say(line):
    print(line, flush=True)


async def read_until(stream, token):
    data = b""
    while token not in data:
        data += await stream.receive()


STAGES = {"child": 1, "pipeline": 2}


def command(what):
    return child() | child("relay") if what == "pipeline" else child()


async def leave_block(cmd):
    try:
        async with spawn(cmd.stdout_piped()) as running:
            await read_until(running.stdout, b"up\\n")
            say("leaving")
    finally:
        if "ignore-sigint-after" in options:
            # What a Ctrl-C does once the exit policy is over (in the event loop's
            # shutdown, in atexit hooks) is not the library's business.
            signal.signal(signal.SIGINT, signal.SIG_IGN)


async def pty():
    async with spawn(child("hup").pty()) as running:
        await running.expect("up")
        say("leaving")


async def supervisor():
    async with Supervisor() as sup:
        await sup.start("service", child(), ready=ReadyLine("^up$"))
        say("leaving")


async def anyio_open_process():
    async with await open_process(argv()) as process:
        await read_until(process.stdout, b"up\\n")
        say("leaving")


async def anyio_run_process():
    await run_process(argv())


async def on_term(running, action, stages):
    # Another task watches the output while the block's exit policy runs: each process says
    # "term" when its grace period has begun (a pipeline's last stage relays the others').
    data = b""
    while data.count(b"term\\n") < stages:
        data += await running.stdout.receive()
    action()


async def task_cancel(what):
    me = asyncio.current_task()
    async with spawn(command(what).stdout_piped()) as running:
        await read_until(running.stdout, b"up\\n")
        watcher = asyncio.create_task(on_term(running, me.cancel, STAGES[what]))
        say("leaving")
    say(f"not cancelled {watcher}")


async def asyncio_timeout(what):
    async with asyncio.timeout(None) as timeout:
        async with spawn(command(what).stdout_piped()) as running:
            await read_until(running.stdout, b"up\\n")
            now = asyncio.get_running_loop().time
            expire = lambda: timeout.reschedule(now())  # noqa: E731
            watcher = asyncio.create_task(on_term(running, expire, STAGES[what]))
            say("leaving")
    say(f"no timeout {watcher}")


async def wait_for(what):
    running = await spawn(command(what).stdout_piped())
    await read_until(running.stdout, b"up\\n")
    say("leaving")
    # aclose() sends SIGTERM before it first suspends, and the timeout can act only at a
    # suspension (whether wait_for runs it in a task of its own, as before 3.12, or not):
    # however late the timer fires, the cancel lands in the grace period.
    await asyncio.wait_for(running.aclose(), timeout=GRACE / 10)


SCENARIOS = {
    "child": lambda: leave_block(command("child")),
    "grandchild": lambda: leave_block(child("group")),
    "group": lambda: leave_block(child("group").process_group(0)),
    "tree": lambda: leave_block(child("session").kill_tree()),
    "session": lambda: leave_block(child("group").new_session()),
    "pipeline": lambda: leave_block(command("pipeline")),
    "pty": pty,
    "supervisor": supervisor,
    "open_process": anyio_open_process,
    "run_process": anyio_run_process,
}
for what in ("child", "pipeline"):
    for run in (task_cancel, asyncio_timeout, wait_for):
        SCENARIOS[f"{run.__name__}:{what}"] = lambda run=run, what=what: run(what)

loop_options = {"use_uvloop": True} if use_uvloop == "1" else {}
try:
    anyio.run(SCENARIOS[scenario], backend=backend, backend_options=loop_options)
except BaseException as exc:
    # Now, before the interpreter winds down: the exception has left the policy and
    # anyio.run(), so every child must be dead and reaped already.
    say("result " + json.dumps({"escaped": type(exc).__name__, "left": children()}))
    raise
say("result " + json.dumps({"escaped": None, "left": children()}))
"""


class _Lines:
    """Lines read from a non-blocking fd, each wait bounded by a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen: list[str] = []
        self._buffer = b""
        self._eof = False

    def next(self, deadline: float) -> str | None:
        """The next line; None at end of file or at the deadline."""
        while b"\n" not in self._buffer:
            if self._eof:
                return None
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                return None
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            self._eof = not data
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode(errors="replace")
        self.seen.append(text)
        return text


@dataclass
class Outcome:
    """How a harness ended."""

    returncode: int
    escaped: str | None  # the exception that left anyio.run(), by name
    left: dict[str, str]  # the harness's own children then (pid: state; Z = unreaped)
    stderr: str
    delay: float  # from the last signal sent to the exception leaving anyio.run()
    pids: list[int]  # every process the scenario reported
    survivors: list[int] = field(default_factory=list)  # marked processes still alive

    def __str__(self) -> str:
        return (
            f"returncode {self.returncode}, escaped {self.escaped}, left {self.left}, "
            f"{self.delay:.2f} s after the signal, reported pids {self.pids}, "
            f"survivors {self.survivors}\n--- stderr:\n{self.stderr}"
        )


class Harness:
    """One scenario in a fresh interpreter, and the FIFO its processes report on."""

    def __init__(
        self, scenario: str, backend_id: str, marked: Strays, tmp_path: Path, options: str
    ) -> None:
        backend, use_uvloop = HARNESS_BACKENDS[backend_id]
        self.strays = marked
        self.children: dict[int, list[int]] = {}  # reported: child pid -> its grandchildren
        self.termed: set[int] = set()
        self._signalled_at = time.monotonic()
        self._notes_fd = self._keep_open = -1
        self.proc: subprocess.Popen[bytes] | None = None
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        notes = tmp_path / "notes"
        os.mkfifo(notes)
        self._stderr_path = tmp_path / "stderr"
        try:
            # Ours to read; and a writer of ours, so that the FIFO never reads as end-of-file
            # between two reports (each process opens it for one line only).
            self._notes_fd = os.open(notes, os.O_RDONLY | os.O_NONBLOCK)
            self._keep_open = os.open(notes, os.O_WRONLY | os.O_NONBLOCK)
            self.notes = _Lines(self._notes_fd)
            # stderr to a file: a long traceback must not fill a pipe nobody reads yet.
            with open(self._stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    [
                        sys.executable, "-X", "dev", "-W", "error", "-c", HARNESS,
                        scenario, backend, use_uvloop, str(script), str(GRACE), options,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env={**marked.env(), NOTES_VAR: str(notes), "PYTHONPATH": str(REPO)},
                )  # fmt: skip
            assert self.proc.stdout is not None
            os.set_blocking(self.proc.stdout.fileno(), False)
            self.stdout = _Lines(self.proc.stdout.fileno())
        except BaseException:
            # Never a Popen dropped with its process running (Popen.__del__ would warn).
            self.close()
            raise

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None
        return self.proc

    # -- what the scenario reports ------------------------------------------------------------

    def _read_note(self, deadline: float) -> bool:
        """Read one report; False if none came by the deadline."""
        line = self.notes.next(deadline)
        if line is None:
            return False
        word, *pids = line.split()
        if word == "child":
            self.children[int(pids[0])] = [int(pid) for pid in pids[1:]]
        elif word == "term":
            self.termed.add(int(pids[0]))
        return True

    def _read_notes_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + STARTUP
        while not done():
            if not self._read_note(deadline):
                pytest.fail(f"no {what} within {STARTUP} s; {self._so_far()}")

    def wait_until_set_up(self) -> None:
        """Until a child of the scenario has reported (its SIGTERM handler is in place)."""
        self._read_notes_until(lambda: bool(self.children), "child set up")

    def wait_for_grace_period(self) -> None:
        """Until every child reported so far has received its shutdown signal.

        Every child reports its pid before the harness can leave its block (before "up"),
        hence before any SIGTERM: once the first "term" is read, the children are all known.
        """
        self._read_notes_until(
            lambda: bool(self.termed) and self.termed >= self.children.keys(),
            "SIGTERM to every child",
        )

    def wait_for_stdout(self, expected: str) -> None:
        deadline = time.monotonic() + STARTUP
        while (line := self.stdout.next(deadline)) != expected:
            if line is None:
                pytest.fail(f"no {expected!r} from the harness; {self._so_far()}")

    @property
    def pids(self) -> list[int]:
        return [pid for child, kids in self.children.items() for pid in (child, *kids)]

    def _so_far(self) -> str:
        return (
            f"notes {self.notes.seen}, stdout {self.stdout.seen}, "
            f"returncode {self.running.poll()}, stderr:\n{self._stderr_path.read_text()}"
        )

    # -- acting on it -------------------------------------------------------------------------

    def idle(self) -> None:
        """Until the harness sleeps in its event loop (see _wait_until_idle_in_event_loop)."""
        _wait_until_idle_in_event_loop(self.running.pid)

    def send(self, sig: int) -> None:
        self._signalled_at = time.monotonic()
        self.running.send_signal(sig)

    def mark(self) -> None:
        """The harness interrupts itself from now on: measure the delay from here."""
        self._signalled_at = time.monotonic()

    def finish(self, settle: float = SETTLE) -> Outcome:
        """Wait for the harness to end, then (up to ``settle`` s) for every process of the
        scenario to be gone."""
        deadline = time.monotonic() + 30
        result: dict[str, Any] = {"escaped": "(no result line)", "left": {}}
        delay = float("nan")
        while (line := self.stdout.next(deadline)) is not None:
            if line.startswith("result "):
                delay = time.monotonic() - self._signalled_at
                result = json.loads(line.removeprefix("result "))
        try:
            returncode = self.running.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.running.kill()
            returncode = self.running.wait()
        # They are not our children: nothing tells us when they die. Poll, bounded.
        deadline = time.monotonic() + settle
        while (survivors := self.strays.live()) and time.monotonic() < deadline:
            time.sleep(0.01)
        # The notes may hold reports read after our last look (a pid, a SIGTERM).
        while self._read_note(0):
            pass
        return Outcome(
            returncode=returncode,
            escaped=result["escaped"],
            left=result["left"],
            stderr=self._stderr_path.read_text(errors="replace"),
            delay=delay,
            pids=self.pids,
            survivors=survivors,
        )

    def close(self) -> None:
        """Kill and reap the harness if it still runs; close our ends of its pipes."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        for fd in (self._notes_fd, self._keep_open):
            if fd >= 0:
                os.close(fd)
        self._notes_fd = self._keep_open = -1


class Starter(Protocol):
    def __call__(self, scenario: str, backend_id: str, options: str = "") -> Harness: ...


@pytest.fixture
def start(strays: Strays, tmp_path: Path) -> Iterator[Starter]:  # noqa: F811
    """Start a scenario on a backend; the harness is killed and its fds closed afterwards
    (the ``strays`` fixture then kills whatever of the scenario is left)."""
    started: list[Harness] = []

    def start(scenario: str, backend_id: str, options: str = "") -> Harness:
        # One per test: the FIFO and the child script have fixed names in tmp_path.
        assert not started
        harness = Harness(scenario, backend_id, strays, tmp_path, options)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        harness.close()


BAD_STDERR = ("Exception ignored", "Task was destroyed", "never awaited", "never retrieved")


def assert_clean_end(outcome: Outcome, escaped: str, returncode: int) -> None:
    """The exception came out as it went in, after everything was killed and reaped."""
    assert outcome.escaped == escaped, f"{outcome}"
    assert outcome.returncode == returncode, f"{outcome}"
    assert outcome.left == {}, f"children alive or unreaped when {escaped} left: {outcome}"
    assert outcome.survivors == [], f"processes of the scenario outlived it: {outcome}"
    for text in BAD_STDERR:
        assert text not in outcome.stderr, f"{outcome}"
    # Not waited out: the grace period is cut short (the harness reports before it ends).
    assert outcome.delay < PROMPT, f"the interrupt waited for the grace period: {outcome}"


def assert_ctrl_c_end(outcome: Outcome, backend_id: str) -> None:
    old_asyncio = backend_id != "trio" and sys.version_info < (3, 11)
    if old_asyncio and outcome.escaped != "KeyboardInterrupt":
        # asyncio before 3.11 (no Task.uncancel): the Runner's handling of a first Ctrl-C
        # surfaces as CancelledError out of anyio.run(), as test_cancel notes (a second one
        # is a KeyboardInterrupt raised wherever the loop is).
        assert_clean_end(outcome, "CancelledError", 1)
    else:
        assert_clean_end(outcome, "KeyboardInterrupt", -signal.SIGINT)


def all_backends(*scenarios_and_waiters: tuple[str, tuple[str, ...]]) -> list[Any]:
    return [
        pytest.param(scenario, backend_id, waiter, id=f"{scenario}-{backend_id}-{waiter}")
        for scenario, waiters in scenarios_and_waiters
        for backend_id in HARNESS_BACKENDS
        for waiter in waiters
    ]


EVERY_WAITER = available_waiters()
DEFAULT_WAITER = available_waiters()[:1]


# -- Ctrl-C in the grace period ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "backend_id", "waiter"),
    all_backends(
        ("child", EVERY_WAITER),
        ("group", DEFAULT_WAITER),
        ("tree", DEFAULT_WAITER),
        ("session", DEFAULT_WAITER),
        ("pipeline", DEFAULT_WAITER),
        ("pty", DEFAULT_WAITER),
        ("supervisor", DEFAULT_WAITER),
    ),
    indirect=["waiter"],
)
def test_keyboard_interrupt_in_the_grace_period(
    start: Starter, scenario: str, backend_id: str, waiter: str
) -> None:
    del waiter  # in force through the environment, which the harness inherits
    harness = start(scenario, backend_id)
    harness.wait_for_grace_period()
    harness.idle()
    harness.send(signal.SIGINT)
    outcome = harness.finish()
    assert len(harness.pids) == {"group": 2, "tree": 2, "session": 2, "pipeline": 2}.get(
        scenario, 1
    ), f"{outcome}"
    assert_ctrl_c_end(outcome, backend_id)


@pytest.mark.parametrize("waiter", EVERY_WAITER, indirect=True)
@pytest.mark.parametrize("backend_id", list(HARNESS_BACKENDS))
def test_keyboard_interrupt_while_open_process_waits(
    start: Starter, backend_id: str, waiter: str
) -> None:
    # anyio's policy: leaving the block waits for a natural exit (no signal, so no "term"
    # to wait for); an interrupted wait kills. The control: anyio.open_process does this.
    del waiter
    harness = start("open_process", backend_id)
    harness.wait_for_stdout("leaving")
    harness.idle()  # now in the wait: the block was left right after that line
    harness.send(signal.SIGINT)
    outcome = harness.finish()
    assert_ctrl_c_end(outcome, backend_id)


@pytest.mark.parametrize("backend_id", list(HARNESS_BACKENDS))
def test_keyboard_interrupt_while_run_process_delivers_the_cancel(
    start: Starter, backend_id: str
) -> None:
    # run_process's policy on interruption: SIGTERM, five seconds, SIGKILL (trio's). The
    # first Ctrl-C starts it; a second one cuts those five seconds short.
    harness = start("run_process", backend_id)
    harness.wait_until_set_up()
    harness.idle()
    harness.send(signal.SIGINT)
    harness.wait_for_grace_period()
    harness.idle()
    harness.send(signal.SIGINT)
    outcome = harness.finish()
    assert_ctrl_c_end(outcome, backend_id)


# -- a second Ctrl-C, and SystemExit from a signal handler -----------------------------------


@pytest.mark.parametrize(
    ("scenario", "backend_id", "waiter"),
    all_backends(("child", EVERY_WAITER), ("group", EVERY_WAITER)),
    indirect=["waiter"],
)
def test_second_keyboard_interrupt_while_killing(
    start: Starter, scenario: str, backend_id: str, waiter: str
) -> None:
    # The second Ctrl-C is sent the moment the child has SIGKILL pending (it cannot run
    # again: doomed), which is while the harness kills and reaps. No event marks that
    # moment in the harness; if the kill never comes, it is sent after a bound anyway.
    del waiter
    harness = start(scenario, backend_id, "ignore-sigint-after")
    harness.wait_for_grace_period()
    harness.idle()
    harness.send(signal.SIGINT)
    (leader,) = harness.children
    deadline = time.monotonic() + PROMPT
    while not doomed(leader) and harness.running.poll() is None and time.monotonic() < deadline:
        pass  # spinning: the window is a few milliseconds, a sleep would miss it
    harness.send(signal.SIGINT)
    outcome = harness.finish()
    assert_ctrl_c_end(outcome, backend_id)


@pytest.mark.parametrize("backend_id", list(HARNESS_BACKENDS))
def test_system_exit_from_a_signal_handler_in_the_grace_period(
    start: Starter, backend_id: str
) -> None:
    harness = start("child", backend_id, "sysexit")  # SIGUSR1 -> sys.exit(3)
    harness.wait_for_grace_period()
    harness.idle()
    harness.send(signal.SIGUSR1)
    outcome = harness.finish()
    if backend_id != "trio":
        assert_clean_end(outcome, "SystemExit", 3)
        return
    # trio abandons its run when a signal handler raises anything but KeyboardInterrupt in
    # its event loop: SystemExit leaves trio.run() with no task resumed (trio reports the
    # abandoned run on stderr), so nothing can stop the child before it propagates. Only
    # the abandoned coroutine's finalisation, at interpreter exit, can: the child must not
    # outlive the program.
    assert outcome.escaped == "SystemExit", f"{outcome}"
    assert outcome.returncode == 3, f"{outcome}"
    assert outcome.survivors == [], f"processes of the scenario outlived it: {outcome}"


# -- asyncio: a native Task.cancel() in the grace period --------------------------------------

ASYNCIO_BACKENDS = [backend_id for backend_id in HARNESS_BACKENDS if backend_id != "trio"]
NATIVE_CANCELS = [("task_cancel", "CancelledError")]
if sys.version_info >= (3, 11):
    NATIVE_CANCELS.append(("asyncio_timeout", "TimeoutError"))


@pytest.mark.parametrize("waiter", EVERY_WAITER, indirect=True)
@pytest.mark.parametrize("what", ["child", "pipeline"])
@pytest.mark.parametrize(("how", "escaped"), NATIVE_CANCELS)
@pytest.mark.parametrize("backend_id", ASYNCIO_BACKENDS)
def test_native_cancel_in_the_grace_period(
    start: Starter,
    backend_id: str,
    how: str,
    escaped: str,
    what: str,
    waiter: str,
) -> None:
    # The harness cancels its own task when the child reports SIGTERM on its stdout: an
    # explicit task.cancel(), or an asyncio.timeout() rescheduled to fire at once.
    del waiter
    harness = start(f"{how}:{what}", backend_id)
    harness.wait_for_grace_period()
    harness.mark()
    outcome = harness.finish()
    assert_clean_end(outcome, escaped, 1)


@pytest.mark.parametrize("what", ["child", "pipeline"])
@pytest.mark.parametrize("backend_id", ASYNCIO_BACKENDS)
def test_wait_for_times_out_in_the_grace_period(start: Starter, backend_id: str, what: str) -> None:
    harness = start(f"wait_for:{what}", backend_id)
    harness.wait_for_stdout("leaving")
    harness.mark()
    outcome = harness.finish()
    assert_clean_end(outcome, "TimeoutError", 1)
    assert harness.children, f"{outcome}"
    assert harness.termed == set(harness.children), f"the cancel came before SIGTERM: {outcome}"


def test_the_outside_check_finds_a_survivor(start: Starter) -> None:
    # The control for the checks above: a grandchild that ignores SIGTERM, in a process
    # group its parent does not lead, is out of reach of a plain child's policy (documented:
    # process_group() and kill_tree() reach it), so it survives; the check must see it.
    harness = start("grandchild", "asyncio")
    harness.wait_for_grace_period()
    harness.idle()
    harness.send(signal.SIGINT)
    outcome = harness.finish(settle=0)
    (grandchild,) = harness.pids[1:]
    assert grandchild in outcome.survivors, f"{outcome}"
