"""Procfile parsing for the ``anyio-proc`` command.

A Procfile is what foreman, honcho and overmind read: one ``name: command`` per line, blank
lines and ``#`` comments ignored. Readiness is written in comments the other runners ignore,
so the same file still works with them::

    #@ready web=port:8000        # web is ready when 127.0.0.1:8000 accepts a connection
    #@ready worker=re:^ready$    # worker is ready when it prints a line matching the regex
    web: python3 -m http.server 8000

Every problem is reported with its file and line, all of them at once, so ``anyio-proc
check`` can list them and ``start`` can refuse to run a half-valid file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._config import ConfigError, Problem, read_config_file

__all__ = [
    "ProcessEntry",
    "Procfile",
    "ReadySpec",
    "parse_procfile",
    "parse_ready",
    "read_procfile",
]

# foreman's rule for names, so a Procfile valid here is valid there.
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LINE = re.compile(r"^([^:#\s][^:]*?)\s*:(.*)$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class ReadySpec:
    """How a service shows it is ready: ``kind`` is ``"port"`` or ``"regex"``.

    A port spec keeps its text (``"$PORT"``, ``"8000"``) until the service's environment is
    known; :meth:`port_number` resolves it.
    """

    kind: str
    value: str

    def port_number(self, env: dict[str, str]) -> int:
        """The TCP port, with ``$VAR``/``${VAR}`` taken from ``env``; ``ValueError`` if bad."""

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in env:
                raise ValueError(f"${name} is not set")
            return env[name]

        text = _VAR.sub(lookup, self.value)
        try:
            port = int(text)
        except ValueError:
            raise ValueError(f"port {text!r} is not a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range (1-65535)")
        return port

    def __str__(self) -> str:
        return f"port:{self.value}" if self.kind == "port" else f"re:{self.value}"


def parse_ready(text: str) -> ReadySpec:
    """Parse the value of ``--ready name=SPEC`` or ``#@ready name=SPEC``.

    ``port`` (the service's ``$PORT``), ``port:N`` or ``port:$VAR`` wait for a TCP port to
    accept; ``re:PATTERN`` or any other text is a regular expression searched in each output
    line. Raises ``ValueError`` with the reason.
    """
    if text == "port":
        return ReadySpec("port", "$PORT")
    if text.startswith("port:"):
        value = text[len("port:") :].strip()
        if not value:
            raise ValueError("'port:' needs a port number or $VARIABLE")
        if not _VAR.fullmatch(value):
            ReadySpec("port", value).port_number({})  # a literal: check it now
        return ReadySpec("port", value)
    pattern = text[len("re:") :] if text.startswith("re:") else text
    if not pattern:
        raise ValueError("empty readiness pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
    return ReadySpec("regex", pattern)


@dataclass(frozen=True)
class ProcessEntry:
    """One ``name: command`` line of a Procfile."""

    name: str
    command: str
    line: int


@dataclass
class Procfile:
    """A parsed Procfile: its entries in order, and the readiness given to some."""

    path: str
    processes: list[ProcessEntry] = field(default_factory=list)
    ready: dict[str, ReadySpec] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.processes]


def parse_procfile(text: str, path: str = "Procfile") -> Procfile:
    """Parse Procfile text; raise :class:`ConfigError` listing every problem."""
    reader = _ProcfileReader(path)
    for number, raw in enumerate(text.splitlines(), start=1):
        reader.read_line(number, raw.strip())
    return reader.result()


class _ProcfileReader:
    """Reads a Procfile line by line, collecting entries, readiness and problems."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procfile = Procfile(path)
        self.problems: list[Problem] = []
        self.first_line: dict[str, int] = {}
        self.ready_lines: list[tuple[int, str, ReadySpec]] = []

    def problem(self, number: int, message: str) -> None:
        self.problems.append(Problem(self.path, number, message))

    def read_line(self, number: int, line: str) -> None:
        if line.startswith("#@"):
            self.read_directive(number, line)
        elif line and not line.startswith("#"):
            self.read_entry(number, line)

    def read_directive(self, number: int, line: str) -> None:
        directive, _, rest = line[2:].partition(" ")
        if directive != "ready":
            self.problem(number, f"unknown directive '#@{directive}' (known: #@ready)")
            return
        name, eq, spec_text = rest.strip().partition("=")
        name = name.strip()
        if not eq or not name:
            self.problem(number, "expected '#@ready name=SPEC'")
            return
        try:
            # Checked against the entries at the end: a directive may come before its entry.
            self.ready_lines.append((number, name, parse_ready(spec_text.strip())))
        except ValueError as exc:
            self.problem(number, f"readiness of {name!r}: {exc}")

    def read_entry(self, number: int, line: str) -> None:
        match = _LINE.match(line)
        if match is None:
            self.problem(number, f"expected 'name: command', got {line!r}")
            return
        name, command = match.group(1), match.group(2).strip()
        if not _NAME.fullmatch(name):
            self.problem(number, f"bad process name {name!r}: use letters, digits, '_' and '-'")
            return
        if name in self.first_line:
            first = self.first_line[name]
            self.problem(number, f"duplicate process name {name!r} (first defined on line {first})")
            return
        self.first_line[name] = number
        if not command:
            self.problem(number, f"process {name!r} has an empty command")
            return
        self.procfile.processes.append(ProcessEntry(name, command, number))

    def result(self) -> Procfile:
        for number, name, spec in self.ready_lines:
            if name not in self.first_line:
                self.problem(number, f"#@ready names unknown process {name!r}")
            elif name in self.procfile.ready:
                self.problem(number, f"readiness of {name!r} given twice")
            else:
                self.procfile.ready[name] = spec
        if not self.problems and not self.procfile.processes:
            self.problem(0, "no processes defined")
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda p: p.line))
        return self.procfile


def read_procfile(path: str) -> Procfile:
    return parse_procfile(read_config_file(path, "Procfile"), path)
