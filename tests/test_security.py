"""Security (RELIABILITY G1, G2, G3, G5, G7; DESIGN section 2): what a child is given, and
only that.

- No shell unless ``Command.shell`` is used (or the anyio-compatible ``run_process`` /
  ``open_process`` get a ``str``, as anyio documents): arguments that look like options or
  hold shell syntax reach the program byte for byte, through every entry point and both
  launch paths, and nothing they spell out is executed.
- The environment is exactly the parent's plus the command's changes; ``env_clear()``
  leaves nothing of the parent's, read from ``/proc/<pid>/environ`` of the running child.
- ``uid``/``gid``/``groups`` drop every id (real, effective, saved, filesystem) and every
  capability; the dropped child can neither signal nor inspect a root process, nor read
  a root-only file we hold open.

``tests/test_command.py`` checks the builder side of the same options; this file looks at
the child from outside.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

import anyio_proc
from anyio_proc import Child, Command, Output, Stdio, spawn

from .helpers import alive, py

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOBODY = 65534
ECHO_ARGV = py("import json, sys; print(json.dumps(sys.argv[1:]))")

# Option look-alikes and shell syntax; each must arrive as one verbatim argument.
HOSTILE = [
    "-rf",
    "--help",
    "-c",
    "--",
    "-",
    "; rm -rf {tmp}/victim",
    "&& touch {tmp}/pwned",
    "| touch {tmp}/pwned",
    "$(touch {tmp}/pwned)",
    "`touch {tmp}/pwned`",
    "${{IFS}}touch${{IFS}}{tmp}/pwned",
    "> {tmp}/pwned",
    "< /etc/passwd",
    "*",
    "?",
    "[a-z]*",
    "~",
    "~root",
    "{{a,b}}",
    "$HOME",
    "'single' \"double\"",
    "\\",
    "back\\slash\\n",
    "line\nbreak",
    "\ttab",
    " spaced out ",
    "",
    "%s%n",
    "é ü 日本",
]


def hostile(tmp: Path) -> list[str]:
    return [arg.format(tmp=tmp) for arg in HOSTILE]


def assert_nothing_ran(tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "an injected command ran"
    assert (tmp / "victim").exists(), "an injected command ran"


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "victim").write_text("still here")
    (tmp_path / "a").write_text("")  # something for a glob to match
    return tmp_path


async def argv_via_output(argv: list[str], cwd: Path | None) -> list[str]:
    cmd = Command(*argv)
    if cwd is not None:
        cmd = cmd.current_dir(cwd)  # an option only Popen can apply
    with anyio.fail_after(10):
        out = await cmd.output()
    out.check()
    result: list[str] = json.loads(out.stdout)
    return result


async def argv_via_spawn_list(argv: list[str], cwd: Path | None) -> list[str]:
    del cwd
    cmd = Command(argv[0]).args(argv[1:]).stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdout is not None
        with anyio.fail_after(10):
            data = await child.stdout.read_all()
            assert await child.wait() == 0
    result: list[str] = json.loads(data)
    return result


async def argv_via_run_process(argv: list[str], cwd: Path | None) -> list[str]:
    with anyio.fail_after(10):
        done = await anyio_proc.run_process(argv, cwd=cwd)
    result: list[str] = json.loads(done.stdout)
    return result


async def argv_via_open_process(argv: list[str], cwd: Path | None) -> list[str]:
    with anyio.fail_after(10):
        async with await anyio_proc.open_process(argv, cwd=cwd) as process:
            assert process.stdout is not None
            data = b""
            async for chunk in process.stdout:
                data += chunk
            assert await process.wait() == 0
    result: list[str] = json.loads(data)
    return result


ENTRY_POINTS: dict[str, Callable[[list[str], Path | None], object]] = {
    "output": argv_via_output,
    "spawn": argv_via_spawn_list,
    "run_process": argv_via_run_process,
    "open_process": argv_via_open_process,
}


async def test_hostile_arguments_arrive_verbatim(sandbox: Path) -> None:
    args = hostile(sandbox)
    for entry, run in ENTRY_POINTS.items():
        for cwd in (None, sandbox):  # posix_spawn; a working directory needs Popen
            got = await run([*ECHO_ARGV, *args], cwd)  # type: ignore[misc]
            assert got == args, (entry, cwd)
    assert_nothing_ran(sandbox)


async def test_an_option_looking_program_is_not_an_option(sandbox: Path) -> None:
    # The program name is looked up as a file, never parsed: nothing runs.
    for program in ("-c", "--version", "-rf", f"sh -c 'touch {sandbox}/pwned'"):
        with anyio.fail_after(10), pytest.raises(FileNotFoundError):
            await Command(program, f"touch {sandbox}/pwned").status()
    assert_nothing_ran(sandbox)


async def test_a_shell_runs_only_when_asked(sandbox: Path) -> None:
    # What is exec'd is the program itself, not a shell wrapping it (posix_spawn and Popen
    # both return once the exec is done, so /proc/<pid>/exe is final).
    shells = {"sh", "dash", "bash"}

    async def exe_of(child: Child) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/{child.pid}/exe"))
        finally:
            child.kill()  # open_process children wait for a natural exit otherwise
            await child.aclose()

    assert await exe_of(await spawn(Command("sleep", "30"))) == "sleep"
    assert await exe_of(await spawn(Command("sleep", "30").current_dir("/"))) == "sleep"
    assert await exe_of(await spawn(["sleep", "30"])) == "sleep"
    assert await exe_of(await anyio_proc.open_process(["sleep", "30"])) == "sleep"
    # The explicit ways to get a shell do give one.
    assert await exe_of(await spawn(Command.shell("sleep 30; :"))) in shells
    assert await exe_of(await anyio_proc.open_process("sleep 30; :")) in shells
    # And a str given to spawn() is one program name, never a line.
    with anyio.fail_after(10), pytest.raises(FileNotFoundError):
        await spawn(f"sleep 30; touch {sandbox}/pwned")
    assert_nothing_ran(sandbox)


# -- the environment ---------------------------------------------------------------------


async def environ_of(pid: int) -> dict[bytes, bytes]:
    """The environment ``pid`` was started with, read from /proc.

    The spawn returns as soon as the exec has replaced the child's memory, a moment before
    the kernel records where its arguments and environment are: until then both read as
    empty. Its argv (``sleep 30``) is never empty, so wait for that first.
    """
    with anyio.fail_after(5):
        while True:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == b"sleep\x0030\x00":
                    break
            await anyio.sleep(0.001)
    with open(f"/proc/{pid}/environ", "rb") as f:
        data = f.read()
    return dict(item.split(b"=", 1) for item in data.split(b"\0") if item)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    secrets = {
        "ANYIO_PROC_SECRET_TOKEN": "hunter2",
        "AWS_SECRET_ACCESS_KEY": "not-really",
        "LD_PRELOAD": "/nonexistent/evil.so",
        "PYTHONSTARTUP": "/nonexistent/evil.py",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    return secrets


@pytest.fixture
def c_level_variable() -> Iterator[None]:
    """A variable set in the C environment only, as C code does (readline sets COLUMNS and
    LINES): os.environ does not show it, so no child may get it either."""
    libc = ctypes.CDLL(None)
    assert libc.setenv(b"ANYIO_PROC_C_ONLY", b"1", 1) == 0
    assert "ANYIO_PROC_C_ONLY" not in os.environ
    try:
        yield
    finally:
        libc.unsetenv(b"ANYIO_PROC_C_ONLY")


SLEEPER = Command("sleep", "30")
PATHS: dict[str, Callable[[Command], Command]] = {
    "posix_spawn": lambda cmd: cmd,
    "popen": lambda cmd: cmd.current_dir("/"),
    "popen-nobody": lambda cmd: cmd.current_dir("/").uid(NOBODY).gid(NOBODY).groups([]),
}


@pytest.mark.usefixtures("secret_env", "c_level_variable")
async def test_env_clear_leaves_nothing_of_the_parent() -> None:
    for path, through in PATHS.items():
        async with spawn(through(SLEEPER.env_clear())) as child:
            assert await environ_of(child.pid) == {}, path
        cmd = SLEEPER.env("ANYIO_PROC_KEEP", "1").env_clear().env("ONLY", "this")
        async with spawn(through(cmd)) as child:
            assert await environ_of(child.pid) == {b"ONLY": b"this"}, path


@pytest.mark.usefixtures("c_level_variable")
async def test_environment_is_the_parents_and_nothing_more(secret_env: dict[str, str]) -> None:
    # Nothing is added behind the user's back (no PYTHON*, no ANYIO_PROC_* of ours, no
    # variable set by C code that os.environ does not show), the same through every
    # launch path, and env_remove really removes.
    parent = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    for path, through in PATHS.items():
        async with spawn(through(SLEEPER)) as child:
            assert await environ_of(child.pid) == parent, path
        cmd = SLEEPER
        for key in secret_env:
            cmd = cmd.env_remove(key)
        async with spawn(through(cmd)) as child:
            got = await environ_of(child.pid)
        assert got == {k: v for k, v in parent.items() if os.fsdecode(k) not in secret_env}


# -- dropping privileges --------------------------------------------------------------------


def status_fields(pid: int) -> dict[str, list[str]]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


AS_NOBODY = Command("sleep", "30").uid(NOBODY).gid(NOBODY).groups([])


async def test_uid_gid_groups_drop_every_id_and_capability() -> None:
    assert os.geteuid() == 0, "this machine runs the tests as root"
    async with spawn(AS_NOBODY.stdout(Stdio.NULL)) as child:
        fields = status_fields(child.pid)
    assert fields["Uid"] == [str(NOBODY)] * 4  # real, effective, saved, filesystem
    assert fields["Gid"] == [str(NOBODY)] * 4
    assert fields["Groups"] == []  # root's supplementary groups are gone
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[caps][0], 16) == 0, caps
    # Extra groups given explicitly are exactly those.
    async with spawn(AS_NOBODY.groups([NOBODY, 100])) as child:
        assert sorted(status_fields(child.pid)["Groups"]) == ["100", str(NOBODY)]


async def test_id_tools_agree_as_nobody() -> None:
    cmd = Command.shell("id -u; id -g; id -G").uid(NOBODY).gid(NOBODY).groups([])
    with anyio.fail_after(10):
        out = await cmd.current_dir("/").output()
    assert out.stdout.decode().split() == [str(NOBODY)] * 3


async def test_a_dropped_child_cannot_touch_root() -> None:
    # In a directory nobody may enter, so only the file's own mode protects it.
    with tempfile.TemporaryDirectory(dir="/tmp") as where:
        os.chmod(where, 0o755)
        secret = Path(where, "secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        os.write(fd, b"root only")
        os.close(fd)
        out, victim = await _attack(secret)
    assert out.stdout.decode().split() == [
        "kill-refused",
        "environ-refused",
        "mem-refused",
        "file-refused",
        "fd-absent",
    ]
    assert victim.returncode == -signal.SIGTERM  # from our exit policy, not from nobody


async def _attack(secret: Path) -> tuple[Output, Child]:
    """As nobody, try to signal and inspect a root child, and read a root-only file."""
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)  # close_fds must hide it anyway
    try:
        async with spawn(Command("sleep", "30")) as victim:
            script = (
                'kill -TERM "$1" 2>/dev/null && echo signalled || echo kill-refused\n'
                'cat "/proc/$1/environ" >/dev/null 2>&1 && echo environ-read'
                " || echo environ-refused\n"
                'cat "/proc/$1/mem" >/dev/null 2>&1 && echo mem-read || echo mem-refused\n'
                'cat "$2" 2>/dev/null || echo file-refused\n'
                'cat "/proc/self/fd/$3" 2>/dev/null || echo fd-absent\n'
            )
            cmd = (
                Command("sh", "-c", script, "sh", str(victim.pid), str(secret), str(fd))
                .uid(NOBODY)
                .gid(NOBODY)
                .groups([])
                .current_dir("/")
            )
            with anyio.fail_after(10):
                out = await cmd.output()
            assert alive(victim.pid)
            assert victim.try_wait() is None
    finally:
        os.close(fd)
    return out, victim
