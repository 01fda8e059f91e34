"""Procfile and ``.env`` parsing for the ``anyio-proc`` command.

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

import os
import re
from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "EnvFile",
    "Problem",
    "ProcessEntry",
    "Procfile",
    "ReadySpec",
    "parse_env",
    "parse_procfile",
    "parse_ready",
    "read_env",
    "read_procfile",
]

# foreman's rule for names, so a Procfile valid here is valid there.
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LINE = re.compile(r"^([^:#\s][^:]*?)\s*:(.*)$")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, where it is and what it is."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised when a Procfile, an env file or a readiness spec cannot be used.

    ``problems`` lists every problem found; ``str()`` is the first one (with a count of the
    others), so it fits on one line.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0])
        more = len(problems) - 1
        super().__init__(first + (f" (and {more} more problem(s))" if more else ""))


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
    name: str
    command: str
    line: int


@dataclass
class Procfile:
    path: str
    processes: list[ProcessEntry] = field(default_factory=list)
    ready: dict[str, ReadySpec] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.processes]


def parse_procfile(text: str, path: str = "Procfile") -> Procfile:
    """Parse Procfile text; raise :class:`ConfigError` listing every problem."""
    result = Procfile(path)
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    ready_lines: list[tuple[int, str, ReadySpec]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#@"):
            directive, _, rest = line[2:].partition(" ")
            if directive != "ready":
                problems.append(
                    Problem(path, number, f"unknown directive '#@{directive}' (known: #@ready)")
                )
                continue
            name, eq, spec_text = rest.strip().partition("=")
            name = name.strip()
            if not eq or not name:
                problems.append(Problem(path, number, "expected '#@ready name=SPEC'"))
                continue
            try:
                ready_lines.append((number, name, parse_ready(spec_text.strip())))
            except ValueError as exc:
                problems.append(Problem(path, number, f"readiness of {name!r}: {exc}"))
            continue
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            problems.append(Problem(path, number, f"expected 'name: command', got {line!r}"))
            continue
        name, command = match.group(1), match.group(2).strip()
        if not _NAME.fullmatch(name):
            problems.append(
                Problem(
                    path,
                    number,
                    f"bad process name {name!r}: use letters, digits, '_' and '-'",
                )
            )
            continue
        if name in first_line:
            problems.append(
                Problem(
                    path,
                    number,
                    f"duplicate process name {name!r} (first defined on line {first_line[name]})",
                )
            )
            continue
        first_line[name] = number
        if not command:
            problems.append(Problem(path, number, f"process {name!r} has an empty command"))
            continue
        result.processes.append(ProcessEntry(name, command, number))
    for number, name, spec in ready_lines:
        if name not in first_line:
            problems.append(Problem(path, number, f"#@ready names unknown process {name!r}"))
        elif name in result.ready:
            problems.append(Problem(path, number, f"readiness of {name!r} given twice"))
        else:
            result.ready[name] = spec
    if not problems and not result.processes:
        problems.append(Problem(path, 0, "no processes defined"))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return result


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError([Problem(path, 0, f"{what} not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(path, 0, f"{what} is a directory")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(path, 0, f"{what} is not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(path, 0, exc.strerror or str(exc))]) from None


def read_procfile(path: str) -> Procfile:
    return parse_procfile(_read(path, "Procfile"), path)


@dataclass
class EnvFile:
    path: str
    values: dict[str, str] = field(default_factory=dict)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unquote(value: str) -> tuple[str, str | None]:
    """The value of ``KEY=value``, and an error message or None.

    As foreman and python-dotenv read it: single quotes are literal, double quotes take
    backslash escapes, an unquoted value ends at `` #`` (a comment).
    """
    if value[:1] == "'":
        end = value.find("'", 1)
        if end < 0:
            return "", "unterminated single quote"
        rest = value[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            return "", f"unexpected text after the closing quote: {rest!r}"
        return value[1:end], None
    if value[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(value):
            c = value[i]
            if c == "\\" and i + 1 < len(value):
                out.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
                i += 2
                continue
            if c == '"':
                rest = value[i + 1 :].strip()
                if rest and not rest.startswith("#"):
                    return "", f"unexpected text after the closing quote: {rest!r}"
                return "".join(out), None
            out.append(c)
            i += 1
        return "", "unterminated double quote"
    comment = re.search(r"\s#", value)
    if comment:
        value = value[: comment.start()]
    return value.strip(), None


def parse_env(text: str, path: str = ".env") -> EnvFile:
    """Parse ``KEY=value`` lines (``export`` allowed); raise :class:`ConfigError` if bad.

    Values are taken literally: no ``$VAR`` interpolation, so what the file says is what the
    service gets.
    """
    result = EnvFile(path)
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq:
            problems.append(Problem(path, number, f"expected 'KEY=value', got {line!r}"))
            continue
        if not _ENV_KEY.fullmatch(key):
            problems.append(Problem(path, number, f"bad variable name {key!r}"))
            continue
        parsed, error = _unquote(value.strip())
        if error is not None:
            problems.append(Problem(path, number, f"{key}: {error}"))
            continue
        if "\0" in parsed:
            problems.append(Problem(path, number, f"{key}: NUL character in value"))
            continue
        result.values[key] = parsed
    if problems:
        raise ConfigError(problems)
    return result


def read_env(path: str) -> EnvFile:
    return parse_env(_read(path, "env file"), path)


def default_env_path(procfile: str) -> str:
    """The ``.env`` beside the Procfile, which foreman reads when no ``-e`` is given."""
    return os.path.join(os.path.dirname(os.path.abspath(procfile)), ".env")
