"""A parent with fd 0, 1 or 2 closed still gives its children exactly the stdio asked for.

A daemon, or a program run as ``prog <&-``, has free slots among 0-2: the pipes, terminals
and files made for a spawn land there, where "source equals target" is not "nothing to do"
(the fd is close-on-exec) and an early dup2 can overwrite a later one's source. Each case
runs in a harness, a fresh interpreter started with the fds closed, on every backend and
through both launch paths; the child (a probe) reports what it found at 0, 1 and 2, reads
its stdin and writes to its stdout and stderr, and the harness reports what it received
and its own fd table before and after.

Also here: a ``setpgid`` refused in the child (``EPERM``) is reported as being about the
process group, with the program named.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from anyio_proc import Command, spawn

from ..helpers import PY

BACKENDS = ["asyncio", "uvloop", "trio"]
# popen: umask() is one of the options only Popen applies.
PATHS = ["posix_spawn", "popen"]

# The child: describes its fds 0-2 (None when closed), reads stdin to its end unless it is a
# terminal, writes its report, then "out:NAME" to stdout and "err:NAME" to stderr.
PROBE = r"""
import fcntl, json, os, sys
def describe(fd):
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None
    mode = ("r", "w", "rw")[flags & os.O_ACCMODE]
    link = os.readlink(f"/proc/self/fd/{fd}")
    return {"link": link, "mode": mode, "tty": os.isatty(fd), "rdev": os.fstat(fd).st_rdev}
fds = {fd: describe(fd) for fd in range(3)}
stdin = None
if fds[0] is not None and not fds[0]["tty"]:
    chunks = []
    try:
        while chunk := os.read(0, 65536):
            chunks.append(chunk)
        stdin = b"".join(chunks).decode()
    except OSError as exc:
        stdin = f"error: {exc.strerror}"
with open("/proc/self/stat", "rb") as f:
    stat = f.read()
ctty = int(stat[stat.rfind(b")") + 2 :].split()[4])  # tty_nr: the controlling terminal
report = {"fds": fds, "stdin": stdin, "ctty": ctty, "leader": os.getsid(0) == os.getpid()}
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
name = sys.argv[1].rsplit(".", 1)[1]
for fd, what in ((1, "out"), (2, "err")):
    try:
        os.write(fd, f"{what}:{name}\n".encode())
    except OSError:
        pass
"""

# The parent: argv is backend, launch path, the fds to free, whether they were closed
# only now (so sys.stdout and friends still exist), the set-up code, the report path.
# The set-up code makes `cmd` (and may set `data`, the bytes for the child's stdin, and
# register fds it opened with own()); probe(name) is the probe command on that path. With
# `first` set too, that command is spawned before, and `then(first_child)` gives `cmd`.
HARNESS = r"""
import contextlib, json, os, sys, traceback
backend, path, free, late, setup, report = sys.argv[1:]
free = [int(fd) for fd in free]
if late == "1":
    for fd in free:
        os.close(fd)
# Hold the free slots while the event loop starts (its epoll and wake-up fds would take
# them), so they are free again when the spawn runs.
held = [os.open(os.devnull, os.O_RDONLY) for _ in free]
assert sorted(held) == free, (held, free)

spawns = []
real_posix_spawn = os.posix_spawn
def spying_posix_spawn(path, *args, **kwargs):
    if path == sys.executable:  # a probe, not a library's helper (ldconfig on 3.13)
        spawns.append(1)
    return real_posix_spawn(path, *args, **kwargs)
os.posix_spawn = spying_posix_spawn

import anyio
from anyio_proc import Command, Pipeline, Stdio, spawn

def fd_table():
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # listdir's own fd
    return table

def probe(name):
    cmd = Command(sys.executable, "-c", PROBE, f"{report}.{name}")
    return cmd.umask(0o022) if path == "popen" else cmd

owned = []
def own(thing):
    owned.append(thing)
    return thing

async def drain(stream, key, result):
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive())
        except anyio.EndOfStream:
            break
    result[key] = b"".join(chunks).decode()

async def feed(stream, data):
    if data:
        await stream.send(data)
    await stream.aclose()

async def main(result):
    for fd in held:
        os.close(fd)
    result["before"] = fd_table()
    names = {"probe": probe, "own": own, "owned": owned, "Command": Command, "Pipeline": Pipeline,
             "Stdio": Stdio, "os": os, "data": b""}
    exec(setup, names)
    try:
        with anyio.fail_after(30):
            async with contextlib.AsyncExitStack() as stack:
                if "first" in names:
                    first = await stack.enter_async_context(spawn(names["first"]))
                    names["cmd"] = names["then"](first)
                async with spawn(names["cmd"]) as child:
                    async with anyio.create_task_group() as tg:
                        if child.stdin is not None:
                            tg.start_soon(feed, child.stdin, names["data"])
                        for key in ("stdout", "stderr", "pty"):
                            stream = getattr(child, key, None)
                            if stream is not None:
                                tg.start_soon(drain, stream, key, result)
                    result["status"] = str(await child.wait())
    except Exception as exc:
        while len(getattr(exc, "exceptions", ())) == 1:  # one error in a task group
            exc = exc.exceptions[0]
        result["raised"] = [type(exc).__name__, str(exc), getattr(exc, "errno", None)]
    finally:
        for thing in owned:
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
    result["after"] = fd_table()

result = {"posix_spawns": 0}
try:
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, result, backend="trio" if backend == "trio" else "asyncio",
              backend_options=options)
except BaseException:
    result["crashed"] = traceback.format_exc()
result["posix_spawns"] = len(spawns)
with open(report, "w") as f:
    json.dump(result, f)
""".replace("PROBE", repr(PROBE))


def run_harness(
    tmp_path: Path, backend: str, path: str, free: str, setup: str, *, late: bool = False
) -> dict[str, Any]:
    """Run ``setup`` in a harness whose fds ``free`` (say "02") are closed, from its start
    unless ``late``; give its report, with each probe's under ``children``."""
    report = tmp_path / "report"
    # The harness's own stdio, where it is open: files we can read back.
    closing = "" if late else " ".join(f"{fd}>&-" for fd in free)
    (tmp_path / "in").write_bytes(b"harness stdin\n")
    with (
        open(tmp_path / "in", "rb") as stdin,
        open(tmp_path / "out", "wb") as stdout,
        open(tmp_path / "err", "wb") as stderr,
    ):
        argv = [PY, "-c", HARNESS, backend, path, free, "1" if late else "0", setup, str(report)]
        subprocess.run(
            ["sh", "-c", f'exec "$@" {closing}', "sh", *argv],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            timeout=50,
            check=False,
        )
    assert report.exists(), (tmp_path / "err").read_text()
    result: dict[str, Any] = json.loads(report.read_text())
    assert "crashed" not in result, result["crashed"]
    children = {}
    for probe_report in tmp_path.glob("report.*"):
        children[probe_report.suffix[1:]] = json.loads(probe_report.read_text())
    result["children"] = children
    result["harness_out"] = (tmp_path / "out").read_text()
    result["harness_err"] = (tmp_path / "err").read_text()
    # The parent keeps its fds as they were: the closed ones closed, nothing leaked.
    assert result["after"] == result["before"]
    for number in free:
        assert number not in result["before"]
    if "raised" not in result:
        if path == "popen":
            assert result["posix_spawns"] == 0
        else:
            assert result["posix_spawns"] > 0, "the fast path was not taken"
    return result


def ran(result: dict[str, Any]) -> dict[str, Any]:
    """The probes' reports, once the harness ran its command without error."""
    assert "raised" not in result, result["raised"]
    assert result["status"] == "exit status: 0", result
    children: dict[str, Any] = result["children"]
    return children


def fd(child: dict[str, Any], number: int) -> dict[str, Any] | None:
    described: dict[str, Any] | None = child["fds"][str(number)]
    return described


def is_pipe(child: dict[str, Any], number: int, mode: str) -> bool:
    described = fd(child, number)
    if described is None:
        return False
    link: str = described["link"]
    return link.startswith("pipe:") and described["mode"] == mode


PARAMS = [
    pytest.param(backend, path, id=f"{path}-{backend}") for path in PATHS for backend in BACKENDS
]


# -- one command ------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "path"), PARAMS)
@pytest.mark.parametrize("free", ["0", "1", "2", "012"])
def test_piped_stdio_with_free_std_fds(free: str, backend: str, path: str, tmp_path: Path) -> None:
    # The pipe made for a stream lands on the free slot: for stdin with fd 0 free, the
    # child's end is fd 0 already.
    setup = "cmd = probe('c').stdin_piped().stdout_piped().stderr_piped()\ndata = b'hello'"
    result = run_harness(tmp_path, backend, path, free, setup)
    child = ran(result)["c"]
    assert child["stdin"] == "hello"
    assert is_pipe(child, 0, "r")
    assert is_pipe(child, 1, "w")
    assert is_pipe(child, 2, "w")
    assert result["stdout"] == "out:c\n"
    assert result["stderr"] == "err:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
@pytest.mark.parametrize("free", ["0", "1", "2", "012"])
def test_inherited_closed_fds_stay_closed(
    free: str, backend: str, path: str, tmp_path: Path
) -> None:
    # Whatever we open meanwhile (here the pipe for the one piped stream, which may land on
    # a free slot) must not reach the child at a slot it inherits closed.
    piped = {"0": "stdout", "1": "stdin", "2": "stdout", "012": "stdout"}[free]
    setup = f"cmd = probe('c').{piped}_piped()\ndata = b'hello'"
    result = run_harness(tmp_path, backend, path, free, setup)
    child = ran(result)["c"]
    for number in map(int, free):
        if number != (1 if piped == "stdout" else 0):
            assert fd(child, number) is None
    if piped == "stdout":
        assert result["stdout"] == "out:c\n"
    else:
        assert child["stdin"] == "hello"
    if "2" not in free:
        assert result["harness_err"] == "err:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
@pytest.mark.parametrize("late", [False, True], ids=["closed-at-start", "closed-later"])
@pytest.mark.parametrize("stdin", ["inherited", "piped"])
def test_stderr_to_a_closed_stdout(
    stdin: str, late: bool, backend: str, path: str, tmp_path: Path
) -> None:
    # stderr=STDOUT with stdout inherited and fd 1 closed: stderr goes where stdout goes,
    # nowhere. Not the harness's stderr, not an error, and not the stdin pipe that landed
    # on fd 1 (a dup2(1, 2) in the child would give it).
    setup = "cmd = probe('c').stderr(Stdio.STDOUT)"
    if stdin == "piped":
        setup += ".stdin_piped()\ndata = b'hello'"
    result = run_harness(tmp_path, backend, path, "1", setup, late=late)
    child = ran(result)["c"]
    assert fd(child, 1) is None
    assert fd(child, 2) is None
    assert result["harness_err"] == ""
    if stdin == "piped":
        assert is_pipe(child, 0, "r")
        assert child["stdin"] == "hello"
    else:
        assert child["stdin"] == "harness stdin\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_stderr_to_stdout_piped_with_fd_1_free(backend: str, path: str, tmp_path: Path) -> None:
    # fd 0 and 1 free: stdout's pipe is (0, 1), the child's end at its target already,
    # close-on-exec, and the source of stderr's dup2 too.
    setup = "cmd = probe('c').stdout_piped().stderr(Stdio.STDOUT)"
    result = run_harness(tmp_path, backend, path, "01", setup)
    child = ran(result)["c"]
    assert is_pipe(child, 1, "w")
    assert fd(child, 2) == fd(child, 1)
    assert result["stdout"] == "out:c\nerr:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_file_on_fd_0_given_as_stdin(backend: str, path: str, tmp_path: Path) -> None:
    # fd 0 and 1 free: the user's file (not inheritable, as Python opens them) lands on 0.
    (tmp_path / "data").write_text("from the file")
    setup = (
        f"own(os.open({str(tmp_path / 'data')!r}, os.O_RDONLY))\n"
        "assert owned == [0]\ncmd = probe('c').stdin(0).stdout_piped()"
    )
    result = run_harness(tmp_path, backend, path, "01", setup)
    child = ran(result)["c"]
    assert child["stdin"] == "from the file"
    assert result["stdout"] == "out:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_file_object_on_fd_0_given_as_stdout(backend: str, path: str, tmp_path: Path) -> None:
    # fd 0 and 2 free: the user's file object lands on 0 and is the child's stdout; the
    # child's stdin, inherited, stays closed (the file must not leak there).
    target = tmp_path / "written"
    setup = (
        f"f = own(open({str(target)!r}, 'wb'))\nassert f.fileno() == 0\n"
        "cmd = probe('c').stdout(f).stderr(Stdio.STDOUT)"
    )
    result = run_harness(tmp_path, backend, path, "02", setup)
    child = ran(result)["c"]
    assert fd(child, 0) is None
    assert fd(child, 1) is not None
    assert fd(child, 1)["link"] == str(target)  # type: ignore[index]
    assert target.read_text() == "out:c\nerr:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_swapped_std_fds(backend: str, path: str, tmp_path: Path) -> None:
    # All three free; the user's files land on them with stdin and stdout swapped and
    # stderr in place (not inheritable): no dup2 may clobber the source of a later one.
    (tmp_path / "data").write_text("swapped in")
    setup = (
        f"own(os.open({str(tmp_path / 'o')!r}, os.O_WRONLY | os.O_CREAT))\n"
        f"own(os.open({str(tmp_path / 'data')!r}, os.O_RDONLY))\n"
        f"own(os.open({str(tmp_path / 'e')!r}, os.O_WRONLY | os.O_CREAT))\n"
        "assert owned == [0, 1, 2]\n"
        "cmd = probe('c').stdin(1).stdout(0).stderr(2)"
    )
    result = run_harness(tmp_path, backend, path, "012", setup)
    child = ran(result)["c"]
    assert child["stdin"] == "swapped in"
    assert (tmp_path / "o").read_text() == "out:c\n"
    assert (tmp_path / "e").read_text() == "err:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_stream_on_fd_0_handed_to_another_child(backend: str, path: str, tmp_path: Path) -> None:
    # The read end of the first child's stdout pipe lands on fd 0 in the parent; handed on
    # as the second child's stdin, it is at its target already, close-on-exec.
    setup = (
        "first = probe('a').stdout_piped()\n"
        "then = lambda a: probe('b').stdin(a.stdout).stdout_piped()"
    )
    result = run_harness(tmp_path, backend, path, "0", setup)
    children = ran(result)
    assert fd(children["a"], 0) is None
    assert children["b"]["stdin"] == "out:a\n"
    assert result["stdout"] == "out:b\n"


# -- pass_fds ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_pass_fds_entry_on_a_free_std_slot(backend: str, tmp_path: Path) -> None:
    # A passed fd keeps its number, here 0 (where the user's file landed); with stderr
    # sent to stdout and fd 1 passed the same way. pass_fds always takes Popen.
    (tmp_path / "data").write_text("passed")
    written = tmp_path / "written"
    setup = (
        f"own(os.open({str(tmp_path / 'data')!r}, os.O_RDONLY))\n"
        f"own(os.open({str(written)!r}, os.O_WRONLY | os.O_CREAT))\n"
        "assert owned == [0, 1]\n"
        "cmd = probe('c').pass_fds([0, 1]).stderr(Stdio.STDOUT)"
    )
    result = run_harness(tmp_path, backend, "popen", "012", setup)
    child = ran(result)["c"]
    assert child["stdin"] == "passed"
    assert written.read_text() == "out:c\nerr:c\n"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stream", ["stdin", "stderr"])
def test_pass_fds_entry_that_is_also_a_stdio_target(
    stream: str, backend: str, tmp_path: Path
) -> None:
    # fd 0 (or 2) cannot be both the passed fd and the piped stream: refused, nothing run.
    number = {"stdin": 0, "stderr": 2}[stream]
    setup = (
        f"own(os.open(os.devnull, os.O_RDONLY))\nassert owned == [{number}]\n"
        f"cmd = probe('c').pass_fds([{number}]).{stream}_piped()"
    )
    result = run_harness(tmp_path, backend, "popen", str(number), setup)
    kind, message, _ = result["raised"]
    assert kind == "ValueError"
    assert "pass_fds" in message
    assert stream in message
    assert result["children"] == {}


# -- pipelines --------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "path"), PARAMS)
@pytest.mark.parametrize("free", ["0", "1", "012"])
def test_pipeline_with_free_std_fds(free: str, backend: str, path: str, tmp_path: Path) -> None:
    # The pipes between the stages, made before any stage starts, take the free slots: a
    # stage's stdin can be fd 0 already.
    setup = "cmd = (probe('a') | probe('b') | probe('c')).stdin_piped().stdout_piped()"
    setup += "\ndata = b'hello'"
    result = run_harness(tmp_path, backend, path, free, setup)
    children = ran(result)
    assert children["a"]["stdin"] == "hello"
    assert children["b"]["stdin"] == "out:a\n"
    assert children["c"]["stdin"] == "out:b\n"
    assert result["stdout"] == "out:c\n"
    if "2" in free:
        assert all(fd(child, 2) is None for child in children.values())
    else:
        assert sorted(result["harness_err"].splitlines()) == ["err:a", "err:b", "err:c"]


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_pipeline_inheriting_closed_fds(backend: str, path: str, tmp_path: Path) -> None:
    # stdin and stdout inherited, closed: the first stage has no stdin, the last no stdout,
    # whatever pipe landed on 0 or 1; 2>&1 sends each stage's stderr down its pipe.
    setup = "cmd = (probe('a') | probe('b')).stderr(Stdio.STDOUT)"
    result = run_harness(tmp_path, backend, path, "01", setup)
    children = ran(result)
    assert fd(children["a"], 0) is None
    assert is_pipe(children["a"], 1, "w")
    assert fd(children["a"], 2) == fd(children["a"], 1)
    assert children["b"]["stdin"] == "out:a\nerr:a\n"
    assert fd(children["b"], 1) is None
    assert fd(children["b"], 2) is None
    assert result["harness_err"] == ""


# -- pseudo-terminals -------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "path"), PARAMS)
@pytest.mark.parametrize("free", ["0", "01", "012"])
def test_pty_with_free_std_fds(free: str, backend: str, path: str, tmp_path: Path) -> None:
    # The terminal's two sides land on the free slots (the master on 0, the slave on 1).
    setup = "cmd = probe('c').pty()"
    result = run_harness(tmp_path, backend, path, free, setup)
    child = ran(result)["c"]
    terminal = fd(child, 0)
    assert terminal is not None
    assert terminal["tty"]
    assert terminal["mode"] == "rw"
    assert fd(child, 1) == terminal
    assert fd(child, 2) == terminal
    assert child["ctty"] == terminal["rdev"] != 0
    assert child["leader"]
    assert result["pty"].replace("\r\n", "\n") == "out:c\nerr:c\n"


@pytest.mark.parametrize(("backend", "path"), PARAMS)
def test_pty_stdout_with_stdin_piped_on_fd_0(backend: str, path: str, tmp_path: Path) -> None:
    # stdin's pipe takes fd 0 (already at its target), the terminal is stdout only.
    setup = "cmd = probe('c').stdin_piped().stdout(Stdio.PTY)\ndata = b'hello'"
    result = run_harness(tmp_path, backend, path, "0", setup)
    child = ran(result)["c"]
    assert is_pipe(child, 0, "r")
    assert child["stdin"] == "hello"
    terminal = fd(child, 1)
    assert terminal is not None
    assert terminal["tty"]
    assert child["ctty"] == terminal["rdev"] != 0
    assert result["pty"].replace("\r\n", "\n") == "out:c\n"
    assert result["harness_err"] == "err:c\n"


# -- a process group the child cannot join ---------------------------------------------


def through(cmd: Command, path: str, tmp_path: Path) -> Command:
    if path == "posix_spawn":
        return cmd
    # Popen: with a working directory too, where CPython 3.10/3.11 blame any error from
    # before exec on the directory.
    return cmd.umask(0o022) if path == "popen" else cmd.current_dir(tmp_path)


GROUP_PATHS = ["posix_spawn", "popen", "popen-cwd"]


def no_such_group() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())  # pids stay below it


@pytest.mark.parametrize("path", GROUP_PATHS)
@pytest.mark.parametrize("where", ["missing", "other-session"])
async def test_process_group_that_cannot_be_joined(where: str, path: str, tmp_path: Path) -> None:
    async with spawn(Command("sleep", "60").new_session()) as elsewhere:
        pgid = no_such_group() if where == "missing" else elsewhere.pid
        cmd = through(Command("true").process_group(pgid), path, tmp_path)
        with pytest.raises(PermissionError) as caught:
            await spawn(cmd)
        elsewhere.kill()
    assert caught.value.errno == errno.EPERM
    assert caught.value.filename == "true"
    assert f"process group {pgid}" in str(caught.value)
    assert "working directory" not in str(caught.value)
    assert "session" in str(caught.value)


@pytest.mark.parametrize("path", GROUP_PATHS)
async def test_new_session_cannot_join_a_group(path: str, tmp_path: Path) -> None:
    # A session leader cannot move to another group: setsid() then setpgid() fails.
    cmd = through(Command("true").new_session().process_group(os.getpgrp()), path, tmp_path)
    with pytest.raises(PermissionError) as caught:
        await spawn(cmd)
    assert caught.value.filename == "true"
    assert f"process group {os.getpgrp()}" in str(caught.value)
    assert "new_session" in str(caught.value)


@pytest.mark.parametrize("path", GROUP_PATHS)
async def test_new_session_with_a_group_of_its_own(path: str, tmp_path: Path) -> None:
    # process_group(0) asks for what new_session() gives anyway: a group the child leads.
    ids = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    cmd = through(Command(PY, "-c", ids).new_session().process_group(0), path, tmp_path)
    out = await cmd.output()
    pid, pgid, sid = map(int, out.stdout.split())
    assert pid == pgid == sid
