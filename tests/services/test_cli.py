"""The ``anyio-proc`` command, driven as a user would: in a terminal and through a pipe.

Each test runs ``python -m anyio_proc`` as a child (with this library, so the leak check
covers it); the interesting backend is the command's own (``--backend``), so the tests
themselves run on asyncio only. In a terminal (a pseudo-terminal that is the command's
controlling tty) Ctrl-C is a ``\\x03`` typed on it, delivered by the tty driver as SIGINT.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import socket
import termios
from pathlib import Path
from typing import Any

import anyio
import pytest

from anyio_proc import Command, Output, Stdio, spawn
from anyio_proc.services._cli import main
from anyio_proc.services._cli_args import build_parser
from anyio_proc.services._cli_run import shell_line

from ..helpers import PY, alive

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CLI_BACKENDS = ["asyncio", "trio"]
TIMEOUT = 30


@pytest.fixture
def anyio_backend() -> Any:
    return "asyncio"


def cli(*args: str) -> Command:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PYTHONUNBUFFERED")}
    return Command(PY, "-m", "anyio_proc", *args).env_clear().envs(env)


def procfile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "Procfile"
    path.write_text(text)
    return str(path)


def pysvc(code: str) -> str:
    """A Procfile command running a Python snippet with this interpreter."""
    return f"{shlex.quote(PY)} -I -S -c {shlex.quote(code)}"


# A service that records its pid, says it is up, and runs until stopped.
def long_running(tmp_path: Path, name: str) -> str:
    pidfile = str(tmp_path / (name + ".pid"))
    return pysvc(
        f"import os, signal; open({pidfile!r}, 'w').write(str(os.getpid())); "
        f"print('{name} up', flush=True); signal.pause()"
    )


def service_pids(tmp_path: Path) -> list[int]:
    return [int(p.read_text()) for p in tmp_path.glob("*.pid")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Terminal:
    """The master side of a pseudo-terminal, read asynchronously."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        self.text = ""

    def command(self, cmd: Command) -> Command:
        slave = self.slave

        def controlling_tty() -> None:
            # After setsid (new_session), make the pty our controlling terminal, so the tty
            # driver turns a typed ^C into SIGINT for the command's process group.
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        return cmd.stdin(slave).stdout(slave).stderr(slave).new_session().pre_exec(controlling_tty)

    async def read_until(self, pattern: str) -> str:
        """Read until ``pattern`` (a regex) shows in the colourless output; all of it."""
        while not re.search(pattern, ANSI.sub("", self.text)):
            if not await self._read():
                raise AssertionError(f"{pattern!r} never came; output:\n{self.text}")
        return self.text

    async def read_to_end(self) -> str:
        while await self._read():
            pass
        return self.text

    async def _read(self) -> bool:
        await anyio.wait_readable(self.master)
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return True
        except OSError:  # EIO: every slave fd closed, the command has exited
            return False
        self.text += data.decode(errors="replace")
        return bool(data)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


async def run_in_terminal(
    tmp_path: Path, args: list[str], *, until: str, keys: bytes | None, env: dict[str, str]
) -> tuple[str, int]:
    term = Terminal()
    try:
        with anyio.fail_after(TIMEOUT):
            async with spawn(term.command(cli(*args).envs(env))) as child:
                os.close(term.slave)  # the command holds it now; EIO tells us it is gone
                await term.read_until(until)
                if keys is not None:
                    term.type(keys)
                text = await term.read_to_end()
                status = await child.wait()
    finally:
        term.close()
    return text, int(status)


async def run_piped(args: list[str], env: dict[str, str] | None = None) -> Output:
    with anyio.fail_after(TIMEOUT):
        return await cli(*args).envs(env or {}).output()


# -- in a terminal ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CLI_BACKENDS)
async def test_ctrl_c_in_terminal_stops_all_in_reverse_order(tmp_path: Path, backend: str) -> None:
    path = procfile(
        tmp_path,
        "#@ready db=re:db up\n"
        f"db: {long_running(tmp_path, 'db')}\n"
        f"web: {long_running(tmp_path, 'web')}\n",
    )
    text, code = await run_in_terminal(
        tmp_path,
        ["start", "-f", path, "--backend", backend],
        until=r"web +\| web up",
        keys=b"\x03",
        env={},
    )
    plain = ANSI.sub("", text)
    assert code == 128 + signal.SIGINT, text
    # Coloured, aligned prefixes: time, name padded to the longest name ("system").
    assert re.search(r"\x1b\[36m\d\d:\d\d:\d\d db     \| \x1b\[0mdb up", text), text
    assert re.search(r"\x1b\[33m\d\d:\d\d:\d\d web    \| \x1b\[0mweb up", text), text
    assert "SIGINT received, stopping all services" in plain
    stops = re.findall(r"(\w+) +\* stopping", plain)
    assert stops == ["web", "db"], plain
    assert re.search(r"db +\* stopped: signal: 15 \(SIGTERM\)", plain)
    assert "Traceback" not in plain
    pids = service_pids(tmp_path)
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)


async def test_no_color_is_honoured_in_terminal(tmp_path: Path) -> None:
    path = procfile(tmp_path, f"job: {pysvc('print(42)')}\n")
    text, code = await run_in_terminal(
        tmp_path, ["start", "-f", path], until=r"job +\* exited", keys=None, env={"NO_COLOR": "1"}
    )
    assert code == 0
    assert "\x1b[" not in text
    assert re.search(r"\d\d:\d\d:\d\d job    \| 42", text), text


# -- without a terminal -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", CLI_BACKENDS)
async def test_demo_procfile_ends_by_itself(tmp_path: Path, backend: str) -> None:
    env_file = tmp_path / "demo.env"
    env_file.write_text(f"DEMO_PORT={free_port()}\n")
    out = await run_piped(
        ["start", "-f", str(EXAMPLES / "Procfile"), "-e", str(env_file), "--backend", backend]
    )
    text = out.stdout.decode()
    assert out.status == 0, text + out.stderr.decode()
    assert "\x1b[" not in text  # not a terminal: no colour
    lines = text.splitlines()

    def first(pattern: str) -> int:
        for i, line in enumerate(lines):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"{pattern!r} not in output:\n{text}")

    # The client starts only once web and warmup are ready, and gets the page.
    assert first(r"web +\* ready") < first(r"client +\* started")
    assert first(r"warmup +\| ready") < first(r"client +\* started")
    assert first(r"client +\| GET .* -> 200")
    # Its exit stops the others, last started first; warmup says goodbye on the way.
    assert first(r"client +\* exited: exit status: 0") < first(r"warmup +\* stopping")
    assert first(r"warmup +\| SIGTERM: finishing up, bye")
    # Run with exec, so the status is warmup's own clean exit, not a shell's death by SIGTERM.
    assert first(r"warmup +\* stopped: exit status: 0")
    stops = [m.group(1) for m in map(re.compile(r"^\S+ (\w+) +\* stopping").match, lines) if m]
    assert stops == ["warmup", "ticker", "web"]
    assert out.stderr == b""


async def test_sigterm_without_terminal(tmp_path: Path) -> None:
    path = procfile(tmp_path, f"a: {long_running(tmp_path, 'a')}\n")
    with anyio.fail_after(TIMEOUT):
        async with spawn(cli("start", "-f", path).stdout_piped().stderr_piped()) as child:
            assert child.stdout is not None
            seen = ""
            async for line in child.stdout.lines():
                seen += line + "\n"
                if re.search(r"a +\| a up", line):
                    child.send_signal(signal.SIGTERM)
            status = await child.wait()
    assert status == 128 + signal.SIGTERM, seen
    assert "SIGTERM received" in seen
    assert not any(alive(pid) for pid in service_pids(tmp_path))


async def test_second_signal_kills_a_service_that_ignores_the_first(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "stubborn.pid")
    # os.write, not print: the handler can run in the middle of a print, and a buffered
    # stdout refuses to be re-entered.
    stubborn = pysvc(
        "import os, signal; "
        "signal.signal(signal.SIGTERM, lambda *a: os.write(1, b'ignoring TERM\\n')); "
        f"open({pidfile!r}, 'w').write(str(os.getpid())); os.write(1, b'up\\n'); "
        "[signal.pause() for _ in iter(int, 1)]"
    )
    path = procfile(tmp_path, f"stubborn: {stubborn}\n")
    # A grace period longer than the test's own time limit: only the second signal ends it.
    cmd = cli("start", "-f", path, "--timeout", str(TIMEOUT * 2)).stdout_piped()
    with anyio.fail_after(TIMEOUT):
        async with spawn(cmd) as child:
            assert child.stdout is not None
            seen = ""
            async for line in child.stdout.lines():
                seen += line + "\n"
                if re.search(r"stubborn +\| (up|ignoring TERM)$", line):
                    child.send_signal(signal.SIGINT)
            status = await child.wait()
    assert status == 128 + signal.SIGINT, seen
    assert "second signal: killing all services now" in seen
    assert not any(alive(pid) for pid in service_pids(tmp_path))


async def test_first_failure_code_and_others_stopped(tmp_path: Path) -> None:
    path = procfile(
        tmp_path,
        f"#@ready a=re:up\na: {long_running(tmp_path, 'a')}\n"
        f"bad: {pysvc('import sys; sys.exit(7)')}\n",
    )
    out = await run_piped(["start", "-f", path])
    text = out.stdout.decode()
    assert out.status == 7, text
    assert re.search(r"bad +\* exited: exit status: 7", text)
    assert "bad ended, stopping the others" in text
    assert re.search(r"a +\* stopped: signal: 15", text)


async def test_start_selected_services_and_env_and_port(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GREETING='hello there'\nexport OTHER=1\n")
    show = pysvc("import os; print(os.environ['GREETING'], os.environ['PORT'])")
    path = procfile(tmp_path, f"skip: {pysvc('raise SystemExit(9)')}\nshow: {show}\n")
    out = await run_piped(["start", "-f", path, "-p", "7000", "show"])
    assert out.status == 0, out.stdout.decode()
    assert re.search(r"show +\| hello there 7100", out.stdout.decode())
    assert "skip" not in out.stdout.decode()


async def test_restart_on_failure_gives_up(tmp_path: Path) -> None:
    path = procfile(tmp_path, f"crash: {pysvc('import sys; print(1); sys.exit(5)')}\n")
    restart = ["--restart", "on-failure", "--max-restarts", "2", "--backoff", "0.01"]
    out = await run_piped(["start", "-f", path, *restart])
    text = out.stdout.decode()
    assert out.status == 5, text
    assert text.count("restarting in") == 2
    assert "gave up after 2 restart(s)" in text


async def test_ready_flag_orders_startup(tmp_path: Path) -> None:
    slow = pysvc("import signal; print('a'); print('ok go', flush=True); signal.pause()")
    path = procfile(tmp_path, f"first: {slow}\nsecond: {pysvc('print(2)')}\n")
    out = await run_piped(["start", "-f", path, "--ready", "first=re:go$"])
    text = out.stdout.decode()
    assert out.status == 0, text
    assert text.index("ok go") < text.index("second * started")


# -- run: ad-hoc commands --------------------------------------------------------------------


@pytest.mark.parametrize("backend", CLI_BACKENDS)
async def test_run_waits_for_all_and_reports_first_failure(backend: str) -> None:
    out = await run_piped(
        ["run", "--backend", backend, "--names", "one,two", "echo one", "echo two; exit 3"]
    )
    text = out.stdout.decode()
    assert out.status == 3, text
    assert re.search(r"one +\| one", text)
    assert re.search(r"two +\| two", text)
    assert "stopping" not in text


async def test_run_kill_others_on_fail(tmp_path: Path) -> None:
    sleeper = long_running(tmp_path, "sleeper")
    args = ["--kill-others-on-fail", "--names", "sleeper,fail", "--ready", "sleeper=up"]
    out = await run_piped(["run", *args, sleeper, "exit 4"])
    text = out.stdout.decode()
    assert out.status == 4, text
    assert re.search(r"fail +\* exited: exit status: 4", text)
    assert re.search(r"sleeper +\* stopped: signal: 15", text)
    assert not any(alive(pid) for pid in service_pids(tmp_path))


# -- check and bad input ---------------------------------------------------------------------


async def test_check_reports_every_problem_with_line(tmp_path: Path) -> None:
    path = procfile(
        tmp_path,
        "web: run web\n\nweb: again\nnot a process line\nempty:\n#@ready ghost=port:80\n"
        "#@ready web=port:99999\n#@bogus\n",
    )
    out = await run_piped(["check", "-f", path])
    assert out.status == 1
    err = out.stderr.decode()
    assert f"{path}:3: duplicate process name 'web' (first defined on line 1)" in err
    assert f"{path}:4: expected 'name: command'" in err
    assert f"{path}:5: process 'empty' has an empty command" in err
    assert f"{path}:6: #@ready names unknown process 'ghost'" in err
    assert f"{path}:7: readiness of 'web': port 99999 is out of range" in err
    assert f"{path}:8: unknown directive '#@bogus'" in err
    assert "Traceback" not in err


async def test_check_accepts_the_example() -> None:
    out = await run_piped(["check", "-f", str(EXAMPLES / "Procfile")])
    assert out.status == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "4 process(es)" in text
    assert "[ready: port:$DEMO_PORT]" in text
    assert "env: 1 variable(s): DEMO_PORT" in text


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["start", "-f", "{tmp}/missing"], {}, "{tmp}/missing: Procfile not found"),
        (["start", "-f", "{tmp}/P"], {"P": "a: x\na: y\n"}, "{tmp}/P:2: duplicate process name"),
        (["start", "-f", "{tmp}/P"], {"P": "a:\n"}, "{tmp}/P:1: process 'a' has an empty command"),
        (["start", "-f", "{tmp}/P"], {"P": "# nothing\n"}, "{tmp}/P: no processes defined"),
        (["start", "-f", "{tmp}/P"], {"P": "a b c\n"}, "{tmp}/P:1: expected 'name: command'"),
        (
            ["start", "-f", "{tmp}/P", "-e", "{tmp}/E"],
            {"P": "a: x\n", "E": "OK=1\nnot an assignment\n"},
            "{tmp}/E:2: expected 'KEY=value'",
        ),
        (["start", "-f", "{tmp}/P", "-e", "{tmp}/E"], {"P": "a: x\n"}, "env file not found"),
        (["start", "-f", "{tmp}/P", "zzz"], {"P": "a: x\n"}, "no process named 'zzz'"),
        (["start", "-f", "{tmp}/P", "--ready", "a=re:("], {"P": "a: x\n"}, "bad regular expr"),
        (["start", "-f", "{tmp}/P", "--ready", "b=port"], {"P": "a: x\n"}, "no service named"),
        (["run", "--names", "x", "true", "true"], {}, "--names gives 1 name(s) for 2"),
    ],
)
def test_bad_input_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    files: dict[str, str],
    message: str,
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anyio-proc: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]


async def test_bad_input_from_the_real_entry_point(tmp_path: Path) -> None:
    out = await run_piped(["start", "-f", str(tmp_path / "nope")])
    assert out.status == 2
    assert out.stderr.decode() == f"anyio-proc: error: {tmp_path / 'nope'}: Procfile not found\n"


@pytest.mark.parametrize("backend", ["trio", "uvloop"])
async def test_missing_backend_is_a_one_line_error(tmp_path: Path, backend: str) -> None:
    # As after `pip install anyio_proc` without the extra: the module cannot be imported.
    code = (
        f"import sys; sys.modules[{backend!r}] = None; "
        "from anyio_proc.services._cli import run; run()"
    )
    args = ["start", "-f", procfile(tmp_path, "a: true\n"), "--backend", backend]
    out = await Command(PY, "-c", code, *args).stdin(Stdio.NULL).output()
    assert out.status == 2
    assert out.stderr.decode() == (
        f"anyio-proc: error: --backend {backend} needs {backend}: "
        f"pip install 'anyio_proc[{backend}]'\n"
    )


@pytest.mark.parametrize(
    ("line", "execs"),
    [
        ("python3 -m http.server $PORT --bind 127.0.0.1", True),
        ("./bin/worker --queue 'a b'", True),
        ("make build && ./run", False),
        ("echo a; echo b", False),
        ("server > log.txt", False),
        ("FOO=1 server", False),
        ("cd sub", False),
        ("while true; do date; done", False),
        ("echo $(date)", False),
    ],
)
def test_simple_lines_are_run_with_exec(line: str, execs: bool) -> None:
    assert shell_line(line) == (f"exec {line}" if execs else line)


# -- numbers on the command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        *[("--timeout", v) for v in ("inf", "nan", "-1", "-inf", "5s", "")],
        *[("--backoff", v) for v in ("inf", "nan", "-0.5", "soon")],
        *[("--ready-timeout", v) for v in ("nan", "-1", "-inf", "x")],
        *[("--max-restarts", v) for v in ("-1", "1.5", "nan", "inf", "many")],
        *[("-p", v) for v in ("0", "-5", "65536", "99999999999", "1e3", "http")],
    ],
)
def test_bad_numbers_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    # Checked while parsing, so nothing starts: 'inf' and 'nan' used to reach Command or
    # Backoff (a traceback), a NaN ready timeout the supervisor (a traceback from a task),
    # and '-p 0' or a negative port was passed on as $PORT.
    path = procfile(tmp_path, "#@ready a=re:never\na: true\n")
    with pytest.raises(SystemExit) as info:
        main(["start", "-f", path, f"{option}={value}"])
    captured = capsys.readouterr()
    assert info.value.code == 2
    assert captured.out == ""
    assert "Traceback" not in captured.err
    last = captured.err.splitlines()[-1]
    assert last.startswith(f"anyio-proc start: error: argument {option}"), captured.err
    assert repr(value) in last


def test_numbers_at_the_edges_are_accepted() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["run", "--timeout", "1e300", "--backoff", "0", "--ready-timeout", "inf",
         "--max-restarts", str(10**30), "true"]
    )  # fmt: skip
    assert args.timeout == 1e300
    assert args.ready_timeout is None  # inf: wait for readiness as long as it takes
    assert args.max_restarts == 10**30
    assert parser.parse_args(["start", "-p", "65535"]).port == 65535


async def test_escalation_to_sigkill_is_reported(tmp_path: Path) -> None:
    # The service's shell leads its group; the leader dies of SIGTERM but a member it started
    # ignores it, so the status alone ("signal: 15") would hide that SIGKILL was needed.
    stubborn = "trap '' TERM; sleep 60 & trap - TERM; echo up $!; exec sleep 60"
    path = procfile(tmp_path, f"#@ready stubborn=re:^up\nstubborn: {stubborn}\ndone: true\n")
    out = await run_piped(["start", "-f", path, "--timeout", "0.2"])
    text = out.stdout.decode()
    assert out.status == 0, text + out.stderr.decode()
    assert re.search(
        r"stubborn +\* stopped: signal: 15 \(SIGTERM\); escalated to SIGKILL after the grace "
        r"period \(--timeout gives it longer\)$",
        text,
        re.MULTILINE,
    ), text
    assert not re.search(r"done +\* .*escalated", text)
    member = int(re.search(r"stubborn +\| up (\d+)", text).group(1))  # type: ignore[union-attr]
    assert not alive(member)
    assert out.stderr == b""


@pytest.mark.parametrize(
    ("procfile_text", "flags"),
    [
        # Exits 0 before printing its ready line.
        ("#@ready a=re:never\na: true\n", []),
        # Exits 0 every time, restarted until it gives up.
        ("a: true\n", ["--restart", "always", "--max-restarts", "1", "--backoff", "0"]),
    ],
    ids=["not-ready", "gave-up"],
)
async def test_a_service_failure_is_never_exit_code_0(
    tmp_path: Path, procfile_text: str, flags: list[str]
) -> None:
    # The exit code was that of the last run: 0 here, so a failed start looked like success.
    out = await run_piped(["start", "-f", procfile(tmp_path, procfile_text), *flags])
    text = out.stdout.decode()
    assert re.search(r"a +\* failed: ", text), text
    assert out.status == 1, text
