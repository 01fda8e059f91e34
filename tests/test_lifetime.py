"""Whole-program lifetimes: interpreter exit and fork, each in a fresh interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from .helpers import alive


def gone_within(pid: int, seconds: float) -> bool:
    """Poll the process table (no event exists for a non-child) until ``pid`` is dead."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_script(code: str, *warning_options: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in dev mode, warnings as errors, time-boxed."""
    options = ["-W", "error"]
    for option in warning_options:
        options += ["-W", option]
    return subprocess.run(
        [sys.executable, "-X", "dev", *options, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_interpreter_exit_kills_kill_on_drop_children_and_does_not_hang() -> None:
    # The Child objects stay referenced until module teardown, when starting a thread
    # would hang for ever (Thread.start waits for a thread that never runs).
    result = run_script(
        """
        import anyio
        from anyio_proc import Command, Stdio, spawn

        kept = []
        # Null stdio: a surviving child must not hold the harness's output pipes open.
        sleeper = Command("sleep", "100").stdout(Stdio.NULL).stderr(Stdio.NULL)

        async def main():
            killed = await spawn(sleeper.kill_on_drop())
            left = await spawn(sleeper)
            kept.extend([killed, left])
            print(killed.pid, left.pid, flush=True)

        anyio.run(main)
        """,
        "always::ResourceWarning",  # reported, not raised: the leaked child is the point
    )
    killed_pid, left_pid = map(int, result.stdout.split())
    try:
        assert result.returncode == 0, result.stderr
        assert "Exception ignored" not in result.stderr
        assert f"<Child pid={left_pid} running" in result.stderr
        assert f"<Child pid={killed_pid} " not in result.stderr
        # SIGKILL was sent at exit; dying takes the kernel a moment on a busy machine.
        assert gone_within(killed_pid, 10)
        # Documented: without kill_on_drop a child outlives the program, as with subprocess.
        assert alive(left_pid)
    finally:
        for pid in (killed_pid, left_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_forked_copy_never_kills_or_reaps_the_parents_children() -> None:
    result = run_script(
        """
        import gc, os, sys, warnings
        import anyio
        from anyio_proc import Command, spawn

        async def main():
            child = await spawn(Command("sleep", "100").kill_on_drop())
            pid = os.fork()
            if pid == 0:
                # The copy drops its Child and exits normally, running atexit hooks:
                # neither may touch the parent's process.
                warnings.simplefilter("ignore")
                del child
                gc.collect()
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert child.try_wait() is None, "the forked copy killed or reaped our child"
            await child.aclose()
            print(child.returncode)

        anyio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(-signal.SIGTERM)
