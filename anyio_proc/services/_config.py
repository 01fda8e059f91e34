"""What is wrong with a configuration file, and reading one: shared by the Procfile and
the env file parsers, so that every problem is reported the same way, with its line."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "Problem", "read_config_file"]


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


def read_config_file(path: str, what: str) -> str:
    """The text of ``path``; :class:`ConfigError` (naming it ``what``) if it cannot be read."""
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
