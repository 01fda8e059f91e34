"""A process being created is never lost: not to an interrupt, not to a foreign reaper.

An exception from a Python signal handler (Ctrl-C, pytest-timeout's SIGALRM) lands at the
first bytecode after the signal arrives: while ``Popen`` waits for the exec's result or
runs a ``pre_exec`` hook, as ``posix_spawn`` or ``fork`` returns a pid not yet stored
anywhere, or on the way from the launch up to the ``Child``. Whatever it interrupts, the
process must be killed and reaped before the exception goes on. And a spawn on the ``Popen``
path that fails at exec while SIGCHLD is ignored (or reaped by a ``waitpid(-1)`` handler)
must not leave a ``Popen`` that warns "subprocess N is still running" when collected.

Each scenario runs in a fresh interpreter (``-X dev -W error``): this file, run as a
script, is the harness. It reports on stdout, as JSON, what escaped the spawn and which of
its children were left (running or unreaped), then kills those. The test checks the report
and that stderr holds no "Exception ignored" and no warning.

The sweep injects the exception deterministically instead of by signal: a trace function
raises it before one bytecode after another, from the moment the process exists (a new
entry in /proc/thread-self/children) to ``start_child``'s return, one spawn per position.
That covers every position a signal handler can reach, and more on Python 3.11+, which
checks for pending signals at fewer places than 3.10 (``NOP`` and ``SETUP_*``, where no
Python version runs a handler, are left out). A handler that raises inside a ``__del__``
is left out too: Python swallows that exception ("Exception ignored in"), not ours to fix;
so is the warning about a file that an interrupted ``with open(...)`` leaves unclosed
(Python's window, and an fd, not a process). Fds are not checked: Python's own code
(``os.pipe()`` in ``Popen``) loses them to an interrupt at the wrong bytecode.
"""

from __future__ import annotations

import dis
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anyio_proc import Command, Stdio, spawn
from anyio_proc._os.waiters import available_waiters

# -- the harness (this file run as a script) --------------------------------------------------


class Interrupt(BaseException):
    """What the signal handlers and the injector raise: a BaseException, as Ctrl-C's
    KeyboardInterrupt and pytest-timeout's failure are."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupt


def _children_of(path: str) -> set[int]:
    try:
        with open(path, "rb") as f:
            return {int(pid) for pid in f.read().split()}
    except OSError:
        return set()


def _children() -> dict[int, str]:
    """Every child of this process with its state letter (``Z``: unreaped)."""
    found: dict[int, str] = {}
    for tid in os.listdir("/proc/self/task"):
        for pid in _children_of(f"/proc/self/task/{tid}/children"):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            found[pid] = stat[stat.rfind(b")") + 2 :].split()[0].decode()
    return found


def _kill_and_reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def _left_since(before: dict[int, str]) -> dict[int, str]:
    """Children that appeared since ``before``, killed and reaped once noted."""
    left = {pid: state for pid, state in _children().items() if pid not in before}
    _kill_and_reap(set(left))
    return left


def _reap_everything(signum: int, frame: FrameType | None) -> None:
    """A foreign SIGCHLD handler, as some libraries install: reaps every exited child."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _refuse() -> None:
    raise RuntimeError("pre_exec refuses")


async def foreign_reaper(report: dict[str, Any], how: str) -> None:
    """Spawns that fail at exec on the Popen path while something else reaps children."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN if how == "ignore" else _reap_everything)
    missing = "/nonexistent/anyio_proc"
    commands = {
        "current_dir": Command("true").current_dir(missing),
        "pre_exec": Command("true").pre_exec(_refuse),
        "umask": Command(missing).umask(0o22),
    }
    for name, command in commands.items():
        before = _children()
        try:
            async with spawn(command):
                pass
        except Exception as exc:
            report[name] = type(exc).__name__
        else:
            report[name] = None
        gc.collect()  # a dropped Popen would warn here
        report[f"{name} left"] = _left_since(before)
        await anyio.lowlevel.checkpoint()


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def _asleep(pid: int) -> bool:
    # wchan reads "0" for a process on the CPU as much as where it is hidden: only a
    # sleeping process's "0" means hidden.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"S"
    except OSError:
        return False


async def slow_pre_exec(report: dict[str, Any], how: str) -> None:
    """The Popen path, interrupted while the child runs a pre_exec hook that never ends."""
    signal.signal(signal.SIGALRM, _raise_interrupt)
    hold_r, hold_w = os.pipe()

    def pre_exec() -> None:
        # In the child. Wait (bounded) for the parent to sleep in the read of the exec's
        # result (wchan "pipe_read", "anon_pipe_read", "pipe_wait": pid stored by then;
        # where wchan is hidden, as soon as it sleeps), then interrupt it, as Ctrl-C
        # would, and never return: both processes hold hold_w. Not while it still runs
        # its at-fork hooks: CPython ignores an exception raised there ("Exception
        # ignored"), and the parent would wait for this child for ever.
        parent = os.getppid()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            wchan = _wchan(parent)
            if "pipe" in wchan or (wchan in ("", "0") and _asleep(parent)):
                break
            time.sleep(0.001)
        os.kill(parent, signal.SIGALRM)  # goes to its main thread, asleep and not blocking it
        os.read(hold_r, 1)

    before = _children()
    try:
        child = await spawn(Command("sleep", "100").pre_exec(pre_exec))
    except Interrupt:
        report["raised"] = "Interrupt"
    else:
        report["raised"] = None
        await child.aclose()
    finally:
        os.close(hold_r)
        os.close(hold_w)
    report["left"] = _left_since(before)


# Run by blocked_file_action: os.posix_spawn holds the GIL, so no thread of the harness
# could do this while the harness sleeps in it.
UNBLOCKER = """
import os, signal, sys, time
harness, fifo, known = int(sys.argv[1]), sys.argv[2], set(sys.argv[3:])
known.add(str(os.getpid()))
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    with open(f"/proc/{harness}/task/{harness}/children") as f:
        if set(f.read().split()) - known:
            break  # the harness sleeps in posix_spawn until the child's open() returns
    time.sleep(0.001)
os.kill(harness, signal.SIGALRM)  # to its main thread, asleep there and not blocking it
os.close(os.open(fifo, os.O_WRONLY))  # the child's open() returns, it execs, the spawn ends
"""


async def blocked_file_action(report: dict[str, Any], how: str) -> None:
    """The posix_spawn path, interrupted while the kernel creates the process: the child
    blocks opening its stdin (os.devnull pointed at a FIFO), so the harness sleeps in
    posix_spawn (vfork) until another process opens the FIFO's other end, having sent a
    signal first, whose handler runs as posix_spawn returns, before Python code can store
    the pid anywhere."""
    signal.signal(signal.SIGALRM, _raise_interrupt)
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo")
        os.mkfifo(fifo)
        before = _children()
        known = [str(pid) for pid in before]
        unblocker = await spawn(
            Command(sys.executable, "-c", UNBLOCKER, str(os.getpid()), fifo, *known)
        )
        devnull = os.devnull
        os.devnull = fifo
        try:
            child = await spawn(Command("sleep", "100").stdin(Stdio.NULL))
        except Interrupt:
            report["raised"] = "Interrupt"
        else:
            report["raised"] = None
            await child.aclose()
        finally:
            os.devnull = devnull
            async with unblocker:
                report["unblocker"] = int(await unblocker.wait())
        report["left"] = _left_since(before)


_NOT_CHECKED_FOR_SIGNALS = {
    dis.opmap[name]
    for name in ("NOP", "SETUP_FINALLY", "SETUP_WITH", "BEFORE_ASYNC_WITH", "YIELD_FROM")
    if name in dis.opmap
}
_RETURNS = {code for name, code in dis.opmap.items() if name.startswith("RETURN")}


class _Injector:
    """Raises ``Interrupt`` at the ``target``-th bytecode run after the process exists,
    within ``start_child`` and what it calls. Up to ``start_child``'s return instruction:
    the ``Child`` is the caller's from there."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.inside = False
        self.created = False
        self.where: str | None = None
        self.pid = os.getpid()
        self.known = _children_of("/proc/thread-self/children")

    def install(self) -> None:
        # Python 3.12 emits opcode events only if some frame asked for them before
        # settrace() was called.
        sys._getframe().f_trace_opcodes = True
        sys.setprofile(self._profile)
        sys.settrace(self._call)

    @staticmethod
    def remove() -> None:
        sys.settrace(None)
        sys.setprofile(None)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        # A process can only appear as a C function returns: look then, until it has.
        if not self.inside or self.created or event != "c_return" or os.getpid() != self.pid:
            return
        if _children_of("/proc/thread-self/children") - self.known:
            self.created = True
            caller: FrameType | None = frame
            while caller is not None:  # trace the frames already running, from here on
                caller.f_trace = self._step
                caller.f_trace_opcodes = True
                if caller.f_code.co_name == "start_child":
                    break
                caller = caller.f_back

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.where is not None or os.getpid() != self.pid:
            return None  # fired already; or in a forked child, running a pre_exec hook
        if frame.f_code.co_name == "start_child" and not self.inside:
            self.inside = True
            return self._step
        if not (self.inside and self.created):
            return None
        frame.f_trace_opcodes = True
        return self._step

    def _step(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.where is not None or os.getpid() != self.pid:
            return None
        # Python 3.13 ignores the request made at the "call" event: repeat it once running.
        frame.f_trace_opcodes = True
        code = frame.f_code
        if code.co_name == "start_child" and event == "return":
            self.inside = False
        if event != "opcode" or not self.created:
            return self._step
        opcode = code.co_code[frame.f_lasti]
        if opcode in _NOT_CHECKED_FOR_SIGNALS:
            return self._step
        if code.co_name == "start_child" and opcode in _RETURNS:
            return self._step
        caller: FrameType | None = frame
        while caller is not None and caller.f_code.co_name != "start_child":
            if caller.f_code.co_name == "__del__":
                return self._step
            caller = caller.f_back
        self.count += 1
        if self.count == self.target:
            self.where = f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}"
            self.where += f" @{frame.f_lasti} {dis.opname[opcode]}"
            raise Interrupt
        return self._step


SWEPT = {
    "posix_spawn": Command("true"),
    "popen": Command("true").current_dir("/"),  # vfork: the parent sleeps until exec
    "terminal": Command("true").stdin(Stdio.PTY),
}


async def sweep(report: dict[str, Any], how: str) -> None:
    command = SWEPT[how]
    target = 1
    leaks: list[tuple[int, str | None, dict[int, str]]] = []
    while True:
        before = _children()
        injector = _Injector(target)
        child = None
        injector.install()
        try:
            child = await spawn(command)
        except Interrupt:
            pass
        finally:
            injector.remove()
        if child is not None:
            await child.aclose()
        left = _left_since(before)
        if left:
            leaks.append((target, injector.where, left))
        await anyio.lowlevel.checkpoint()
        if injector.where is None:
            break  # ran to the end: every position has been tried
        target += 1
    report["positions"] = target - 1
    report["leaks"] = leaks


SCENARIOS = {
    "foreign_reaper": foreign_reaper,
    "slow_pre_exec": slow_pre_exec,
    "blocked_file_action": blocked_file_action,
    "sweep": sweep,
}


def harness(scenario: str, how: str, backend: str, use_uvloop: str) -> None:
    report: dict[str, Any] = {}
    options = {"use_uvloop": True} if use_uvloop == "1" else {}

    async def main() -> None:
        await SCENARIOS[scenario](report, how)

    before = _children()
    try:
        anyio.run(main, backend=backend, backend_options=options)
    finally:
        gc.collect()
        report["left at exit"] = _left_since(before)
        print(json.dumps(report), flush=True)


# -- the tests ----------------------------------------------------------------------------------

BACKENDS = {"asyncio": ("asyncio", "0"), "uvloop": ("asyncio", "1"), "trio": ("trio", "0")}
# Left on stderr by something Python swallowed or by a dropped object: none is allowed.
BAD_OUTPUT = ("Exception ignored", "Warning", "Traceback", "never awaited")


def run_harness(scenario: str, how: str, backend_id: str, tmp_path: Path) -> dict[str, Any]:
    backend, use_uvloop = BACKENDS[backend_id]
    argv = [sys.executable, "-X", "dev", "-W", "error"]
    if scenario == "sweep":
        # An interrupt landing as open() returns, before `with` takes the file, leaves it to
        # the garbage collector (Python 3.11+ runs signal handlers there): Python's, and an
        # fd, not a process.
        argv += ["-W", "ignore:unclosed file:ResourceWarning"]
    argv += [__file__, scenario, how, backend, use_uvloop]
    # Run from an empty directory, so that PYTHONPATH (or the installed package) says which
    # anyio_proc is tested, not the current directory. In a group of its own, so that a
    # harness that hangs goes with all it started (a vfork child stuck before exec blocks
    # every signal but SIGKILL).
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            for pipe in (proc.stdout, proc.stderr):
                assert pipe is not None
                pipe.close()
    err = stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    for bad in BAD_OUTPUT:
        assert bad not in err, err
    report: dict[str, Any] = json.loads(stdout)
    assert report.pop("left at exit") == {}, (report, err)
    return report


@pytest.mark.parametrize("how", ["ignore", "handler"])
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_failed_exec_under_a_foreign_reaper(backend_id: str, how: str, tmp_path: Path) -> None:
    # SIGCHLD ignored (the kernel reaps) or reaped by a waitpid(-1) handler: Popen's own
    # reap of the failed child gets ECHILD, and its returncode stays None.
    report = run_harness("foreign_reaper", how, backend_id, tmp_path)
    assert report == {
        "current_dir": "FileNotFoundError",
        "current_dir left": {},
        "pre_exec": "SubprocessError",
        "pre_exec left": {},
        "umask": "FileNotFoundError",
        "umask left": {},
    }


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_interrupt_while_pre_exec_runs(backend_id: str, waiter: str, tmp_path: Path) -> None:
    del waiter  # in force through the environment, which the harness inherits
    report = run_harness("slow_pre_exec", "-", backend_id, tmp_path)
    assert report == {"raised": "Interrupt", "left": {}}


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_interrupt_while_posix_spawn_creates_the_process(
    backend_id: str, waiter: str, tmp_path: Path
) -> None:
    del waiter
    report = run_harness("blocked_file_action", "-", backend_id, tmp_path)
    assert report == {"raised": "Interrupt", "unblocker": 0, "left": {}}


# A few hundred spawns per case (about 3 s each): with the soaks, behind the slow marker.
@pytest.mark.slow
@pytest.mark.parametrize("path", list(SWEPT))
@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_interrupt_at_every_position_after_the_process_exists(
    backend_id: str, waiter: str, path: str, tmp_path: Path
) -> None:
    del waiter
    report = run_harness("sweep", path, backend_id, tmp_path)
    assert report["leaks"] == [], report["leaks"][:10]
    # Sanity: the positions run from the launch through the Child's creation.
    assert report["positions"] > 50, report


if __name__ == "__main__":
    harness(*sys.argv[1:5])
