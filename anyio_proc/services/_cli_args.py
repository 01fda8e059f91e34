"""The ``anyio-proc`` command line: its parser, and the checks of its numbers.

Numbers are checked while parsing, so a bad one is a usage error (exit code 2) before
anything starts, never a traceback from deeper down.
"""

from __future__ import annotations

import argparse
import math

from ._policy import RestartPolicy

__all__ = ["BACKENDS", "PROG", "build_parser", "parse_port"]

PROG = "anyio-proc"
BACKENDS = ("asyncio", "uvloop", "trio")
_ENV_HELP = "env file(s) (default: .env beside the Procfile, if any)"


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


def parse_port(text: str) -> int:
    """A TCP port number, 1-65535; ``argparse.ArgumentTypeError`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the processes of a Procfile, or ad-hoc commands, together.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    start = sub.add_parser(
        "start",
        help="run the processes of a Procfile",
        description="Run the processes of a Procfile; when one ends, stop the others.",
    )
    _start_arguments(start)
    run = sub.add_parser(
        "run",
        help="run shell commands side by side",
        description="Run shell commands side by side until all have ended.",
    )
    _run_arguments(run)
    check = sub.add_parser(
        "check",
        help="validate a Procfile and env file",
        description="Check a Procfile and its env file; report every problem as file:line.",
    )
    _file_arguments(check)
    return parser


def _start_arguments(start: argparse.ArgumentParser) -> None:
    _file_arguments(start)
    start.add_argument("-d", "--root", help="working directory (default: the Procfile's)")
    start.add_argument(
        "-p",
        "--port",
        type=parse_port,
        help="base of $PORT: each process gets PORT=base+100*index (default: $PORT or 5000)",
    )
    _running_arguments(start)
    start.add_argument("services", nargs="*", metavar="SERVICE", help="default: all")


def _run_arguments(run: argparse.ArgumentParser) -> None:
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
    run.add_argument(
        "-H",
        "--host",
        action="append",
        default=[],
        dest="hosts",
        metavar="HOST",
        help="run the commands on HOST over ssh instead (repeat: every host at once); the "
        "exit code has bit i set when the i-th host failed",
    )
    run.add_argument("--ssh-config", metavar="FILE", help="the ssh config file for -H (ssh -F)")
    _running_arguments(run)
    run.add_argument("commands", nargs="+", metavar="COMMAND")


def _file_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--procfile", default="Procfile", help="default: ./Procfile")
    p.add_argument("-e", "--env", action="append", default=[], metavar="FILE", help=_ENV_HELP)


def _running_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run services (start, run)."""
    _restart_arguments(p)
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


def _restart_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--restart",
        choices=[policy.value for policy in RestartPolicy],
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
