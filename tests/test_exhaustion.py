"""Resource exhaustion, each in a fresh interpreter (RELIABILITY E2, E3).

- A full fd table (RLIMIT_NOFILE reached by really opening files, CPython
  ``test_no_leaking``): every entry point raises ``OSError(EMFILE)`` naming the program,
  through both launch paths, one spawn at a time and many at once; nothing leaks; it works
  again once fds are free.
- The process-count limit (``RLIMIT_NPROC``: ``EAGAIN`` from fork/clone). Root is exempt, so
  the harness starts as root, imports everything, drops to ``nobody`` (65534), lowers the
  limit, spawns until ``EAGAIN``, checks the error, shuts its children down, lifts the
  limit and spawns again.

The harnesses print a JSON report; the test asserts on it. Each runs on every backend and
under every exit waiter (the waiter through ``ANYIO_PROC_WAITER``, which they inherit).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from typing import Any

import anyio
import pytest

from anyio_proc import Command, spawn
from anyio_proc._os.waiters import ENV_VAR, available_waiters

BACKENDS = ["asyncio", "uvloop", "trio"]
SLOW_STEP = re.compile(r"^Executing <.*> took [0-9.]+ seconds$")

COMMON = """\
import errno, glob, json, os, resource, shutil, signal, sys
import anyio, anyio.abc
import anyio_proc
from anyio_proc import Command, Stdio, spawn

RUNS = {
    "asyncio": dict(backend="asyncio"),
    "uvloop": dict(backend="asyncio", backend_options={"use_uvloop": True}),
    "trio": dict(backend="trio"),
}
BACKENDS = sys.argv[1:]
TRUE = shutil.which("true")
SLEEP = shutil.which("sleep")


def fd_table():
    # Without opening anything (listing /proc/self/fd takes an fd, and the table may be
    # full): probe every number below the limit.
    table = {}
    for fd in range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]):
        try:
            os.fstat(fd)
        except OSError:
            continue
        table[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return table


def kids():
    found = {}
    for path in glob.glob("/proc/self/task/*/children"):
        with open(path) as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/stat", "rb") as s:
                        stat = s.read()
                    found[int(pid)] = stat[stat.rfind(b")") + 2 :].split()[0].decode()
                except OSError:
                    pass
    return found
"""

FD_HARNESS = (
    COMMON
    + """
# Both launch paths (a working directory needs Popen), and every way in.
PIPED = Command(TRUE).stdin_piped().stdout_piped().stderr_piped()


async def via_spawn():
    async with spawn(PIPED) as child:
        await child.wait()


async def via_await_spawn():
    child = await spawn(PIPED.current_dir("/"))
    await child.aclose()


async def via_output():
    (await PIPED.output()).check()


async def via_status_popen():
    (await Command(TRUE).current_dir("/").stdout(Stdio.NULL).status()).check()


async def via_run_process():
    await anyio_proc.run_process([TRUE])


async def via_open_process():
    async with await anyio_proc.open_process([TRUE]) as process:
        await process.wait()


ENTRIES = [via_spawn, via_await_spawn, via_output, via_status_popen, via_run_process,
           via_open_process]


async def attempt(entry):
    try:
        with anyio.fail_after(10):
            await entry()
    except TimeoutError:
        raise
    except OSError as exc:
        assert exc.errno == errno.EMFILE, repr(exc)
        assert TRUE in str(exc), f"program not named: {exc}"
        return "EMFILE"
    return "ok"


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    await attempt(via_output)  # warm up: one-time resources of the loop and the library
    baseline = fd_table()
    filler = []
    while True:
        try:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
            break
    report = {"filled": len(filler), "steps": [], "concurrent": []}
    for spare in range(12):
        full = fd_table()
        outcomes = {}
        for entry in ENTRIES:
            outcomes[entry.__name__] = await attempt(entry)
            assert fd_table() == full, f"{entry.__name__} leaked with {spare} spare"
            assert kids() == {}, f"{entry.__name__} left a child with {spare} spare"
        report["steps"].append(outcomes)
        if spare == 4:
            # Many at once, near the limit: some get fds, some do not; none leaks.
            results = []

            async def one(entry):
                results.append(await attempt(entry))

            async with anyio.create_task_group() as tg:
                for i in range(24):
                    tg.start_soon(one, ENTRIES[i % len(ENTRIES)])
            assert fd_table() == full
            assert kids() == {}
            report["concurrent"] = sorted(set(results))
        os.close(filler.pop())
    for fd in filler:
        os.close(fd)
    assert fd_table() == baseline
    report["after"] = await attempt(via_output)
    assert fd_table() == baseline
    assert kids() == {}
    return report


print(json.dumps({backend: anyio.run(main, **RUNS[backend]) for backend in BACKENDS}))
"""
)

NPROC_HARNESS = (
    COMMON
    + """
import threading


def warm_up():
    # Import and start everything that loads lazily while files under root's home are
    # still readable: after the switch to nobody they may not be.
    async def run_one():
        async with spawn(Command(SLEEP, "30")) as child:
            child.kill()
            await child.wait()
        await Command(TRUE).output()

    for backend in BACKENDS:
        anyio.run(run_one, **RUNS[backend])


def tasks_of(uid):
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                with open(f"/proc/{name}/status") as g:
                                    for l2 in g:
                                        if l2.startswith("Threads:"):
                                            count += int(l2.split()[1])
                            break
            except OSError:
                pass
    return count


async def main():
    baseline = fd_table()
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    room = 4
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks_of(os.getuid()) + room, hard))
    children = []
    error = None
    try:
        for _ in range(room + 20):
            children.append(await spawn(Command(SLEEP, "30")))
    except OSError as exc:
        error = exc
    report = {
        "spawned": len(children),
        "error": type(error).__name__ if error else None,
        "errno": getattr(error, "errno", None),
        "message": str(error),
    }
    # The other launch path (a working directory needs Popen) refuses the same way.
    try:
        children.append(await spawn(Command(SLEEP, "30").current_dir("/")))
    except OSError as exc:
        report["popen_error"] = [type(exc).__name__, exc.errno, SLEEP in str(exc)]
    # Still at the limit: the exit policy must work (wait, reap) with no new task possible.
    statuses = []
    with anyio.fail_after(20):
        for child in children:
            await child.aclose()
            statuses.append(child.returncode)
    report["statuses"] = statuses
    assert kids() == {}
    assert fd_table() == baseline, (fd_table(), baseline)
    resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
    out = await Command(SLEEP, "0").output()
    report["after"] = int(out.status)
    # And many at once again.
    async with anyio.create_task_group() as tg:
        for _ in range(room + 10):
            tg.start_soon(Command(TRUE).status)
    assert kids() == {}
    assert fd_table() == baseline
    report["threads_left"] = [
        t.name for t in threading.enumerate() if t.name.startswith("anyio_proc")
    ]
    return report


warm_up()
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert os.getuid() == os.geteuid() == 65534
print(json.dumps({backend: anyio.run(main, **RUNS[backend]) for backend in BACKENDS}))
"""
)


def run_harness(script: str) -> dict[str, dict[str, Any]]:
    """Run ``script`` on every backend in one fresh interpreter; its report per backend."""
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(script), *BACKENDS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
    )
    assert proc.returncode == 0, proc.stderr
    # asyncio debug mode (-X dev) may log slow steps; nothing else may be printed.
    noise = [line for line in proc.stderr.splitlines() if not SLOW_STEP.match(line)]
    assert noise == [], proc.stderr
    reports: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    assert sorted(reports) == sorted(BACKENDS)
    return reports


@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
def test_full_fd_table(waiter: str) -> None:
    del waiter  # in force through the environment, which the harness inherits
    for backend, report in run_harness(FD_HARNESS).items():
        check_fd_report(backend, report)


def check_fd_report(backend: str, report: dict[str, Any]) -> None:
    steps = report["steps"]
    assert report["filled"] > 100, backend
    # Not a single fd free: every entry point refuses with EMFILE, naming the program.
    assert set(steps[0].values()) == {"EMFILE"}, (backend, steps[0])
    # Enough free fds: every entry point works, through both launch paths.
    assert set(steps[-1].values()) == {"ok"}, (backend, steps[-1])
    # One entry point never needs fewer fds after it once succeeded.
    for name in steps[0]:
        outcomes = [step[name] for step in steps]
        first_ok = outcomes.index("ok")
        assert set(outcomes[first_ok:]) == {"ok"}, (backend, name, outcomes)
    assert set(report["concurrent"]) <= {"ok", "EMFILE"}
    assert report["after"] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
@pytest.mark.parametrize("waiter", available_waiters(), indirect=True)
def test_process_count_limit_as_nobody(waiter: str) -> None:
    del waiter
    for backend, report in run_harness(NPROC_HARNESS).items():
        check_nproc_report(backend, report)


def check_nproc_report(backend: str, report: dict[str, Any]) -> None:
    assert report["error"] == "BlockingIOError", (backend, report)
    assert report["errno"] == 11  # EAGAIN
    assert report["popen_error"] == ["BlockingIOError", 11, True], (backend, report)
    assert "sleep" in report["message"], report["message"]
    assert 0 < report["spawned"] <= 4
    assert report["statuses"] == [-15] * report["spawned"], (backend, report)
    assert report["after"] == 0
    assert report["threads_left"] == []


def test_thread_waiter_polls_when_no_thread_can_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # What RLIMIT_NPROC does to the thread waiter (found by the harness above), in-process:
    # every Thread.start() fails, yet waits, the exit policy and output() complete.
    monkeypatch.setenv(ENV_VAR, "thread")

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot_start)

    async def main() -> list[int]:
        results = []
        with anyio.fail_after(10):
            async with spawn(Command("sh", "-c", "exit 3")) as child:
                results.append(int(await child.wait()))
            async with spawn(Command("sleep", "30")) as child:
                pass  # the exit policy waits for the SIGTERMed child
            results.append(int(child.returncode or 0))
            results.append(int((await Command("echo", "hi").output()).status))
        return results

    for backend, options in (("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {})):
        assert anyio.run(main, backend=backend, backend_options=options) == [3, -15, 0]
