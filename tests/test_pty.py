"""Pseudo-terminals (issue 7): ``Command.pty()``/``Stdio.PTY``, ``Child.pty``, ``resize``,
``expect``, hang-up and end-of-file as a terminal gives them.

Every async test runs on asyncio, uvloop and trio under each exit waiter; the autouse
``no_leaks`` fixture fails a test that leaves a process, an fd or a waiter thread behind.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from anyio_proc import Child, Command, PtyStream, Stdio, spawn
from anyio_proc._os.census import census_after
from anyio_proc._os.session import Session

from .helpers import children, open_fds, poll_until, proc_state, py

# Generous: a loaded 2-core machine can take seconds to start an interpreter.
T = 20.0

# Reports what a program on a terminal can find out about it, on one line.
REPORT = (
    "import os\n"
    "fds = [os.isatty(fd) for fd in (0, 1, 2)]\n"
    "names = {os.ttyname(fd) for fd in (0, 1, 2)}\n"
    "leader = os.getsid(0) == os.getpid()\n"
    "foreground = os.tcgetpgrp(0) == os.getpgrp()\n"
    "os.close(os.open('/dev/tty', os.O_RDWR))  # only works with a controlling terminal\n"
    "size = os.get_terminal_size(0)\n"
    "print('report', fds, len(names), leader, foreground, size.lines, size.columns)\n"
)


def repl() -> Command:
    """The interactive interpreter, plain: no startup file, no fancy line editor."""
    return (
        Command(sys.executable, "-q", "-i")
        .env("TERM", "dumb")
        .env("PYTHON_BASIC_REPL", "1")
        .env_remove("PYTHONSTARTUP")
        .pty()
    )


async def read_to_end(stream: PtyStream) -> bytes:
    chunks = []
    with anyio.fail_after(T):
        while True:
            try:
                chunks.append(await stream.receive())
            except anyio.EndOfStream:
                return b"".join(chunks)


async def test_the_child_gets_a_controlling_terminal(tmp_path: object) -> None:
    hooked: list[str] = []

    def hook() -> None:
        os.write(1, b"hook ran on the terminal\n")

    variants = {
        "posix_spawn": Command(*py(REPORT)).pty(),
        # Options posix_spawn cannot do go through Popen (setsid + TIOCSCTTY hook).
        "popen": Command(*py(REPORT)).pty().current_dir(os.fspath(tmp_path)),  # type: ignore[call-overload]
        "popen+pre_exec": Command(*py(REPORT)).pty().pre_exec(hook),
    }
    for name, cmd in variants.items():
        async with spawn(cmd) as child:
            assert isinstance(child.pty, PtyStream)
            assert isinstance(child.pty, anyio.abc.ByteStream)
            assert child.stdin is None
            assert child.stdout is None
            assert child.stderr is None
            if name == "popen+pre_exec":
                await child.expect("hook ran on the terminal\r\n", timeout=T)
                hooked.append(name)
            match = await child.expect(r"report (.*)\r\n", timeout=T)
            assert match.group(1) == "[True, True, True] 1 True True 24 80", name
            assert await child.wait() == 0
    assert hooked == ["popen+pre_exec"]


async def test_stty_size_follows_resize() -> None:
    cmd = Command("sh", "-c", "stty size; read line; stty size").pty(rows=30, cols=100)
    async with spawn(cmd) as child:
        assert child.pty is not None
        assert child.pty.size == (30, 100)
        match = await child.expect(rb"(\d+) (\d+)\r\n", timeout=T)
        assert match.groups() == (b"30", b"100")
        child.resize(40, 120)
        assert child.pty.size == (40, 120)
        await child.pty.send(b"\n")
        match = await child.expect(rb"(\d+) (\d+)\r\n", timeout=T)
        assert match.groups() == (b"40", b"120")
        assert await child.wait() == 0


async def test_resize_sends_sigwinch() -> None:
    code = (
        "import os, signal, sys\n"
        "def changed(signum, frame):\n"
        "    size = os.get_terminal_size(0)\n"
        "    print('resized', size.lines, size.columns, flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGWINCH, changed)\n"
        "print('ready', flush=True)\n"
        "signal.pause()\n"
    )
    async with spawn(Command(*py(code)).pty()) as child:
        await child.expect("ready", timeout=T)
        child.resize(50, 132)
        await child.expect(r"resized 50 132\r\n", timeout=T)
        assert await child.wait() == 0


async def test_driving_the_python_repl() -> None:
    async with spawn(repl()) as child:
        await child.expect(">>> ", timeout=T)
        assert child.pty is not None
        await child.pty.send(b"print(6 * 7)\n")
        # The terminal echoes the line; the answer follows on its own line.
        match = await child.expect(r"(\d+)\r\n>>> ", timeout=T)
        assert match.group(1) == "42"
        assert "print(6 * 7)" in match.string[: match.start()]

        # Ctrl-C interrupts what runs in the foreground, and the REPL carries on. Short
        # sleeps, not one long one: CPython acts on a signal between bytecodes, so a SIGINT
        # landing after its last check and before sleep(100) enters the kernel would be
        # noted and then ignored for 100 s (seen under load: the REPL asleep in
        # clock_nanosleep, SIGINT caught, nothing pending). A loop acts on it wherever it lands.
        await child.pty.send(
            b"import time; print('sleep' + 'ing'); exec('while True: time.sleep(0.01)')\n"
        )
        await child.expect("sleeping\r\n", timeout=T)
        await child.pty.send(b"\x03")
        await child.expect("KeyboardInterrupt", timeout=T)
        await child.expect(">>> ", timeout=T)
        await child.pty.send(b"print('still', 'here')\n")
        await child.expect("still here\r\n>>> ", timeout=T)

        await child.pty.send_eof()  # Ctrl-D at an empty prompt leaves the REPL
        with anyio.fail_after(T):
            assert await child.wait() == 0


async def test_ctrl_c_and_hang_up_signal_the_program() -> None:
    async with spawn(Command("cat").pty()) as child:
        assert child.pty is not None
        await child.pty.send(b"echo me\n")
        await child.expect("echo me\r\necho me\r\n", timeout=T)  # the echo, then cat
        await child.pty.send(b"\x03")
        with anyio.fail_after(T):
            status = await child.wait()
        assert status.signal == signal.SIGINT

    async with spawn(Command("cat").pty()) as child:
        assert child.pty is not None
        await child.pty.send(b"x\n")
        await child.expect("x\r\nx\r\n", timeout=T)  # cat runs, on its terminal
        await child.pty.aclose()  # the terminal goes away
        with anyio.fail_after(T):
            status = await child.wait()
        assert status.signal == signal.SIGHUP
        with pytest.raises(anyio.ClosedResourceError):
            await child.pty.receive()


async def test_reading_after_exit_ends_cleanly() -> None:
    code = "import sys; sys.stdout.write('x' * 100000 + '\\nbye\\n')"
    async with spawn(Command(*py(code)).pty()) as child:
        assert child.pty is not None
        with anyio.fail_after(T):
            output = await read_to_end(child.pty)
            assert await child.wait() == 0
        assert output == b"x" * 100000 + b"\r\nbye\r\n"  # nothing lost at the hang-up
        with pytest.raises(anyio.EndOfStream):
            await child.pty.receive()
        with pytest.raises(anyio.EndOfStream, match="'never' matched"):
            await child.expect("never", timeout=T)


async def test_send_eof_ends_a_line_reader() -> None:
    async with spawn(Command("wc", "-c").pty()) as child:
        assert child.pty is not None
        await child.pty.send(b"abc\n")
        await child.pty.send_eof()
        match = await child.expect(r"(\d+)\r\n", timeout=T)
        assert match.group(1) == "4"
        with anyio.fail_after(T):
            assert await child.wait() == 0


async def test_expect_keeps_unmatched_output() -> None:
    code = (
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "os.write(1, b'one two three\\n')\n"
        # an undecodable byte, then a character split across two writes
        "os.write(1, b'\\xffA\\xc3')\n"
        "signal.sigwait({signal.SIGUSR1})\n"
        "os.write(1, b'\\xa9!\\nlast line\\n')\n"
    )
    async with spawn(Command(*py(code)).pty()) as child:
        assert child.pty is not None
        bytes_match = await child.expect(b"one ", timeout=T)
        assert isinstance(bytes_match.group(0), bytes)
        str_match = await child.expect(re.compile("t(w)o"), timeout=T)
        assert str_match.group(1) == "w"
        with anyio.CancelScope() as scope:
            scope.cancel()
            await child.pty.receive()  # cancelled: must not take anything from the buffer
        assert scope.cancelled_caught
        for bad in (0, -1):  # refused before the buffer is touched, as anyio's streams do
            with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
                await child.pty.receive(bad)
        assert await child.pty.receive(3) == b" th"  # receive() gets the rest, in order
        before = await child.expect("A", timeout=T)
        assert before.string[: before.start()] == "ree\r\n\udcff"

        with pytest.raises(TimeoutError, match="did not match"):
            await child.expect("é!", timeout=0.05)  # the rest of é is not written yet
        child.send_signal(signal.SIGUSR1)
        accent = await child.expect("é!", timeout=T)  # the buffered \xc3 was kept
        assert accent.string[: accent.start()] == ""
        assert await child.expect(rb"last line\r\n", timeout=T)
        assert await child.wait() == 0


# Writes FLOOD bytes of "x" at once, then a mark, then waits for a line on stdin.
FLOOD = 4 << 20
FLOODER = (
    "import os, sys\n"
    f"block = b'x' * 65536\n"
    f"for _ in range({FLOOD} // 65536):\n"
    "    os.write(1, block)\n"
    "os.write(1, b'MARK')\n"
    "sys.stdin.readline()\n"
)


async def test_expect_times_out_while_output_floods_in() -> None:
    # `yes` writes faster than we read, so a read never has to wait: the timeout must
    # still fire (it used to be checked only when a read waited: never, here). The
    # message tells expect()'s TimeoutError from fail_after's.
    async with spawn(Command("yes").pty()) as child:
        with anyio.fail_after(T), pytest.raises(TimeoutError, match="did not match within"):
            await child.expect(b"never printed", timeout=0.5)


@pytest.mark.parametrize("pattern", [b"MARK", "MARK", re.compile(rb"M(A)RK")])
async def test_expect_finds_a_match_after_megabytes(pattern: Any) -> None:
    async with spawn(Command(*py(FLOODER)).pty()) as child:
        assert child.pty is not None
        match = await child.expect(pattern, timeout=T)
        assert match.start() == FLOOD  # everything before it was kept, in order
        assert set(match.string[: match.start()]) == set(match.string[:1])
        await child.pty.send(b"\n")
        with anyio.fail_after(T):
            assert await child.wait() == 0


async def test_expect_cancelled_mid_flood_loses_nothing() -> None:
    async with spawn(Command(*py(FLOODER)).pty()) as child:
        assert child.pty is not None
        received = len(await child.pty.receive(1000))
        # Cancelled wherever it is when the deadline passes (most likely between two
        # reads of the flood); the next expect resumes on what was buffered.
        with anyio.move_on_after(0.05):
            await child.expect(b"never printed")
        match = await child.expect(b"MARK", timeout=T)
        assert received + match.start() == FLOOD
        await child.pty.send(b"\n")
        with anyio.fail_after(T):
            assert await child.wait() == 0


async def test_single_streams_on_a_terminal() -> None:
    code = "import os, sys; print([os.isatty(fd) for fd in (0, 1, 2)], sys.stdin.readline())"
    cmd = Command(*py(code)).stdin_piped().stdout(Stdio.PTY).stderr_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stderr is not None
        assert child.pty is not None
        assert child.pty.size == (24, 80)  # the default size
        await child.stdin.send(b"through the pipe\n")
        match = await child.expect(r"(\[.*\]) (.*)\r\n", timeout=T)
        assert match.groups() == ("[False, True, False]", "through the pipe")
        with anyio.fail_after(T):
            assert await child.wait() == 0
            assert await child.stderr.read_all() == b""


async def test_cancellation_shuts_the_program_down() -> None:
    with anyio.CancelScope() as scope:
        async with spawn(Command("cat").pty()) as child:
            assert child.pty is not None
            await child.pty.send(b"ready\n")
            await child.expect("ready\r\nready\r\n", timeout=T)
            scope.cancel()
            await child.expect("never")
        pytest.fail("the cancellation did not propagate")  # pragma: no cover
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGTERM
    assert child.pty is not None
    assert child.pty.closed


async def test_bad_input_raises_before_any_process() -> None:
    with pytest.raises(ValueError):
        Command("cat").pty(rows=0)
    with pytest.raises(ValueError):
        Command("cat").pty(cols=70000)
    with pytest.raises(TypeError):
        Command("cat").pty(rows="24")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Command("cat").pty(cols=True)

    kids = children()
    fds = open_fds()
    with pytest.raises(ValueError, match="process_group"):
        await spawn(Command("cat").pty().process_group(0))
    with pytest.raises(FileNotFoundError, match="anyio-proc-no-such-program"):
        await spawn(Command("anyio-proc-no-such-program").pty())
    assert children() == kids
    assert open_fds() == fds

    async with spawn(Command("cat").pty()) as child:
        with pytest.raises(ValueError):
            child.resize(0, 10)
        with pytest.raises(TypeError):
            await child.expect(42)  # type: ignore[type-var]
        with pytest.raises(ValueError):
            await child.expect("x", timeout=-1)
        with pytest.raises(LookupError):
            await child.expect("x", encoding="no-such-encoding")
    async with spawn(Command("true")) as plain:
        assert plain.pty is None
        with pytest.raises(RuntimeError, match="pseudo-terminal"):
            plain.resize(24, 80)
        with pytest.raises(RuntimeError, match="pseudo-terminal"):
            await plain.expect("x")


async def test_concurrent_readers_are_refused() -> None:
    async with spawn(Command("cat").pty()) as child:
        assert isinstance(child, Child)
        assert child.pty is not None
        pty = child.pty
        async with anyio.create_task_group() as tg:
            started = anyio.Event()

            async def reader() -> None:
                started.set()
                await pty.expect("never")

            tg.start_soon(reader)
            await started.wait()
            with pytest.raises(anyio.BusyResourceError):
                await pty.receive()
            tg.cancel_scope.cancel()


# -- the exit policy covers the child's session ------------------------------------------

# A job: a process of the child's session in a process group of its own, as a shell with
# job control makes one; out of reach of a signal to the child's group. argv: the file to
# record the shutdown signal in, and "term" (act on SIGTERM) or "ignore" (ignore it).
# SIGHUP is ignored as under nohup: the kernel sends it (and SIGCONT) to a stopped group
# orphaned by the leader's exit, and the test is about what the exit policy sends.
JOB = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "if sys.argv[2] == 'ignore':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "else:\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "print('job ready', os.getpid(), flush=True)\n"
    "if sys.argv[2] == 'ignore':\n"
    "    signal.pause()\n"
    "signal.sigwait({signal.SIGTERM})\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write('SIGTERM')\n"
)
# The child on the terminal: starts JOB (argv: its code, file, mode), then per ``then``:
# "exits" at once; "dies" of the shutdown signal; "waits", on the shutdown signal, for the
# job to end first, so that it outlives the grace period unless the job acts on its own
# shutdown signal.
LEADER = (
    "import os, signal, sys\n"
    "code, record, mode, then = sys.argv[1:]\n"
    "if then == 'waits':\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "job = os.posix_spawn(sys.executable, [sys.executable, '-c', code, record, mode],\n"
    "                     os.environ, setpgroup=0, setsigmask=())\n"
    "if then == 'exits':\n"
    "    sys.exit(0)\n"
    "if then == 'waits':\n"
    "    signal.sigwait({signal.SIGTERM})\n"
    "    os.waitpid(job, 0)\n"
    "else:\n"
    "    signal.pause()\n"
)


class SessionMember:
    """A process of our child's session that is not our child, held by a pidfd: the checks
    and the clean-up after a failure cannot reach a stranger that reused its pid."""

    def __init__(self, pid: int, sid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        self.pgid = int(fields[2])
        assert int(fields[3]) == sid, "not in the child's session"

    def alive(self) -> bool:
        # A pidfd is readable once its process has exited, whoever its parent is.
        return not select.select([self.fd], [], [], 0)[0]

    def send(self, sig: int) -> None:
        signal.pidfd_send_signal(self.fd, sig)

    def release(self) -> None:
        if self.alive():
            self.send(signal.SIGKILL)  # the test failed: leave nothing behind
        os.close(self.fd)


async def job_started(child: Child, held: list[SessionMember]) -> SessionMember:
    match = await child.expect(rb"job ready (\d+)\r\n", timeout=T)
    job = SessionMember(int(match.group(1)), child.pid)
    held.append(job)
    assert job.pgid not in (child.pid, 0)  # a group of its own: killpg misses it
    return job


@pytest.mark.parametrize("shared", [False, True], ids=["now", "shared_census"])
@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
async def test_session_signals_the_members_outside_the_leaders_group(
    tmp_path: Path, stopped: bool, shared: bool
) -> None:
    # The piece the exit policy uses, on its own: signal() lists /proc there and then (a
    # user's kill()), signal_shared() waits for a census shared with the other sessions
    # and groups being stopped (the exit policy).
    record = tmp_path / "job"
    cmd = Command(*py(LEADER), JOB, str(record), "term", "waits").pty()
    held: list[SessionMember] = []
    try:
        async with spawn(cmd) as child:
            job = await job_started(child, held)
            if stopped:
                job.send(signal.SIGSTOP)
                await poll_until(lambda: proc_state(job.pid) == "T")
            session = Session(child.pid)
            before = time.monotonic()
            assert session.alive_seen(before)  # no census since: members may be there
            await census_after(before)
            assert session.alive_seen(before)  # and the census found the job
            if shared:
                await session.signal_shared(signal.SIGTERM, lambda: True)
            else:
                session.signal(signal.SIGTERM)
            before = time.monotonic()
            with anyio.fail_after(T):
                await session.wait_gone()  # the job acted on it (continued first if stopped)
            assert record.read_text() == "SIGTERM"
            assert not job.alive()
            assert session.alive_seen(before) is False
            # The leader, in the leader's group, was left to the caller's killpg: it still
            # waits for its own SIGTERM, which the block sends.
            assert child.try_wait() is None
        assert child.returncode == 0
    finally:
        for member in held:
            member.release()


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
async def test_jobs_of_the_session_get_the_shutdown_signal(tmp_path: Path, stopped: bool) -> None:
    # The leader holds on until its job is gone: the block ends within the grace period
    # (no escalation, which filterwarnings=error would turn into a failure) only if the
    # job got SIGTERM, and, when stopped, SIGCONT to act on it.
    record = tmp_path / "job"
    cmd = Command(*py(LEADER), JOB, str(record), "term", "waits").pty().shutdown(timeout=T)
    held: list[SessionMember] = []
    try:
        async with spawn(cmd) as child:
            job = await job_started(child, held)
            if stopped:
                job.send(signal.SIGSTOP)  # as Ctrl-Z would
                await poll_until(lambda: proc_state(job.pid) == "T")
        assert not job.alive()  # the block waited for it
        assert record.read_text() == "SIGTERM"
        assert child.returncode == 0  # the leader's own exit, after its job's
    finally:
        for member in held:
            member.release()


async def test_jobs_outliving_the_leader_are_shut_down(tmp_path: Path) -> None:
    # The leader has exited; its zombie, kept until the block ends, still names the
    # session, so what is left of it is found and signalled.
    record = tmp_path / "job"
    cmd = Command(*py(LEADER), JOB, str(record), "term", "exits").pty()
    held: list[SessionMember] = []
    try:
        async with spawn(cmd) as child:
            job = await job_started(child, held)
            with anyio.fail_after(T):
                assert await child.wait() == 0
            assert job.alive()
        assert not job.alive()
        assert record.read_text() == "SIGTERM"
    finally:
        for member in held:
            member.release()


async def test_a_job_ignoring_the_shutdown_signal_is_killed(tmp_path: Path) -> None:
    record = tmp_path / "job"
    cmd = Command(*py(LEADER), JOB, str(record), "ignore", "dies").pty().shutdown(timeout=0.5)
    held: list[SessionMember] = []
    try:
        with pytest.warns(RuntimeWarning, match="SIGKILL"):
            async with spawn(cmd) as child:
                job = await job_started(child, held)
        assert not job.alive()
        assert child.returncode == -signal.SIGTERM  # the leader went at once
        assert not record.exists()
    finally:
        for member in held:
            member.release()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
async def test_an_interactive_shells_background_job_is_shut_down() -> None:
    # The case from the field: `sleep 77 &` at an interactive bash (job control on, as on
    # any terminal) is a job of its own; bash exits without a word about it.
    cmd = (
        Command("bash", "--norc", "--noprofile", "-i")
        .env("PS1", "ready> ")
        .env("TERM", "dumb")
        .pty()
    )
    held: list[SessionMember] = []
    try:
        async with spawn(cmd) as child:
            assert child.pty is not None
            await child.expect("ready> ", timeout=T)
            await child.pty.send(b"sleep 77 & echo job=$!\n")
            match = await child.expect(rb"job=(\d+)\r\n", timeout=T)
            job = SessionMember(int(match.group(1)), child.pid)
            held.append(job)
            assert job.pgid == job.pid != child.pid
            await child.expect("ready> ", timeout=T)
            await child.pty.send(b"exit\n")
            with anyio.fail_after(T):
                assert await child.wait() == 0
            assert job.alive()
        assert not job.alive()
    finally:
        for member in held:
            member.release()


# -- Command.output() and Command.status() on a terminal ---------------------------------

# Far more than a terminal's queue holds (a few KiB), on both streams.
CHATTY = (
    "import os, sys\n"
    "print(os.isatty(1), os.isatty(2), flush=True)\n"
    "sys.stderr.write('to stderr\\n'); sys.stderr.flush()\n"
    "sys.stdout.write(('x' * 99 + '\\n') * 10000)\n"
    "print('end')\n"
)
CHATTY_LINES = b"x" * 99 + b"\r\n"


async def test_output_is_what_the_program_wrote_to_the_terminal() -> None:
    with anyio.fail_after(T):
        output = await Command(*py(CHATTY)).pty().output()
    assert output.status == 0
    assert output.stderr == b""
    # One stream, as on a screen, with the terminal's line endings.
    assert output.stdout == b"True True\r\nto stderr\r\n" + CHATTY_LINES * 10000 + b"end\r\n"

    # Only stdout on the terminal: stderr stays a stream of its own (piped by output()).
    with anyio.fail_after(T):
        output = await Command(*py(CHATTY)).stdout(Stdio.PTY).output()
    assert output.status == 0
    assert output.stdout == b"True False\r\n" + CHATTY_LINES * 10000 + b"end\r\n"
    assert output.stderr == b"to stderr\n"


async def test_status_drains_the_terminal() -> None:
    with anyio.fail_after(T):
        assert await Command(*py(CHATTY)).pty().status() == 0


@pytest.mark.parametrize("method", ["output", "status"])
async def test_a_program_reading_its_terminal_sees_end_of_file(method: str) -> None:
    # Nothing can be typed at a terminal output() or status() owns: they type end-of-file,
    # as stdin would end, rather than leave the program waiting forever.
    cmd = Command("sh", "-c", "cat; echo 'cat saw end of file'").pty()
    with anyio.fail_after(T):
        if method == "status":
            assert await cmd.status() == 0
        else:
            output = await cmd.output()
            assert output.status == 0
            assert output.stdout == b"cat saw end of file\r\n"
