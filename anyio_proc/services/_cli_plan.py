"""From the command line to the services to run: names, commands, environments, readiness.

Everything here is checked before anything starts: a bad file, an unknown service or a bad
``--ready`` is a :class:`ConfigError` or :class:`UsageError`, one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._cli_args import parse_port
from ._config import ConfigError, Problem
from ._envfile import default_env_path, read_env
from ._procfile import ReadySpec, parse_ready, read_procfile
from ._ready import ReadyLine, ReadyPort

if TYPE_CHECKING:
    from ._ready import ReadyCheck

__all__ = ["ServiceSpec", "UsageError", "plan_run", "plan_start", "read_env_files"]


class UsageError(Exception):
    """Raised when the command line itself is wrong (unknown service, bad --ready...)."""


@dataclass
class ServiceSpec:
    """One service to run: its name, shell command line, environment and readiness."""

    name: str
    command: str
    env: dict[str, str]
    ready: ReadyCheck | None


def read_env_files(paths: list[str], procfile: str | None) -> dict[str, str]:
    """The variables of the env files (by default the ``.env`` beside ``procfile``)."""
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


def _resolve_ready(name: str, spec: ReadySpec | None, env: dict[str, str]) -> ReadyCheck | None:
    """The check for a readiness spec, its port variables taken from the service's env."""
    if spec is None:
        return None
    try:
        if spec.kind == "port":
            return ReadyPort(spec.port_number({**os.environ, **env}))
        return ReadyLine(spec.value)
    except ValueError as exc:
        raise UsageError(f"readiness of {name!r}: {exc}") from None


def _base_port(args: argparse.Namespace, dotenv: dict[str, str]) -> int:
    if args.port is not None:
        port: int = args.port
        return port
    text = dotenv.get("PORT", os.environ.get("PORT", "5000"))
    try:
        return parse_port(text)
    except argparse.ArgumentTypeError:
        raise UsageError(f"PORT={text!r} is not a port number (1-65535)") from None


def plan_start(args: argparse.Namespace) -> tuple[list[ServiceSpec], str]:
    """The services of ``anyio-proc start``, and the directory to run them in."""
    procfile = read_procfile(args.procfile)
    dotenv = read_env_files(args.env, args.procfile)
    unknown = [s for s in args.services if s not in procfile.names]
    if unknown:
        raise UsageError(
            f"no process named {unknown[0]!r} in {args.procfile} "
            f"(it has: {', '.join(procfile.names)})"
        )
    ready = {**procfile.ready, **_ready_flags(args.ready, procfile.names)}
    base = _base_port(args, dotenv)
    specs = []
    for index, entry in enumerate(procfile.processes):
        if args.services and entry.name not in args.services:
            continue
        env = _service_env(dotenv, {"PORT": str(base + 100 * index)})
        check = _resolve_ready(entry.name, ready.get(entry.name), env)
        specs.append(ServiceSpec(entry.name, entry.command, env, check))
    root = args.root or os.path.dirname(os.path.abspath(args.procfile))
    return specs, root


def _run_names(args: argparse.Namespace, commands: list[str]) -> list[str]:
    """The names of ``anyio-proc run``'s commands: ``--names``, or their programs'."""
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(commands):
            raise UsageError(f"--names gives {len(names)} name(s) for {len(commands)} command(s)")
        if len(set(names)) != len(names) or not all(names):
            raise UsageError("--names must be distinct and not empty")
        return names
    names = []
    for command in commands:
        base = os.path.basename(command.split()[0])
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def plan_run(args: argparse.Namespace) -> list[ServiceSpec]:
    """The services of ``anyio-proc run``."""
    commands: list[str] = args.commands
    if any(not c.strip() for c in commands):
        raise UsageError("empty command")
    names = _run_names(args, commands)
    dotenv = read_env_files(args.env, None)
    ready = _ready_flags(args.ready, names)
    env = _service_env(dotenv, {})
    return [
        ServiceSpec(name, command, env, _resolve_ready(name, ready.get(name), env))
        for name, command in zip(names, commands, strict=True)
    ]
