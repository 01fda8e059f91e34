"""``.env`` files: ``KEY=value`` lines, read as foreman and python-dotenv read them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ._config import ConfigError, Problem, read_config_file

__all__ = ["EnvFile", "default_env_path", "parse_env", "read_env"]

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    return parse_env(read_config_file(path, "env file"), path)


def default_env_path(procfile: str) -> str:
    """The ``.env`` beside the Procfile, which foreman reads when no ``-e`` is given."""
    return os.path.join(os.path.dirname(os.path.abspath(procfile)), ".env")
