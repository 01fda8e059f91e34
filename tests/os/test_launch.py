"""The two ways a process is created (posix_spawn, Popen) give the child the same start."""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyio_proc import Command

from ..helpers import py

LIST_FDS = py(
    "import os\n"
    "def is_open(fd):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "    except OSError:\n"
    "        return False\n"
    "    return True\n"
    # listdir's own fd is closed once it returns: fstat tells it apart.
    "print(*sorted(fd for fd in map(int, os.listdir('/proc/self/fd')) if is_open(fd)))"
)
# Not a Python child: Python sets SIGPIPE to ignored for itself at start-up.
SIG_IGNORED = ["grep", "^SigIgn:", "/proc/self/status"]


FAILS_BEFORE_SPAWNING = ("test_missing_program", "test_not_executable")


def _posix_spawn_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    used: list[str] = []
    real_spawn = os.posix_spawn

    def spying_spawn(*args: object, **kwargs: object) -> int:
        used.append("posix_spawn")
        return real_spawn(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "posix_spawn", spying_spawn)
    return used


@pytest.fixture(params=["posix_spawn", "popen"])
def path_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test through each launch path, and check that it was the one used."""
    used = _posix_spawn_used(monkeypatch)
    yield request.param
    if request.param == "popen":
        assert not used, "posix_spawn was used where Popen was expected"
    else:  # a program not found in PATH fails before any spawn call
        assert used or request.node.name.startswith(FAILS_BEFORE_SPAWNING)


def through(cmd: Command, path_kind: str, tmp_path: Path) -> Command:
    # A working directory is one of the options only Popen can apply.
    return cmd if path_kind == "posix_spawn" else cmd.current_dir(tmp_path)


async def test_inheritable_parent_fd_is_not_passed(path_kind: str, tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)  # what close_fds is for: PEP 446 would hide it anyway
    try:
        out = await through(Command(*LIST_FDS), path_kind, tmp_path).output()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert out.stdout.split() == [b"0", b"1", b"2"]


@pytest.mark.parametrize("extra_fds", [0, 100])
async def test_inheritable_fd_is_closed_whatever_the_number_of_fds(
    extra_fds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With many fds open, Python 3.11/3.12 start through Popen (one close_range() in the
    # child) rather than list every fd from /proc for posix_spawn: both must close them.
    used = _posix_spawn_used(monkeypatch)
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(extra_fds)]
    try:
        counted = os.stat("/proc/self/fd").st_size  # 0 before Linux 6.2
        out = await Command(*LIST_FDS).output()
    finally:
        for fd in (read_fd, write_fd, *extra):
            os.close(fd)
    assert out.stdout.split() == [b"0", b"1", b"2"]
    popen_is_cheaper = (3, 11) <= sys.version_info < (3, 13) and counted >= 64
    assert used == ([] if popen_is_cheaper else ["posix_spawn"])


async def test_pass_fds_and_stdio_survive(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        out = await Command(*LIST_FDS).pass_fds([write_fd]).output()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert out.stdout.split() == [b"0", b"1", b"2", str(write_fd).encode()]


async def test_sigpipe_is_default_and_sighup_ignore_is_inherited(
    path_kind: str, tmp_path: Path
) -> None:
    # Python ignores SIGPIPE for itself; a child must get it back at its default (or it
    # would loop on EPIPE instead of dying like under a shell). Other dispositions follow
    # POSIX and subprocess: an ignored SIGHUP (nohup) is inherited.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        out = await through(Command(*SIG_IGNORED), path_kind, tmp_path).output()
    finally:
        signal.signal(signal.SIGHUP, previous)
    ignored = int(out.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert ignored & (1 << (signal.SIGHUP - 1))


SIG_BLOCKED = ["grep", "^SigBlk:", "/proc/self/status"]


async def _blocked_in_child(cmd: Command) -> int:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    try:
        out = await cmd.output()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return int(out.stdout.split()[1], 16)


async def test_blocked_signals_are_unblocked_in_the_child(path_kind: str, tmp_path: Path) -> None:
    # RELIABILITY G6: a parent that blocks signals in its thread (for a signalfd, say)
    # must not hand that mask on, or its children would ignore the exit policy's SIGTERM.
    assert await _blocked_in_child(through(Command(*SIG_BLOCKED), path_kind, tmp_path)) == 0


async def test_blocked_signals_are_unblocked_with_a_pre_exec_hook() -> None:
    # A hook adds a step of its own to the Popen path; the mask is cleared there too.
    cmd = Command(*SIG_BLOCKED).pre_exec(os.getpid)
    assert await _blocked_in_child(cmd) == 0


def make_script(directory: Path, name: str, mode: int) -> Path:
    script = directory / name
    script.write_text("#!/bin/sh\necho found in $0\n")
    script.chmod(mode)
    return script


async def test_program_is_searched_in_the_childs_path(path_kind: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make_script(bin_dir, "only-here", stat.S_IRWXU)
    cmd = Command("only-here").env("PATH", f"/nonexistent:{bin_dir}")
    out = await through(cmd, path_kind, tmp_path).output()
    assert out.stdout == f"found in {bin_dir}/only-here\n".encode()


async def test_not_executable_in_path_is_permission_error(path_kind: str, tmp_path: Path) -> None:
    make_script(tmp_path, "not-executable", stat.S_IRUSR | stat.S_IWUSR)
    cmd = Command("not-executable").env("PATH", str(tmp_path))
    with pytest.raises(PermissionError, match="not-executable"):
        await through(cmd, path_kind, tmp_path).output()


async def test_missing_program_names_it(path_kind: str, tmp_path: Path) -> None:
    cmd = Command("surely-not-a-program-anyio-proc").env("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="surely-not-a-program-anyio-proc"):
        await through(cmd, path_kind, tmp_path).output()


async def test_stderr_to_stdout_and_devnull(path_kind: str, tmp_path: Path) -> None:
    cmd = Command("sh", "-c", "echo out; echo err >&2; cat").stdout_piped()
    out = await through(cmd.stderr(1), path_kind, tmp_path).output()  # fd 1: our stdout
    assert out.stdout == b"out\n"  # stdin is null: cat ends at once
    merged = await through(
        cmd.stderr(-2),
        path_kind,
        tmp_path,  # subprocess.STDOUT
    ).output()
    assert sorted(merged.stdout.split()) == [b"err", b"out"]
