"""The ``Command`` builder (DESIGN section 2).

Every builder method is checked two ways: it returns a new ``Command`` and leaves the one it
was called on alone, and its effect is observed from a real child process. Bad input must be
refused before any process exists: the tests watch the ``subprocess.Popen`` audit event (a
spawn that forked and then failed would be reaped and invisible in the process table).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyio_proc import Child, Command, ExitStatus, Output, Stdio, spawn

from .helpers import children, open_fds, py

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from anyio.abc import TaskStatus

# -- helpers ---------------------------------------------------------------------------

#: Audit events raised by anything that creates a process.
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec", "os.spawn"}
)
_spawn_events: list[str] = []
_hook_installed = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event in _SPAWN_EVENTS:
        _spawn_events.append(event)


def spawn_attempts() -> int:
    """How many process creations this interpreter has attempted (audit hook, installed
    on first use; hooks cannot be removed, and this one only counts)."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    return len(_spawn_events)


def bad(value: object) -> Any:
    """Pass a deliberately ill-typed value past the type checker."""
    return value


def parse_env(data: bytes) -> dict[str, str]:
    """Parse the output of ``env -0``."""
    result: dict[str, str] = {}
    for item in data.decode().split("\0"):
        if item:
            key, _, value = item.partition("=")
            result[key] = value
    return result


async def run(cmd: Command) -> Output:
    """``cmd.output()`` time-boxed, checked for success."""
    with anyio.fail_after(10):
        out = await cmd.output()
    assert out.status == 0, (out.status, out.stderr)
    return out


async def run_text(cmd: Command) -> str:
    return (await run(cmd)).stdout.decode()


def real(path: str | os.PathLike[str]) -> str:
    """The path with symlinks resolved, as ``pwd -P`` prints it."""
    return os.path.realpath(path)


def closed_fd() -> int:
    """An fd number that is not open here (well above anything in use)."""
    fd = max(open_fds()) + 200
    while fd in open_fds():
        fd += 1
    return fd


# -- immutability ----------------------------------------------------------------------


def _fresh() -> Command:
    return Command("prog", "a").env("K", "v")


#: (method, how to apply it, whether the change shows in ``==``; a callable does not)
TRANSFORMS: list[tuple[str, Callable[[Command], Command], bool]] = [
    ("arg", lambda c: c.arg("x"), True),
    ("args", lambda c: c.args(["x", "y"]), True),
    ("env", lambda c: c.env("K2", "v2"), True),
    ("envs", lambda c: c.envs({"K2": "v2"}), True),
    ("env_remove", lambda c: c.env_remove("K"), True),
    ("env_clear", lambda c: c.env_clear(), True),
    ("current_dir", lambda c: c.current_dir("/"), True),
    ("stdin", lambda c: c.stdin(Stdio.NULL), True),
    ("stdout", lambda c: c.stdout(Stdio.NULL), True),
    ("stderr", lambda c: c.stderr(Stdio.STDOUT), True),
    ("stdin_piped", lambda c: c.stdin_piped(), True),
    ("stdout_piped", lambda c: c.stdout_piped(), True),
    ("stderr_piped", lambda c: c.stderr_piped(), True),
    ("kill_on_drop", lambda c: c.kill_on_drop(), True),
    ("shutdown", lambda c: c.shutdown(signal.SIGINT, 1.0), True),
    ("process_group", lambda c: c.process_group(0), True),
    ("new_session", lambda c: c.new_session(), True),
    ("kill_tree", lambda c: c.kill_tree(), True),
    ("die_with_parent", lambda c: c.die_with_parent(), True),
    ("uid", lambda c: c.uid(65534), True),
    ("gid", lambda c: c.gid(65534), True),
    ("groups", lambda c: c.groups([65534]), True),
    ("umask", lambda c: c.umask(0o077), True),
    ("pass_fds", lambda c: c.pass_fds([1]), True),
    ("arg0", lambda c: c.arg0("name"), True),
    ("pre_exec", lambda c: c.pre_exec(lambda: None), False),
    ("creation_flags", lambda c: c.creation_flags(0x200), True),
    ("pty", lambda c: c.pty(30, 100), True),
]


def test_builder_returns_new_command_and_leaves_original() -> None:
    problems = []
    for name, transform, compared in TRANSFORMS:
        base = _fresh()
        derived = transform(base)
        again = transform(base)  # applying it again to the original: nothing accumulated
        checks = {
            "returns a Command": isinstance(derived, Command),
            "returns a new object": derived is not base and again is not derived,
            "original unchanged": base == _fresh() and repr(base) == repr(_fresh()),
            "result differs": not compared or derived != base,
            "repeatable": not compared or again == derived,
        }
        problems += [f"{name}: {what}" for what, ok in checks.items() if not ok]
    assert problems == []
    assert {name for name, _, _ in TRANSFORMS} >= {
        m for m in vars(Command) if not m.startswith("_") and callable(getattr(Command, m))
    } - {"spawn", "status", "output", "shell"}


def test_builder_chain_does_not_share_state() -> None:
    base = Command("prog")
    one = base.arg("1")
    two = base.arg("2")
    assert one.argv == ("prog", "1")
    assert two.argv == ("prog", "2")
    assert base.argv == ("prog",)
    assert one.arg("x").argv == ("prog", "1", "x")
    assert one.argv == ("prog", "1")


def test_args_accepts_any_iterable_once() -> None:
    cmd = Command("prog").args(a for a in ["x", "y"]).args(("z",)).args([])
    assert cmd.argv == ("prog", "x", "y", "z")


def test_command_repr_names_program_and_args() -> None:
    assert "prog" in repr(Command("prog", "arg one"))
    assert "arg one" in repr(Command("prog", "arg one"))
    assert "echo $HOME" in repr(Command.shell("echo $HOME"))


async def test_original_unchanged_when_run_after_deriving(tmp_path: pathlib.Path) -> None:
    script = 'printf "%s|%s|%s" "$ANYIO_PROC_T" "$(pwd -P)" "$#"'
    base = Command("sh", "-c", script, "sh").env("ANYIO_PROC_T", "base")
    derived = [
        base.env("ANYIO_PROC_T", "changed"),
        base.env_remove("ANYIO_PROC_T"),
        base.env_clear(),
        base.current_dir(tmp_path),
        base.arg("extra"),
        base.stdout(Stdio.NULL),
    ]
    cwd = real(os.getcwd())
    assert await run_text(base) == f"base|{cwd}|0"
    assert await run_text(derived[0]) == f"changed|{cwd}|0"
    assert await run_text(derived[1]) == f"|{cwd}|0"
    assert await run_text(derived[2]) == f"|{cwd}|0"
    assert await run_text(derived[3]) == f"base|{real(tmp_path)}|0"
    assert await run_text(derived[4]) == f"base|{cwd}|1"
    assert await run_text(derived[5]) == ""
    assert await run_text(base) == f"base|{cwd}|0"


async def test_command_shared_between_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYIO_PROC_N", raising=False)
    base = Command("sh", "-c", 'printf "%s" "${ANYIO_PROC_N-unset}"')
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        cmd = base if i < 0 else base.env("ANYIO_PROC_N", str(i))
        results[i] = (await cmd.output()).stdout

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(-3, 5):
                tg.start_soon(one, i)
    assert results == {
        **dict.fromkeys(range(-3, 0), b"unset"),
        **{i: str(i).encode() for i in range(5)},
    }


# -- program and arguments -------------------------------------------------------------


async def test_arguments_delivered_exactly() -> None:
    tricky = ["", " a b ", "-rf", "*", '"q"', "x\ny", "$HOME", "; touch /tmp/pwned", "é"]
    cmd = Command(*py("import json, sys; print(json.dumps(sys.argv[1:]))"))
    cmd = cmd.arg(tricky[0]).args(tricky[1:4]).args(iter(tricky[4:]))
    assert json.loads(await run_text(cmd)) == tricky


async def test_bytes_and_pathlike_program_and_args(tmp_path: pathlib.Path) -> None:
    cmd = Command(pathlib.Path("/bin/sh"), b"-c", 'printf "%s %s" "$0" "$1"', tmp_path, b"\xff")
    out = (await run(cmd)).stdout
    assert out == os.fsencode(tmp_path) + b" \xff"


async def test_string_is_a_program_name_never_a_shell_line() -> None:
    before = children()
    with anyio.fail_after(10), pytest.raises(FileNotFoundError) as info:
        await spawn("echo hi")
    assert "echo hi" in str(info.value)
    with anyio.fail_after(10), pytest.raises(FileNotFoundError):
        await Command("echo hi").status()
    assert children() == before


async def test_metacharacters_are_passed_literally(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "pwned"
    text = f"$HOME; touch {target} `id` *"
    out = await run_text(Command("echo", text).current_dir(tmp_path))
    assert out == text + "\n"
    assert not target.exists()


async def test_shell_runs_a_shell_line(tmp_path: pathlib.Path) -> None:
    cmd = Command.shell('echo $((40 + 2)) | tr 4 x; echo "$0" > out.txt').current_dir(tmp_path)
    assert await run_text(cmd) == "x2\n"
    assert (tmp_path / "out.txt").read_text().strip().endswith("sh")
    # The result is a Command like any other.
    cmd = Command.shell('printf "%s" "$ANYIO_PROC_S"').env("ANYIO_PROC_S", "from env")
    assert await run_text(cmd) == "from env"


async def test_arg0_is_what_the_child_sees() -> None:
    cmd = Command("cat", "/proc/self/cmdline")
    assert (await run(cmd)).stdout == b"cat\0/proc/self/cmdline\0"
    assert (await run(cmd.arg0("kitty"))).stdout == b"kitty\0/proc/self/cmdline\0"
    assert (await run(cmd.arg0(b"raw"))).stdout == b"raw\0/proc/self/cmdline\0"


# -- environment -----------------------------------------------------------------------

ENV = Command("env", "-0")


async def test_env_adds_over_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYIO_PROC_PARENT", "inherited")
    env = parse_env((await run(ENV.env("ANYIO_PROC_NEW", "a=b c"))).stdout)
    assert env["ANYIO_PROC_NEW"] == "a=b c"  # '=' is fine in a value
    assert env["ANYIO_PROC_PARENT"] == "inherited"
    assert env["PATH"] == os.environ["PATH"]
    # A later call wins, over the parent and over earlier calls.
    cmd = ENV.env("ANYIO_PROC_PARENT", "first").env("ANYIO_PROC_PARENT", "second")
    assert parse_env((await run(cmd)).stdout)["ANYIO_PROC_PARENT"] == "second"


async def test_envs_mapping_and_pairs() -> None:
    cmd = ENV.envs({"ANYIO_PROC_A": "1", "ANYIO_PROC_B": "2"}).envs([("ANYIO_PROC_C", "3")])
    env = parse_env((await run(cmd)).stdout)
    assert (env["ANYIO_PROC_A"], env["ANYIO_PROC_B"], env["ANYIO_PROC_C"]) == ("1", "2", "3")


async def test_env_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYIO_PROC_PARENT", "inherited")
    monkeypatch.setenv("ANYIO_PROC_KEEP", "kept")
    env = parse_env((await run(ENV.env_remove("ANYIO_PROC_PARENT"))).stdout)
    assert "ANYIO_PROC_PARENT" not in env
    assert env["ANYIO_PROC_KEEP"] == "kept"
    # Removes what an earlier call set; a later call sets it again.
    cmd = ENV.env("ANYIO_PROC_X", "1").env_remove("ANYIO_PROC_X")
    assert "ANYIO_PROC_X" not in parse_env((await run(cmd)).stdout)
    cmd = cmd.env("ANYIO_PROC_X", "2")
    assert parse_env((await run(cmd)).stdout)["ANYIO_PROC_X"] == "2"
    # Removing something that is not there is fine.
    assert "ANYIO_PROC_NOPE" not in parse_env((await run(ENV.env_remove("ANYIO_PROC_NOPE"))).stdout)
    # The parent's environment is untouched.
    assert os.environ["ANYIO_PROC_PARENT"] == "inherited"


async def test_env_undecodable_value_round_trips() -> None:
    out = await run(ENV.env_clear().env("K", "abc\udcff"))
    assert out.stdout == b"K=abc\xff\0"


async def test_env_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYIO_PROC_PARENT", "inherited")
    assert (await run(ENV.env_clear())).stdout == b""
    cmd = ENV.env("ANYIO_PROC_EARLIER", "x").env_clear().env("A", "1")
    assert parse_env((await run(cmd)).stdout) == {"A": "1"}
    assert os.environ["ANYIO_PROC_PARENT"] == "inherited"


# -- working directory, umask ----------------------------------------------------------


async def test_current_dir(tmp_path: pathlib.Path) -> None:
    expected = real(tmp_path) + "\n"
    assert real(os.getcwd()) != real(tmp_path)
    for where in (str(tmp_path), os.fsencode(tmp_path), tmp_path):
        assert await run_text(Command("pwd", "-P").current_dir(where)) == expected, where


async def test_relative_program_is_found_from_current_dir(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(pwd -P)\n")
    script.chmod(0o755)
    out = await run_text(Command("./hello.sh").current_dir(tmp_path))
    assert out == f"hello from {real(tmp_path)}\n"


async def test_umask(tmp_path: pathlib.Path) -> None:
    cmd = Command.shell("umask; touch made").current_dir(tmp_path).umask(0o053)
    assert (await run_text(cmd)).strip() == "0053"
    assert (tmp_path / "made").stat().st_mode & 0o777 == 0o624
    own = os.umask(0o022)
    os.umask(own)
    assert own != 0o053  # the parent's mask did not change


# -- fds -------------------------------------------------------------------------------

FD_LISTING = """
import json, os
seen = {}
for name in os.listdir("/proc/self/fd"):
    try:
        seen[name] = os.readlink("/proc/self/fd/" + name)
    except OSError:
        pass
print(json.dumps(seen))
"""


def _target(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


async def test_pass_fds_and_close_fds_always() -> None:
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_w, True)  # even inheritable fds are closed unless passed
    try:
        code = f"import os\nos.write({w}, b'via passed fd')\n" + FD_LISTING
        cmd = Command(*py(code)).pass_fds([w])
        listing: dict[str, str] = json.loads(await run_text(cmd))
        assert os.read(r, 100) == b"via passed fd"
        assert listing.get(str(w)) == _target(w)
        assert _target(other_w) not in listing.values()
        assert _target(other_r) not in listing.values()
        assert _target(r) == _target(w)  # same pipe; the read end was not passed
        assert str(r) not in listing or listing[str(r)] != _target(r)
        # Passing changes inheritability in the child only.
        assert os.get_inheritable(w) is False
        assert os.get_inheritable(other_w) is True
        # A passed fd that is also used as stdout stays open at its own number too.
        code = f"import os, sys\nos.write({w}, b'fd;')\nprint('stdout', flush=True)"
        with anyio.fail_after(10):
            status = await Command(*py(code)).stdout(w).pass_fds([w]).status()
        assert status == 0
        assert os.read(r, 100) == b"fd;stdout\n"
    finally:
        for fd in (r, w, other_r, other_w):
            os.close(fd)


async def test_without_pass_fds_only_stdio_is_open() -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        # A sibling is running: its pipes and exit waiter are open in the parent too.
        with anyio.fail_after(10):
            async with spawn(Command("cat").stdin_piped().stdout_piped()) as sibling:
                assert sibling.stdin is not None
                assert sibling.stdout is not None
                theirs = {_target(sibling.stdin.fileno()), _target(sibling.stdout.fileno())}
                listing: dict[str, str] = json.loads(await run_text(Command(*py(FD_LISTING))))
                # The sibling still sees EOF once we close its stdin: nobody else holds it.
                await sibling.stdin.aclose()
                assert await sibling.stdout.read_all() == b""
                assert await sibling.wait() == 0
        ours = _target(w)
    finally:
        os.close(r)
        os.close(w)
    assert ours not in listing.values()
    assert not theirs & set(listing.values())
    # 0, 1, 2 and the directory fd listdir itself used (closed by then: no target).
    assert {"0", "1", "2"} <= set(listing)
    assert len(listing) == 3, listing


# -- process group, session ------------------------------------------------------------

IDS = "import os; print(os.getpid(), os.getpgrp(), os.getsid(0))"


async def test_process_group_and_session() -> None:
    pid, pgid, sid = map(int, (await run_text(Command(*py(IDS)))).split())
    assert (pgid, sid) == (os.getpgrp(), os.getsid(0))  # by default: ours
    assert pid != pgid

    pid, pgid, sid = map(int, (await run_text(Command(*py(IDS)).process_group(0))).split())
    assert pgid == pid != os.getpgrp()  # its own group
    assert sid == os.getsid(0)

    pid, pgid, sid = map(int, (await run_text(Command(*py(IDS)).new_session())).split())
    assert sid == pgid == pid  # leads its own session and group
    assert sid != os.getsid(0)


# -- pre_exec ------------------------------------------------------------------------


async def test_pre_exec_runs_in_child_before_exec(tmp_path: pathlib.Path) -> None:
    r, w = os.pipe()

    def hook() -> None:
        os.write(w, str(os.getpid()).encode())
        os.chdir(tmp_path)  # no current_dir() set: this survives into the program

    try:
        with anyio.fail_after(10):
            async with spawn(Command("pwd", "-P").pre_exec(hook).stdout_piped()) as child:
                assert child.stdout is not None
                out = await child.stdout.read_all()
                assert await child.wait() == 0
        assert out.decode() == real(tmp_path) + "\n"
        assert int(os.read(r, 100)) == child.pid != os.getpid()
        assert os.getcwd() != real(tmp_path)
    finally:
        os.close(r)
        os.close(w)


async def test_pre_exec_failure_leaves_nothing() -> None:
    def hook() -> None:
        raise ValueError("refused")

    fds = open_fds()
    kids = children()
    with anyio.fail_after(10), pytest.raises(Exception, match="pre_exec"):
        await Command("true").pre_exec(hook).stdout_piped().stdin_piped().status()
    assert children() == kids
    assert open_fds() == fds


# -- uid, gid, groups --------------------------------------------------------------------

ID = Command.shell("id -u; id -g; id -G").current_dir("/")


async def test_uid_gid_groups() -> None:
    assert os.geteuid() == 0, "these tests expect to run as root"
    assert (await run_text(ID)).split("\n")[:2] == ["0", "0"]
    assert (
        await run_text(ID.uid(65534).gid(65534).groups([65534, 100])) == "65534\n65534\n65534 100\n"
    )
    # An empty list drops every supplementary group.
    assert await run_text(ID.uid(65534).gid(65534).groups([])) == "65534\n65534\n65534\n"
    # Only the uid changes when only the uid is given.
    assert (await run_text(ID.uid(65534))).split("\n")[:2] == ["65534", "0"]


# -- shutdown policy observed ------------------------------------------------------------


async def test_shutdown_signal_is_used() -> None:
    cmd = Command("sleep", "30").shutdown(signal.SIGUSR1, timeout=5)
    with anyio.fail_after(10):
        async with spawn(cmd) as child:
            assert child.returncode is None
    assert child.returncode == -signal.SIGUSR1


# -- stdio -----------------------------------------------------------------------------

ECHO_BOTH = Command("sh", "-c", "echo out; echo err >&2")


async def test_stdio_pipe_values() -> None:
    cmd = Command("sh", "-c", "read x; echo got $x; echo e$x >&2")
    for pipe in (Stdio.PIPE, subprocess.PIPE):
        with anyio.fail_after(10):
            async with spawn(cmd.stdin(pipe).stdout(pipe).stderr(pipe)) as child:
                assert child.stdin is not None
                assert child.stdout is not None
                assert child.stderr is not None
                await child.stdin.send(b"it\n")
                assert await child.stdout.read_all() == b"got it\n"
                assert await child.stderr.read_all() == b"eit\n"
                assert await child.wait() == 0


async def test_stdio_not_piped_has_no_stream() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("true").stdin(Stdio.NULL).stdout(Stdio.NULL)) as child:
            assert child.stdin is None
            assert child.stdout is None
            assert child.stderr is None
            assert await child.wait() == 0


async def test_stdio_null_values() -> None:
    where = Command(*py("import os, sys; sys.stderr.write(os.readlink('/proc/self/fd/1'))"))
    for null in (Stdio.NULL, subprocess.DEVNULL):
        out = await run(where.stdout(null))
        assert out.stdout == b""  # explicit stdout overrides output()'s default pipe
        assert out.stderr == b"/dev/null"
        out = await run(Command("cat").stdin(null).stdout_piped())
        assert out.stdout == b""


async def test_stderr_into_stdout() -> None:
    for merge in (Stdio.STDOUT, subprocess.STDOUT):
        out = await run(ECHO_BOTH.stderr(merge))
        assert out.stdout == b"out\nerr\n"
        assert out.stderr == b""


async def test_stderr_into_stdout_when_stdout_is_inherited(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with anyio.fail_after(10):
        assert await ECHO_BOTH.stderr(Stdio.STDOUT).status() == 0
    assert capfd.readouterr() == ("out\nerr\n", "")


async def test_stderr_into_stdout_when_stdout_goes_to_a_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "both.txt"
    with path.open("wb") as f:
        with anyio.fail_after(10):
            status = await ECHO_BOTH.stdout(f).stderr(Stdio.STDOUT).status()
        assert status == 0
    assert path.read_bytes() == b"out\nerr\n"


async def test_stdio_fd_ints() -> None:
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    fds = {out_r, out_w, in_r, in_w}
    try:
        os.write(in_w, b"from a pipe\n")
        os.close(in_w)
        fds.discard(in_w)
        with anyio.fail_after(10):
            status = (
                await Command("sh", "-c", "cat; echo err >&2")
                .stdin(in_r)
                .stdout(out_w)
                .stderr(out_w)
                .status()
            )
        assert status == 0
        os.close(out_w)
        fds.discard(out_w)
        assert os.read(out_r, 100) == b"from a pipe\nerr\n"
        assert os.read(out_r, 100) == b""  # the child's copies are gone too
    finally:
        for fd in fds:
            os.close(fd)


async def test_stdout_and_stderr_to_file_objects(tmp_path: pathlib.Path) -> None:
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("wb") as out_file, err_path.open("w") as err_file:
        with anyio.fail_after(10):
            status = await ECHO_BOTH.stdout(out_file).stderr(err_file).status()
        assert status == 0
        assert not out_file.closed  # still ours
    assert out_path.read_bytes() == b"out\n"
    assert err_path.read_bytes() == b"err\n"


async def test_stdin_from_file_object(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"line 1\nline 2\n")
    with path.open("rb") as f:
        out = await run(Command("cat").stdin(f))
    assert out.stdout == b"line 1\nline 2\n"


class StdinWriter:
    """The write end of the pipe that is our fd 0 during a test."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        assert os.write(self.fd, data) == len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
def stdin_pipe() -> Iterator[StdinWriter]:
    """Make our fd 0 a pipe (pytest gives /dev/null), for stdin inheritance to be seen."""
    saved = os.dup(0)
    r, w = os.pipe()
    os.dup2(r, 0)  # inheritable, like a real stdin
    os.close(r)
    writer = StdinWriter(w)
    try:
        yield writer
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        writer.close()


async def test_status_inherits_stdio(
    stdin_pipe: StdinWriter, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin_pipe.write(b"typed in\n")
    stdin_pipe.close()
    cmd = Command("sh", "-c", 'read line; echo "out: $line"; echo "err: $line" >&2; exit 5')
    with anyio.fail_after(10):
        status = await cmd.status()
    assert isinstance(status, ExitStatus)
    assert status == 5
    captured = capfd.readouterr()
    assert captured.out == "out: typed in\n"
    assert captured.err == "err: typed in\n"


async def test_output_defaults(stdin_pipe: StdinWriter, capfd: pytest.CaptureFixture[str]) -> None:
    # Our stdin is a pipe nobody writes to or closes: a child inheriting it would hang.
    cmd = Command("sh", "-c", "cat; echo out; echo err >&2; exit 3")
    with anyio.fail_after(10):
        out = await cmd.output()
    assert isinstance(out, Output)
    assert (out.status, out.stdout, out.stderr) == (3, b"out\n", b"err\n")
    assert capfd.readouterr() == ("", "")


async def test_output_explicit_settings_override_defaults(
    stdin_pipe: StdinWriter, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin_pipe.write(b"typed in\n")
    stdin_pipe.close()
    cmd = Command("sh", "-c", "cat; echo err >&2")
    out = await run(cmd.stdin(Stdio.INHERIT).stdout(Stdio.INHERIT))
    assert (out.stdout, out.stderr) == (b"", b"err\n")
    assert capfd.readouterr() == ("typed in\n", "")


async def test_status_explicit_null_overrides_inherit(capfd: pytest.CaptureFixture[str]) -> None:
    with anyio.fail_after(10):
        status = await ECHO_BOTH.stdout(Stdio.NULL).status()
    assert status == 0
    assert capfd.readouterr() == ("", "err\n")


# -- running ---------------------------------------------------------------------------


async def test_status_under_tg_start_hands_back_the_child() -> None:
    results: list[ExitStatus] = []

    async def runner(*, task_status: TaskStatus[Child]) -> None:
        results.append(await Command("sleep", "30").status(task_status=task_status))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            child = await tg.start(runner)
            assert isinstance(child, Child)
            assert child.returncode is None
            child.kill()
        direct = await tg_start_status(Command("sh", "-c", "exit 4"))
    assert results == [-signal.SIGKILL]
    assert direct == 4


async def tg_start_status(cmd: Command) -> ExitStatus:
    """``await tg.start(cmd.status)`` exactly as DESIGN writes it."""
    async with anyio.create_task_group() as tg:
        child: Child = await tg.start(cmd.status)
        assert isinstance(child, Child)
        assert child.pid > 0
        status = await child.wait()
    assert isinstance(status, ExitStatus)
    return status


async def test_output_under_tg_start_hands_back_the_child() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            child: Child = await tg.start(Command("sleep", "30").output)
            assert isinstance(child, Child)
            assert child.stdout is not None  # output() pipes stdout
            assert child.stdin is None  # and gives a null stdin
            child.kill()
    assert child.returncode == -signal.SIGKILL


async def test_spawn_method_context_manager_and_await() -> None:
    with anyio.fail_after(10):
        async with Command("sh", "-c", "exit 4").spawn() as child:
            assert isinstance(child, Child)
            assert await child.wait() == 4
        owned = await Command("sh", "-c", "exit 5").stdout_piped().spawn()
        try:
            assert isinstance(owned, Child)
            assert await owned.wait() == 5
        finally:
            await owned.aclose()


# -- bad input -------------------------------------------------------------------------

BadCase = tuple[str, "Callable[[], object]", type[Exception]]

BAD_BUILDER: dict[str, list[BadCase]] = {
    "program-and-args": [
        ("empty program", lambda: Command(""), ValueError),
        ("empty bytes program", lambda: Command(b""), ValueError),
        ("None program", lambda: Command(bad(None)), TypeError),
        ("int program", lambda: Command(bad(3)), TypeError),
        ("NUL in program", lambda: Command("ec\0ho"), ValueError),
        ("NUL in bytes program", lambda: Command(b"ec\0ho"), ValueError),
        ("NUL in path program", lambda: Command(pathlib.Path("a\0b")), ValueError),
        ("NUL in arg", lambda: Command("echo", "a\0b"), ValueError),
        ("NUL in .arg()", lambda: Command("echo").arg("a\0"), ValueError),
        ("NUL in .args()", lambda: Command("echo").args(["ok", b"\0"]), ValueError),
        ("int arg", lambda: Command("echo", bad(3)), TypeError),
        ("None .arg()", lambda: Command("echo").arg(bad(None)), TypeError),
        ("float in .args()", lambda: Command("echo").args(bad([1.5])), TypeError),
        ("str to .args()", lambda: Command("echo").args("abc"), TypeError),
        ("NUL in arg0", lambda: Command("echo").arg0("a\0"), ValueError),
        ("NUL in shell line", lambda: Command.shell("echo \0"), ValueError),
        ("bytes shell line", lambda: Command.shell(bad(b"echo")), TypeError),
    ],
    "env": [
        ("NUL in key", lambda: Command("e").env("K\0", "v"), ValueError),
        ("NUL in value", lambda: Command("e").env("K", "v\0"), ValueError),
        ("= in key", lambda: Command("e").env("A=B", "v"), ValueError),
        ("leading = in key", lambda: Command("e").env("=A", "v"), ValueError),
        ("empty key", lambda: Command("e").env("", "v"), ValueError),
        ("int key", lambda: Command("e").env(bad(1), "v"), TypeError),
        ("None key", lambda: Command("e").env(bad(None), "v"), TypeError),
        ("bytes key", lambda: Command("e").env(bad(b"K"), "v"), TypeError),
        ("int value", lambda: Command("e").env("K", bad(1)), TypeError),
        ("None value", lambda: Command("e").env("K", bad(None)), TypeError),
        ("bytes value", lambda: Command("e").env("K", bad(b"v")), TypeError),
        ("envs int value", lambda: Command("e").envs(bad({"K": 1})), TypeError),
        ("envs None value", lambda: Command("e").envs(bad({"K": None})), TypeError),
        ("envs int key", lambda: Command("e").envs(bad({1: "x"})), TypeError),
        ("envs bytes key", lambda: Command("e").envs(bad({b"K": "x"})), TypeError),
        ("envs = in key", lambda: Command("e").envs({"A=B": "x"}), ValueError),
        ("envs empty key", lambda: Command("e").envs({"": "x"}), ValueError),
        ("envs NUL in value", lambda: Command("e").envs({"K": "\0"}), ValueError),
        ("envs pair with None", lambda: Command("e").envs([("K", bad(None))]), TypeError),
        ("remove = in key", lambda: Command("e").env_remove("A=B"), ValueError),
        ("remove empty key", lambda: Command("e").env_remove(""), ValueError),
        ("remove int key", lambda: Command("e").env_remove(bad(1)), TypeError),
    ],
    "current_dir": [
        ("NUL in cwd", lambda: Command("e").current_dir("/tm\0p"), ValueError),
        ("NUL in bytes cwd", lambda: Command("e").current_dir(b"/tm\0p"), ValueError),
        ("int cwd", lambda: Command("e").current_dir(bad(3)), TypeError),
    ],
    "stdio": [
        ("negative stdin fd", lambda: Command("e").stdin(-5), ValueError),
        ("negative stdout fd", lambda: Command("e").stdout(-4), ValueError),
        ("negative stderr fd", lambda: Command("e").stderr(-100), ValueError),
        ("str stdout", lambda: Command("e").stdout(bad("pipe")), TypeError),
        ("str stdin", lambda: Command("e").stdin(bad("/dev/null")), TypeError),
        ("float stderr", lambda: Command("e").stderr(bad(1.5)), TypeError),
        ("None stdout", lambda: Command("e").stdout(bad(None)), TypeError),
        ("bool stdout", lambda: Command("e").stdout(bad(True)), TypeError),
        ("bytes stdout", lambda: Command("e").stdout(bad(b"x")), TypeError),
        ("Stdio.STDOUT stdin", lambda: Command("e").stdin(Stdio.STDOUT), ValueError),
        ("Stdio.STDOUT stdout", lambda: Command("e").stdout(Stdio.STDOUT), ValueError),
        ("subprocess.STDOUT stdin", lambda: Command("e").stdin(subprocess.STDOUT), ValueError),
        ("subprocess.STDOUT stdout", lambda: Command("e").stdout(subprocess.STDOUT), ValueError),
    ],
    "unix-options": [
        ("negative pass_fds", lambda: Command("e").pass_fds([-1]), ValueError),
        ("one negative pass_fds", lambda: Command("e").pass_fds([3, -2]), ValueError),
        ("str pass_fds", lambda: Command("e").pass_fds(bad(["3"])), TypeError),
        ("uid -1", lambda: Command("e").uid(-1), ValueError),
        ("uid 2**64", lambda: Command("e").uid(2**64), ValueError),
        ("uid str", lambda: Command("e").uid(bad("nobody")), TypeError),
        ("gid -1", lambda: Command("e").gid(-1), ValueError),
        ("gid 2**64", lambda: Command("e").gid(2**64), ValueError),
        ("groups -1", lambda: Command("e").groups([0, -1]), ValueError),
        ("groups 2**64", lambda: Command("e").groups([2**64]), ValueError),
        ("umask 0o1000", lambda: Command("e").umask(0o1000), ValueError),
        ("umask -1", lambda: Command("e").umask(-1), ValueError),
        ("pgid -1", lambda: Command("e").process_group(-1), ValueError),
        ("pre_exec not callable", lambda: Command("e").pre_exec(bad(42)), TypeError),
    ],
    "shutdown": [
        ("signal str", lambda: Command("e").shutdown(bad("SIGTERM")), TypeError),
        ("signal float", lambda: Command("e").shutdown(bad(15.0)), TypeError),
        ("signal None", lambda: Command("e").shutdown(bad(None)), TypeError),
        ("signal 0", lambda: Command("e").shutdown(0), ValueError),
        ("signal -15", lambda: Command("e").shutdown(-15), ValueError),
        ("signal 9999", lambda: Command("e").shutdown(9999), ValueError),
        ("timeout -1", lambda: Command("e").shutdown(timeout=-1), ValueError),
        ("timeout inf", lambda: Command("e").shutdown(timeout=math.inf), ValueError),
        ("timeout nan", lambda: Command("e").shutdown(timeout=math.nan), ValueError),
        ("timeout str", lambda: Command("e").shutdown(timeout=bad("5")), TypeError),
    ],
}


def check_refused(cases: list[BadCase]) -> list[str]:
    """Run each case; describe every one that did not raise the expected error."""
    problems = []
    for name, make, error in cases:
        try:
            make()
        except error:
            continue
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}, expected {error.__name__}")
        else:
            problems.append(f"{name}: accepted, expected {error.__name__}")
    return problems


@pytest.mark.parametrize("group", list(BAD_BUILDER))
def test_bad_input_refused_at_builder(group: str) -> None:
    attempts = spawn_attempts()
    fds = open_fds()
    kids = children()
    assert check_refused(BAD_BUILDER[group]) == []
    assert spawn_attempts() == attempts
    assert children() == kids
    assert open_fds() == fds


def test_good_edge_values_accepted() -> None:
    """The other side of the table: the limits themselves are fine."""
    Command("e").umask(0o777).umask(0).uid(0).gid(2**32 - 1).groups([]).pass_fds([])
    Command("e").shutdown(signal.SIGKILL, 0).shutdown(signal.SIGINT, 0.5).shutdown(timeout=10)
    Command("e").env("K", "").env("K", "a=b").envs({}).stdin(0).stdout(1).stderr(2)
    Command("e").stdout(Stdio.INHERIT).stderr(Stdio.STDOUT).stderr(subprocess.STDOUT)


def _closed_file(path: pathlib.Path) -> Any:
    f = path.open("wb")
    f.close()
    return f


def bad_at_spawn(tmp: pathlib.Path, fd: int) -> dict[str, Command]:
    """Commands the builder accepts that spawn must refuse (``fd`` is not open)."""
    return {
        "pass_fds closed": Command("true").pass_fds([fd]),
        "pass_fds one closed": Command("true").pass_fds([0, fd]),
        "pass_fds closed, with pipes": Command("true").stdin_piped().stdout_piped().pass_fds([fd]),
        "stdout closed fd": Command("true").stdout(fd),
        "stdin closed fd": Command("cat").stdin(fd),
        "stdout closed file": Command("true").stdout(_closed_file(tmp / "f")),
        "stderr closed file, with pipes": Command("true")
        .stdin_piped()
        .stdout_piped()
        .stderr(_closed_file(tmp / "f")),
    }


async def test_bad_input_refused_at_spawn(tmp_path: pathlib.Path) -> None:
    commands = bad_at_spawn(tmp_path, closed_fd())
    attempts = spawn_attempts()
    fds = open_fds()
    kids = children()
    problems = []
    for name, cmd in commands.items():
        for how in ("await", "async with", "status", "output"):
            try:
                with anyio.fail_after(10):
                    if how == "await":
                        child = await spawn(cmd)
                        await child.aclose()
                    elif how == "async with":
                        async with spawn(cmd):
                            pass
                    elif how == "status":
                        await cmd.status()
                    else:
                        await cmd.output()
            except ValueError:
                continue
            except Exception as exc:
                problems.append(f"{name} ({how}): {type(exc).__name__}: {exc}")
            else:
                problems.append(f"{name} ({how}): accepted")
    assert problems == []
    assert spawn_attempts() == attempts
    assert children() == kids
    assert open_fds() == fds
    # The audit hook does see a spawn that goes ahead.
    await run(Command("true"))
    assert spawn_attempts() > attempts


async def test_bad_argv_refused_by_spawn() -> None:
    bad_argvs: list[Sequence[str]] = [[], (), [""], ["echo", "a\0b"], ["ec\0ho"]]
    attempts = spawn_attempts()
    fds = open_fds()
    kids = children()
    for argv in bad_argvs:
        with pytest.raises(ValueError):
            await spawn(argv)
        with pytest.raises(ValueError):
            async with spawn(argv):
                pytest.fail("the block must not run")
    for not_argv in (42, None, [42], ["echo", 1.5]):
        with pytest.raises(TypeError):
            await spawn(bad(not_argv))
    assert spawn_attempts() == attempts
    assert children() == kids
    assert open_fds() == fds


async def test_spawn_sequence_argv_runs() -> None:
    with anyio.fail_after(10):
        async with spawn(["sh", "-c", "exit 6"]) as child:
            assert await child.wait() == 6
        async with spawn(("true",)) as child:
            assert await child.wait() == 0
        async with spawn(pathlib.Path("/bin/true")) as child:
            assert await child.wait() == 0
        async with spawn([b"/bin/sh", "-c", b"exit 7"]) as child:
            assert await child.wait() == 7
