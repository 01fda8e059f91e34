"""``anyio-proc``: a Procfile runner (``start``), an ad-hoc one (``run``) and a checker.

Built on :class:`~anyio_proc.services.Supervisor`: services start in order, each one with a
readiness check holding back those after it until it is ready; every output line is printed
with the time and the service's name; Ctrl-C or SIGTERM stops everything in reverse start
order.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from ._cli_args import PROG, build_parser
from ._cli_output import Printer, use_color
from ._cli_plan import UsageError, plan_run, plan_start, read_env_files
from ._cli_remote import fan_out, host_names
from ._cli_run import Options, supervise
from ._config import ConfigError, Problem
from ._policy import RestartPolicy
from ._procfile import read_procfile

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from ._cli_plan import ServiceSpec

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyio-proc`` and ``python -m anyio_proc``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        return _start_or_run(args)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # before the signal handlers were in place: nothing was started yet


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _start_or_run(args: argparse.Namespace) -> int:
    cwd: str | None = None
    if args.command == "start":
        specs, cwd = plan_start(args)
        stop_on_exit, stop_on_failure = True, True
    else:
        specs = plan_run(args)
        if args.hosts:
            return _fan_out(args, specs)
        stop_on_exit, stop_on_failure = args.kill_others, args.kill_others_on_fail
    opts = Options(
        backend=args.backend,
        restart=RestartPolicy(args.restart),
        timeout=args.timeout,
        ready_timeout=args.ready_timeout,
        max_restarts=args.max_restarts,
        backoff=args.backoff,
        color=use_color(args.color, sys.stdout),
        cwd=cwd,
        stop_on_exit=stop_on_exit,
        stop_on_failure=stop_on_failure,
    )
    printer = Printer([s.name for s in specs], color=opts.color, stream=sys.stdout)
    # The "stopped: ...; escalated to SIGKILL" line (ServiceEvent.escalated) already
    # reports an escalation, with a hint; the warning would repeat it as a traceback.
    warnings.filterwarnings("ignore", r".*was still running", RuntimeWarning)
    return _run_async(opts.backend, supervise, specs, opts, printer)


def _fan_out(args: argparse.Namespace, specs: list[ServiceSpec]) -> int:
    """``anyio-proc run -H host ...``: the commands on every host (``_cli_remote.py``)."""
    if args.ready or args.restart != "never" or args.kill_others or args.kill_others_on_fail:
        raise UsageError(
            "-H runs each command once on every host: no --ready, --restart, "
            "--kill-others or --kill-others-on-fail"
        )
    if len(set(args.hosts)) != len(args.hosts):
        raise UsageError("each -H host must be given once")
    printer = Printer(
        host_names(args.hosts, specs), color=use_color(args.color, sys.stdout), stream=sys.stdout
    )
    run = partial(
        fan_out,
        args.hosts,
        specs,
        config_file=args.ssh_config,
        timeout=args.timeout,
        printer=printer,
    )
    return _run_async(args.backend, run)


def _check(args: argparse.Namespace) -> int:
    """``anyio-proc check``: every problem of the Procfile and env files, or a summary."""
    problems: list[Problem] = []
    procfile = None
    try:
        procfile = read_procfile(args.procfile)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        dotenv = read_env_files(args.env, args.procfile)
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
