"""Pseudo-terminals (issue 7): ``Command.pty()``/``Stdio.PTY``, ``Child.pty``, ``resize``,
``expect``, hang-up and end-of-file as a terminal gives them.

Every async test runs on asyncio, uvloop and trio under each exit waiter; the autouse
``no_leaks`` fixture fails a test that leaves a process, an fd or a waiter thread behind.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

import anyio
import anyio.abc
import pytest

from anyio_proc import Child, Command, PtyStream, Stdio, spawn

from .helpers import children, open_fds, py

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

        # Ctrl-C interrupts what runs in the foreground, and the REPL carries on.
        await child.pty.send(b"import time; print('sleep' + 'ing'); time.sleep(100)\n")
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
