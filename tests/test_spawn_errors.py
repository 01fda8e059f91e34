"""Spawn failures (DESIGN section 3): the OS error, with the program named in the message,
and nothing left behind: no fd, no process, no ``Child`` handed out."""

from __future__ import annotations

import errno
import inspect
import os
import resource
import shutil
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

import anyio_proc
from anyio_proc import Command, spawn

from .helpers import children, open_fds

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

TRUE = shutil.which("true") or "/bin/true"
MISSING = "anyio-proc-no-such-program"


def fd_table() -> dict[int, str]:
    """Our fds and what they point at, without collecting garbage first (cheap, and
    stricter: an fd the library left for the garbage collector to close shows up)."""
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return table


async def spawn_fails(cmd: Command | str) -> OSError:
    """Spawn ``cmd`` both ways; each must raise an OSError, and the same kind. Checks that no
    child and no fd is left, and that the block never ran."""
    fds = open_fds()
    kids = children()
    with anyio.fail_after(10):
        with pytest.raises(OSError) as first:
            await spawn(cmd)
        with pytest.raises(OSError) as second:
            async with spawn(cmd):
                pytest.fail("the block ran although spawning failed")
    assert type(first.value) is type(second.value)
    assert first.value.errno == second.value.errno
    assert children() == kids
    assert open_fds() == fds
    return first.value


# -- the OS error, with the program named ----------------------------------------------


def _missing_in_path(tmp: pathlib.Path) -> tuple[Command, str]:
    return Command(MISSING).stdout_piped(), MISSING


def _missing_path(tmp: pathlib.Path) -> tuple[Command, str]:
    path = str(tmp / "nope" / "prog")
    return Command(path).stdin_piped().stdout_piped().stderr_piped(), path


def _missing_relative(tmp: pathlib.Path) -> tuple[Command, str]:
    return Command("./not-here").current_dir(tmp), "./not-here"


def _directory(tmp: pathlib.Path) -> tuple[Command, str]:
    return Command(tmp).stdout_piped(), str(tmp)


def _not_executable(tmp: pathlib.Path) -> tuple[Command, str]:
    path = tmp / "script.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(0o644)
    return Command(str(path)).stdin_piped(), str(path)


def _no_shebang(tmp: pathlib.Path) -> tuple[Command, str]:
    path = tmp / "plain"
    path.write_text("echo this must not run through a shell\n")
    path.chmod(0o755)
    return Command(str(path)).stdout_piped(), str(path)


def _bad_interpreter(tmp: pathlib.Path) -> tuple[Command, str]:
    path = tmp / "script"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    return Command(str(path)), str(path)


OS_ERRORS = [
    pytest.param(_missing_in_path, FileNotFoundError, errno.ENOENT, id="missing-in-PATH"),
    pytest.param(_missing_path, FileNotFoundError, errno.ENOENT, id="missing-path"),
    pytest.param(_missing_relative, FileNotFoundError, errno.ENOENT, id="missing-relative"),
    pytest.param(_directory, PermissionError, errno.EACCES, id="directory"),
    pytest.param(_not_executable, PermissionError, errno.EACCES, id="not-executable"),
    pytest.param(_no_shebang, OSError, errno.ENOEXEC, id="no-shebang-ENOEXEC"),
    pytest.param(_bad_interpreter, FileNotFoundError, errno.ENOENT, id="bad-interpreter"),
]


@pytest.mark.parametrize(("make", "error", "code"), OS_ERRORS)
async def test_exec_failure_raises_os_error_naming_program(
    tmp_path: pathlib.Path,
    make: Callable[[pathlib.Path], tuple[Command, str]],
    error: type[OSError],
    code: int,
) -> None:
    cmd, program = make(tmp_path)
    exc = await spawn_fails(cmd)
    assert isinstance(exc, error)
    assert exc.errno == code
    assert program in str(exc)


async def test_plain_string_spawn_names_program() -> None:
    exc = await spawn_fails(MISSING)
    assert isinstance(exc, FileNotFoundError)
    assert MISSING in str(exc)


async def test_bad_cwd(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-dir"
    exc = await spawn_fails(Command(TRUE).current_dir(missing).stdout_piped())
    assert isinstance(exc, FileNotFoundError)
    message = str(exc)
    assert str(missing) in message
    assert TRUE in message  # which program it was about, not only the directory


async def test_cwd_is_a_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    exc = await spawn_fails(Command(TRUE).current_dir(path))
    assert isinstance(exc, NotADirectoryError)
    assert TRUE in str(exc)


@pytest.mark.parametrize("where", ["argument", "environment"])
async def test_argument_over_the_size_limit(where: str) -> None:
    big = "x" * 300_000  # over MAX_ARG_STRLEN (128 KiB) on its own
    cmd = Command(TRUE).arg(big) if where == "argument" else Command(TRUE).env("BIG", big)
    exc = await spawn_fails(cmd.stdout_piped())
    assert exc.errno == errno.E2BIG
    assert TRUE in str(exc)
    assert len(str(exc)) < 10_000  # names the program, does not quote the argument


async def test_failed_spawns_leak_nothing() -> None:
    """uvloop #185: each failed spawn used to leak fds until EMFILE."""
    cmd = Command(MISSING).stdin_piped().stdout_piped().stderr_piped()
    fds = open_fds()
    kids = children()
    with anyio.fail_after(30):
        for _ in range(300):
            with pytest.raises(FileNotFoundError):
                await spawn(cmd)
    assert fd_table() == fds  # without a garbage collection: closed, not collected
    assert children() == kids
    # And it still works.
    with anyio.fail_after(10):
        assert (await Command(TRUE).output()).status == 0


# -- fd exhaustion -----------------------------------------------------------------------


def lowest_free_fd() -> int:
    used = set(fd_table())
    fd = 0
    while fd in used:
        fd += 1
    return fd


async def spawn_with_fd_limit(cmd: Command, limit: int) -> OSError | None:
    """Run ``cmd`` to completion with RLIMIT_NOFILE lowered to ``limit``; the error if it
    could not be started. The limit is restored before returning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with anyio.fail_after(10):
            async with spawn(cmd) as child:
                await child.wait()
    except TimeoutError:
        raise  # an OSError too, but a hang, not a refusal
    except OSError as exc:
        return exc
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert child.returncode == 0
    return None


EMFILE_CMD = Command(TRUE).stdin_piped().stdout_piped().stderr_piped()


async def test_emfile_raises_and_leaks_nothing() -> None:
    fds = open_fds()
    kids = children()
    # Not a single new fd can be made: the pipes cannot be created.
    exc = await spawn_with_fd_limit(EMFILE_CMD, lowest_free_fd())
    assert isinstance(exc, OSError)
    assert exc.errno == errno.EMFILE
    assert fd_table() == fds
    assert children() == kids
    # Step the limit up so that each later stage runs out in turn (pipes, the spawn's own
    # error pipe, the exit waiter), until there is room for everything.
    outcomes = []
    for extra in range(16):
        exc = await spawn_with_fd_limit(EMFILE_CMD, lowest_free_fd() + extra)
        if exc is not None:
            assert exc.errno == errno.EMFILE, exc
        outcomes.append(exc is None)
        assert fd_table() == fds, f"leak with {extra} fds to spare"
        assert children() == kids, f"child left with {extra} fds to spare"
    assert outcomes[0] is False
    assert outcomes[-1] is True
    # Restored, spawning works again.
    with anyio.fail_after(10):
        out = await Command("echo", "back").output()
    assert out.stdout == b"back\n"


async def test_emfile_message_names_the_program() -> None:
    """DESIGN 3: spawn failures, EMFILE included, name the program, whichever fd ran out."""
    messages = {}
    for extra in range(16):
        exc = await spawn_with_fd_limit(EMFILE_CMD, lowest_free_fd() + extra)
        if exc is None:
            break
        messages[extra] = str(exc)
    assert messages, "the lowest limit must fail"
    unnamed = sorted(extra for extra, text in messages.items() if TRUE not in text)
    assert unnamed == [], f"spare fds -> message; {TRUE!r} missing for {unnamed}: {messages}"


# -- calling from the wrong place --------------------------------------------------------


def test_spawn_without_a_running_loop() -> None:
    fds = open_fds()
    kids = children()
    with pytest.raises(RuntimeError, match="event loop"):
        spawn(TRUE)
    with pytest.raises(RuntimeError, match="event loop"):
        spawn(Command(TRUE))
    with pytest.raises(RuntimeError, match="event loop"):
        Command(TRUE).spawn()
    with pytest.raises(RuntimeError, match="event loop"):
        spawn([TRUE, "arg"])
    assert children() == kids
    assert open_fds() == fds


def test_spawn_in_a_worker_thread_without_a_loop() -> None:
    async def main() -> str:
        def in_thread() -> str:
            try:
                spawn(TRUE)
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        return await anyio.to_thread.run_sync(in_thread)

    kids = children()
    assert "event loop" in anyio.run(main)
    assert children() == kids


# -- exports -----------------------------------------------------------------------------


def test_all_public_names_exported_from_the_package() -> None:
    assert len(set(anyio_proc.__all__)) == len(anyio_proc.__all__)
    for name in anyio_proc.__all__:
        assert hasattr(anyio_proc, name), name
        obj = getattr(anyio_proc, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "anyio_proc", name
    public = {
        name
        for name, obj in vars(anyio_proc).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    }
    assert public <= set(anyio_proc.__all__)


def test_design_names_are_exported() -> None:
    design = {
        "Command",
        "Stdio",
        "spawn",
        "Child",
        "ExitStatus",
        "Output",
        "ProcessFailed",
        "run_process",
        "open_process",
    }
    assert design <= set(anyio_proc.__all__)
