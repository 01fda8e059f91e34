"""Running a documentation program (a code block, an example) as a user would: a Python
process of its own, in a session of its own, so that what it leaves running is found."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]

# One program's budget: each runs in about a second; a hang must not cost the suite 60 s.
TIMEOUT = 20.0

# Which event loop a program runs on, as `anyio.run(main, backend=..., backend_options=...)`
# takes it; examples/*.py take the same names on their command line.
BACKEND_ARGS: dict[str, tuple[str, dict[str, bool]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


@dataclass
class Finished:
    returncode: int
    output: str
    left_running: list[str]

    def report(self) -> str:
        return f"exit code {self.returncode}\n--- output ---\n{self.output}"


def session_members(sid: int) -> dict[int, str]:
    """The live processes of session ``sid`` (pid: command line), from /proc.

    Zombies are left out: they have exited, and the orphans among them are init's to reap,
    which it does in its own time.
    """
    members = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            # Fields after the command name, which is in parentheses and may hold anything.
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[3]) != sid or fields[0] == b"Z":
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                members[int(name)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return members


def run_program(argv: list[str], cwd: Path, timeout: float = TIMEOUT) -> Finished:
    """Run ``argv`` (a Python program) in a new session and wait for it.

    Its stdout and stderr are merged into ``output``. ``left_running`` lists what was still
    in its session once it had exited, which is then killed: a documentation program must
    leave nothing behind. Only a descendant that made a session of its own escapes this
    look.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # The suite's exit-waiter choice is not the user's: let the program pick as users get it.
    env.pop("ANYIO_PROC_WAITER", None)
    # Output goes to a file, not a pipe: a process left behind holding it open must not
    # make us wait for an end-of-file that never comes.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
            timed_out = ""
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            timed_out = f"\n[killed after {timeout} s]"
        output.seek(0)
        text = output.read().decode(errors="replace") + timed_out
    left = session_members(process.pid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Finished(process.returncode, text, [f"{p} {c}" for p, c in left.items()])
