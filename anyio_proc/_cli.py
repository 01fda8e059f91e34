"""``anyio-proc``: a Procfile runner (``start``), an ad-hoc one (``run``) and a checker.

Built on :class:`~anyio_proc.Supervisor`: services start in order, each one with a readiness
check holding back those after it until it is ready; every output line is printed with the
time and the service's name; Ctrl-C or SIGTERM stops everything in reverse start order.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from ._command import Command, Stdio
from ._procfile import (
    ConfigError,
    Problem,
    ReadySpec,
    default_env_path,
    parse_ready,
    read_env,
    read_procfile,
)
from ._supervisor import (
    Backoff,
    OutputLine,
    ReadyLine,
    ReadyPort,
    Restart,
    ServiceEvent,
    ServiceFailed,
    Supervisor,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._status import ExitStatus
    from ._supervisor import ReadyCheck, Service

__all__ = ["main"]

PROG = "anyio-proc"
BACKENDS = ("asyncio", "uvloop", "trio")
# foreman's palette, in its order: distinct on dark and light terminals alike.
_COLORS = ("36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94")
_SYSTEM = "system"


@dataclass
class ServiceSpec:
    name: str
    command: str
    env: dict[str, str]
    ready: ReadyCheck | None


@dataclass
class Options:
    backend: str
    restart: Restart
    timeout: float
    ready_timeout: float | None
    max_restarts: int
    backoff: float
    color: bool
    cwd: str | None
    stop_on_exit: bool  # foreman: any service ending stops the others
    stop_on_failure: bool


# A line with none of these is one simple command, which the shell may replace itself with.
_SHELL_SYNTAX = re.compile(r"[;&|(){}<>`\n]")
_KEYWORDS_AND_BUILTINS = (
    "! [[ case for function if select time until while . : alias cd eval exec exit export "
    "readonly return set shift source trap ulimit umask unset wait"
)
_NOT_PROGRAMS = frozenset(_KEYWORDS_AND_BUILTINS.split())


def shell_line(command: str) -> str:
    """The line given to ``sh -c``: ``exec`` in front of a simple command.

    The service is then the process we started, not a shell waiting for it: its exit
    status is the service's own, and the shutdown signal reaches it first, so a service
    that exits cleanly on SIGTERM is reported that way rather than as a shell killed by it.
    """
    words = command.split(maxsplit=1)
    if _SHELL_SYNTAX.search(command) or "=" in words[0] or words[0] in _NOT_PROGRAMS:
        return command
    return "exec " + command


class UsageError(Exception):
    """Raised when the command line itself is wrong (unknown service, bad --ready...)."""


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):  # https://no-color.org: set and not empty
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except ValueError:
        return False


class Printer:
    """Writes ``HH:MM:SS name | line``, names aligned, each name in its own colour."""

    def __init__(self, names: Sequence[str], *, color: bool, stream: TextIO) -> None:
        self._stream = stream
        self._color = color
        self._width = max(len(n) for n in [*names, _SYSTEM])
        self._codes = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}

    def __call__(self, name: str, text: str, *, sep: str = "|") -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self._width}} {sep} "
        if self._color:
            code = self._codes.get(name, "1")  # system messages in bold
            prefix = f"\x1b[{code}m{prefix}\x1b[0m"
        try:
            self._stream.write(prefix + text + "\n")
            self._stream.flush()
        except BrokenPipeError:
            pass  # `anyio-proc start | head`: the reader left; the services still stop cleanly

    def output(self, record: OutputLine) -> None:
        self(record.service, record.line)

    def event(self, event: ServiceEvent) -> None:
        text = f"failed: {event.message}" if event.kind == "failed" else str(event)
        if event.kind == "exited" and event.escalated:
            text += " (--timeout gives it longer)"
        # '*' rather than '|': what anyio-proc says about a service, not what it printed.
        self(event.service, text, sep="*")


def _exit_code(status: ExitStatus) -> int:
    code = status.code
    if code is not None:
        return code
    sig = status.signal
    return 128 + sig if sig is not None else 1


def _failure_code(exc: ServiceFailed) -> int:
    """The exit code for a service that gave up or failed its start: never 0, even when
    its last run exited 0 (``--restart always``, or an exit before it was ready)."""
    code = _exit_code(exc.status) if exc.status is not None else 1
    return code or 1


def _ready_check(spec: ReadySpec, env: dict[str, str]) -> ReadyCheck:
    if spec.kind == "port":
        return ReadyPort(spec.port_number(env))
    return ReadyLine(spec.value)


async def supervise(services: list[ServiceSpec], opts: Options, printer: Printer) -> int:
    """Run the services until one ends (foreman) or all end (``run``); the exit code."""
    first_failure: list[int] = []
    interrupted: list[int] = []
    stop = anyio.Event()
    ended = 0

    def failed(code: int) -> None:
        if not first_failure:
            first_failure.append(code)

    async def watch(service: Service) -> None:
        nonlocal ended
        status = await service.wait()
        ended += 1
        if service.stopped or stop.is_set():
            return
        if not status.success:
            failed(_exit_code(status))
        if opts.stop_on_exit or (opts.stop_on_failure and not status.success):
            printer(_SYSTEM, f"{service.name} ended, stopping the others", sep="*")
            stop.set()
        elif ended == len(services):
            stop.set()

    async def start_all(sup: Supervisor, tg: anyio.abc.TaskGroup) -> None:
        for spec in services:
            cmd = (
                Command.shell(shell_line(spec.command))
                .envs(spec.env)
                .stdin(Stdio.NULL)
                # Its own process group: Ctrl-C in the terminal reaches only us, and we
                # stop the services in order; shutdown then reaches a shell's children too.
                .process_group(0)
                .shutdown(signal.SIGTERM, opts.timeout)
            )
            if opts.cwd is not None:
                cmd = cmd.current_dir(opts.cwd)
            try:
                service = await sup.start(
                    spec.name,
                    cmd,
                    restart=opts.restart,
                    ready=spec.ready,
                    ready_timeout=opts.ready_timeout,
                    max_restarts=opts.max_restarts,
                    backoff=Backoff(initial=opts.backoff, max=max(30.0, opts.backoff)),
                    merge_stderr=True,
                )
            except ServiceFailed as exc:
                failed(_failure_code(exc))
                stop.set()
                return
            tg.start_soon(watch, service)

    async def on_signals(sup: Supervisor, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not interrupted:
                    interrupted.append(signum)
                    name = signal.Signals(signum).name
                    printer(_SYSTEM, f"{name} received, stopping all services", sep="*")
                    stop.set()
                else:
                    printer(_SYSTEM, "second signal: killing all services now", sep="*")
                    for service in sup.services:
                        child = service.child
                        if child is not None:
                            child.kill()

    sup = Supervisor(on_output=printer.output, on_event=printer.event)
    async with anyio.create_task_group() as outer:
        # Outside the supervisor's block, so a second Ctrl-C is heard during the shutdown.
        await outer.start(on_signals, sup)
        try:
            async with sup, anyio.create_task_group() as tg:
                tg.start_soon(start_all, sup, tg)
                await stop.wait()
                tg.cancel_scope.cancel()
        except ServiceFailed as exc:
            failed(_failure_code(exc))
        finally:
            outer.cancel_scope.cancel()
    if first_failure:
        return first_failure[0]
    if interrupted:
        return 128 + interrupted[0]
    return 0


# -- command line ---------------------------------------------------------------------------


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _seconds(text: str) -> float:
    """A duration: finite and >= 0 (argparse turns the error into a usage error)."""
    value = _number(text)
    if not 0 <= value < math.inf:  # NaN included
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _seconds_or_inf(text: str) -> float | None:
    """A time limit: >= 0, and ``inf`` for none (``None``)."""
    value = _number(text)
    if not value >= 0:  # NaN included
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 or inf, got {text!r}")
    return None if value == math.inf else value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the processes of a Procfile, or ad-hoc commands, together.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def files(p: argparse.ArgumentParser, env_help: str) -> None:
        p.add_argument("-f", "--procfile", default="Procfile", help="default: ./Procfile")
        p.add_argument("-e", "--env", action="append", default=[], metavar="FILE", help=env_help)

    def running(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--restart",
            choices=[r.value for r in Restart],
            default="never",
            help="restart a service that exits (default: never)",
        )
        p.add_argument(
            "--max-restarts",
            type=_count,
            default=5,
            metavar="N",
            help="give up after N restarts within 60 s (default: 5)",
        )
        p.add_argument(
            "--backoff",
            type=_seconds,
            default=0.5,
            metavar="SECONDS",
            help="first restart delay, doubled for each restart within 60 s (default: 0.5)",
        )
        p.add_argument(
            "--timeout",
            type=_seconds,
            default=5.0,
            metavar="SECONDS",
            help="grace period between SIGTERM and SIGKILL at shutdown (default: 5)",
        )
        p.add_argument(
            "--ready",
            action="append",
            default=[],
            metavar="NAME=SPEC",
            help="readiness of NAME: port, port:N, re:REGEX or REGEX; services after it "
            "start once it is ready",
        )
        p.add_argument(
            "--ready-timeout",
            type=_seconds_or_inf,
            default=None,
            metavar="SECONDS",
            help="fail a service that is not ready in time (default: inf, wait)",
        )
        p.add_argument(
            "--backend", choices=BACKENDS, default="asyncio", help="event loop (default: asyncio)"
        )
        p.add_argument(
            "--color",
            choices=("auto", "always", "never"),
            default="auto",
            help="colour the names (default: auto, on a terminal unless NO_COLOR is set)",
        )

    start = sub.add_parser(
        "start",
        help="run the processes of a Procfile",
        description="Run the processes of a Procfile; when one ends, stop the others.",
    )
    files(start, "env file(s) (default: .env beside the Procfile, if any)")
    start.add_argument("-d", "--root", help="working directory (default: the Procfile's)")
    start.add_argument(
        "-p",
        "--port",
        type=_port,
        help="base of $PORT: each process gets PORT=base+100*index (default: $PORT or 5000)",
    )
    running(start)
    start.add_argument("services", nargs="*", metavar="SERVICE", help="default: all")

    run = sub.add_parser(
        "run",
        help="run shell commands side by side",
        description="Run shell commands side by side until all have ended.",
    )
    run.add_argument("-e", "--env", action="append", default=[], metavar="FILE")
    run.add_argument("-n", "--names", help="comma-separated names, one per command")
    run.add_argument(
        "--kill-others-on-fail",
        action="store_true",
        help="stop the other commands when one fails",
    )
    run.add_argument(
        "--kill-others", action="store_true", help="stop the other commands when one ends"
    )
    running(run)
    run.add_argument("commands", nargs="+", metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="validate a Procfile and env file",
        description="Check a Procfile and its env file; report every problem as file:line.",
    )
    files(check, "env file(s) (default: .env beside the Procfile, if any)")
    return parser


def _env_files(paths: list[str], procfile: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if not paths and procfile is not None:
        default = default_env_path(procfile)
        if os.path.isfile(default):
            paths = [default]
    problems: list[Problem] = []
    for path in paths:
        try:
            values.update(read_env(path).values)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return values


def _ready_flags(flags: list[str], names: list[str]) -> dict[str, ReadySpec]:
    result: dict[str, ReadySpec] = {}
    for flag in flags:
        name, eq, value = flag.partition("=")
        if not eq or not name:
            raise UsageError(f"--ready {flag!r}: expected NAME=SPEC")
        if name not in names:
            raise UsageError(f"--ready {flag!r}: no service named {name!r}")
        try:
            result[name] = parse_ready(value)
        except ValueError as exc:
            raise UsageError(f"--ready {flag!r}: {exc}") from None
    return result


def _service_env(dotenv: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    env = {**dotenv, **extra}
    # A Python service writing to a pipe buffers its output in blocks: it would show up
    # late, or be lost when the service is stopped. Unless told otherwise, ask for lines.
    if "PYTHONUNBUFFERED" not in os.environ and "PYTHONUNBUFFERED" not in env:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def _resolve_ready(name: str, spec: ReadySpec, env: dict[str, str]) -> ReadyCheck:
    try:
        return _ready_check(spec, {**os.environ, **env})
    except ValueError as exc:
        raise UsageError(f"readiness of {name!r}: {exc}") from None


def _plan_start(args: argparse.Namespace) -> tuple[list[ServiceSpec], str]:
    procfile = read_procfile(args.procfile)
    dotenv = _env_files(args.env, args.procfile)
    unknown = [s for s in args.services if s not in procfile.names]
    if unknown:
        raise UsageError(
            f"no process named {unknown[0]!r} in {args.procfile} "
            f"(it has: {', '.join(procfile.names)})"
        )
    ready = {**procfile.ready, **_ready_flags(args.ready, procfile.names)}
    base = args.port
    if base is None:
        text = dotenv.get("PORT", os.environ.get("PORT", "5000"))
        try:
            base = _port(text)
        except argparse.ArgumentTypeError:
            raise UsageError(f"PORT={text!r} is not a port number (1-65535)") from None
    specs = []
    for index, entry in enumerate(procfile.processes):
        if args.services and entry.name not in args.services:
            continue
        env = _service_env(dotenv, {"PORT": str(base + 100 * index)})
        check = ready.get(entry.name)
        specs.append(
            ServiceSpec(
                entry.name,
                entry.command,
                env,
                None if check is None else _resolve_ready(entry.name, check, env),
            )
        )
    root = args.root or os.path.dirname(os.path.abspath(args.procfile))
    return specs, root


def _plan_run(args: argparse.Namespace) -> list[ServiceSpec]:
    commands: list[str] = args.commands
    if any(not c.strip() for c in commands):
        raise UsageError("empty command")
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(commands):
            raise UsageError(f"--names gives {len(names)} name(s) for {len(commands)} command(s)")
        if len(set(names)) != len(names) or not all(names):
            raise UsageError("--names must be distinct and not empty")
    else:
        names = []
        for command in commands:
            base = os.path.basename(command.split()[0])
            name, n = base, 1
            while name in names:
                n += 1
                name = f"{base}-{n}"
            names.append(name)
    dotenv = _env_files(args.env, None)
    ready = _ready_flags(args.ready, names)
    env = _service_env(dotenv, {})
    return [
        ServiceSpec(
            name,
            command,
            env,
            None if name not in ready else _resolve_ready(name, ready[name], env),
        )
        for name, command in zip(names, commands, strict=True)
    ]


def _check(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    procfile = None
    try:
        procfile = read_procfile(args.procfile)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        dotenv = _env_files(args.env, args.procfile)
    except ConfigError as exc:
        problems.extend(exc.problems)
        dotenv = {}
    if procfile is not None:
        for name, spec in procfile.ready.items():
            if spec.kind == "port":
                env = {**os.environ, "PORT": "5000", **dotenv}
                try:
                    spec.port_number(env)
                except ValueError as exc:
                    problems.append(Problem(args.procfile, 0, f"readiness of {name!r}: {exc}"))
    if problems:
        for problem in problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    assert procfile is not None
    print(f"{args.procfile}: {len(procfile.processes)} process(es)")
    width = max(len(n) for n in procfile.names)
    for entry in procfile.processes:
        check = procfile.ready.get(entry.name)
        ready = f"  [ready: {check}]" if check is not None else ""
        print(f"  {entry.name:<{width}}  {entry.command}{ready}")
    if dotenv:
        print(f"env: {len(dotenv)} variable(s): {', '.join(sorted(dotenv))}")
    return 0


def _run_async(backend: str, fn: Any, *args: Any) -> int:
    name, options = backend, {}
    if backend == "uvloop":
        name, options = "asyncio", {"use_uvloop": True}
    if backend != "asyncio":
        # Checked first: anyio reports a missing backend as a LookupError with a traceback
        # (and some versions as the ModuleNotFoundError itself).
        try:
            importlib.import_module(backend)
        except ImportError:
            raise UsageError(
                f"--backend {backend} needs {backend}: pip install 'anyio_proc[{backend}]'"
            ) from None
    result: int = anyio.run(fn, *args, backend=name, backend_options=options)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyio-proc`` and ``python -m anyio_proc``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        cwd: str | None = None
        if args.command == "start":
            specs, cwd = _plan_start(args)
            stop_on_exit, stop_on_failure = True, True
        else:
            specs = _plan_run(args)
            stop_on_exit, stop_on_failure = args.kill_others, args.kill_others_on_fail
        opts = Options(
            backend=args.backend,
            restart=Restart(args.restart),
            timeout=args.timeout,
            ready_timeout=args.ready_timeout,
            max_restarts=args.max_restarts,
            backoff=args.backoff,
            color=_use_color(args.color, sys.stdout),
            cwd=cwd,
            stop_on_exit=stop_on_exit,
            stop_on_failure=stop_on_failure,
        )
        printer = Printer([s.name for s in specs], color=opts.color, stream=sys.stdout)
        # The "stopped: ...; escalated to SIGKILL" line (ServiceEvent.escalated) already
        # reports an escalation, with a hint; the warning would repeat it as a traceback.
        warnings.filterwarnings("ignore", r".*was still running", RuntimeWarning)
        return _run_async(opts.backend, supervise, specs, opts, printer)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # before the signal handlers were in place: nothing was started yet


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
