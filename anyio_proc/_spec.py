"""The frozen description of a command (:class:`Spec`), ``Stdio``, and the validators.

Values only: nothing here starts, opens or signals anything. ``Command`` (``_command.py``)
is the immutable builder users see; it validates each argument with the functions here as
it is given, so bad input fails at the builder, long before a spawn.
"""

from __future__ import annotations

import enum
import os
import signal as _signal
import subprocess
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

__all__ = [
    "MAX_ID",
    "SIGTERM",
    "Spec",
    "Specified",
    "Stdio",
    "StdioArg",
    "StrOrBytesPath",
    "SupportsFileno",
    "check_fd",
    "check_id",
    "check_no_nul",
    "env_name",
    "env_value",
    "path_arg",
    "respecified",
    "signal_number",
    "spec_of",
    "stdio_arg",
]

StrOrBytesPath: TypeAlias = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class Stdio(enum.Enum):
    """Where a child's standard stream goes, besides an fd or a file."""

    #: A new pipe; the ``Child`` gets our end as ``stdin``/``stdout``/``stderr``.
    PIPE = "pipe"
    #: The parent's own stream (the default for :func:`spawn`).
    INHERIT = "inherit"
    #: ``/dev/null`` (``NUL`` on Windows).
    NULL = "null"
    #: Only for stderr: the same place as stdout.
    STDOUT = "stdout"
    #: POSIX: a pseudo-terminal shared by every stream set to it, the child's controlling
    #: terminal; the ``Child`` gets the other side as ``child.pty`` (see :meth:`Command.pty`).
    PTY = "pty"

    def __repr__(self) -> str:
        return f"Stdio.{self.name}"


class SupportsFileno(Protocol):
    def fileno(self) -> int: ...


#: What ``Command.stdin()``/``stdout()``/``stderr()`` accept: a :class:`Stdio` value, the
#: ``subprocess`` constants ``PIPE``/``DEVNULL``/``STDOUT``, an fd, or an object with
#: ``fileno()`` (an open file, or another ``Child``'s pipe stream to chain processes).
StdioArg: TypeAlias = Stdio | int | SupportsFileno

_SUBPROCESS_CONSTANTS = {
    subprocess.PIPE: Stdio.PIPE,
    subprocess.DEVNULL: Stdio.NULL,
    subprocess.STDOUT: Stdio.STDOUT,
}

MAX_ID = 2**32 - 1  # uid_t / gid_t
SIGTERM = int(getattr(_signal, "SIGTERM", 15))


def check_no_nul(value: str | bytes, what: str) -> None:
    if (value.find("\0") if isinstance(value, str) else value.find(b"\0")) >= 0:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")


def path_arg(value: object, what: str) -> StrOrBytesPath:
    if isinstance(value, os.PathLike):
        raw = os.fspath(value)
        if not isinstance(raw, (str, bytes)):
            raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
        check_no_nul(raw, what)
        return value
    if isinstance(value, (str, bytes)):
        check_no_nul(value, what)
        return value
    raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")


def env_name(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"environment variable names must be str, not {type(key).__name__}")
    if not key or "=" in key:
        raise ValueError(f"illegal environment variable name {key!r}")
    check_no_nul(key, "environment variable name")
    return key


def env_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"environment variable {key!r} must be a str, not {type(value).__name__}")
    check_no_nul(value, f"environment variable {key!r}")
    return value


def check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be between 0 and {MAX_ID}, not {value}")
    return value


def check_fd(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int fd, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be a non-negative fd, not {value}")
    return value


def stdio_arg(value: object, which: str) -> StdioArg:
    if isinstance(value, Stdio):
        result: StdioArg = value
    elif isinstance(value, bool):
        raise TypeError(f"{which} takes a Stdio value, an fd or a file, not a bool")
    elif isinstance(value, int):
        result = _SUBPROCESS_CONSTANTS.get(value) or check_fd(value, which)
    elif callable(getattr(value, "fileno", None)):
        result = value  # type: ignore[assignment]
    else:
        raise TypeError(
            f"{which} takes a Stdio value, an fd or an object with fileno(), "
            f"not {type(value).__name__}"
        )
    if result is Stdio.STDOUT and which != "stderr":
        raise ValueError(f"Stdio.STDOUT is only meaningful for stderr, not {which}")
    return result


def signal_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"signal must be an int or signal.Signals, not {type(value).__name__}")
    if value not in _signal.valid_signals():
        raise ValueError(f"{value} is not a valid signal number here")
    return int(value)


@dataclass(frozen=True)
class Spec:
    """Everything a spawn needs, resolved and validated; never mutated."""

    program: StrOrBytesPath
    args: tuple[StrOrBytesPath, ...] = ()
    env_clear: bool = False
    env: tuple[tuple[str, str | None], ...] = ()
    cwd: StrOrBytesPath | None = None
    stdin: StdioArg | None = None
    stdout: StdioArg | None = None
    stderr: StdioArg | None = None
    kill_on_drop: bool = False
    shutdown_signal: int = SIGTERM
    shutdown_timeout: float = 5.0
    process_group: int | None = None
    new_session: bool = False
    kill_tree: bool = False
    die_with_parent: bool = False
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    umask: int | None = None
    pass_fds: tuple[int, ...] = ()
    arg0: StrOrBytesPath | None = None
    pre_exec: Callable[[], Any] | None = field(default=None, compare=False)
    creation_flags: int = 0
    startupinfo: Any = field(default=None, compare=False)  # open_process() passes it on
    shell: bool = False
    pty_size: tuple[int, int] | None = None  # (rows, cols) for the Stdio.PTY streams

    @cached_property  # once per Spec, not per spawn (frozen: cached in its __dict__)
    def argv(self) -> tuple[str, ...]:
        """Program and arguments as strings, for display and error messages."""
        return tuple(os.fsdecode(a) for a in (self.program, *self.args))

    def display(self) -> str:
        """How ``Command`` shows itself: as the code that would build it."""
        if self.shell:
            return f"Command.shell({os.fsdecode(self.args[-1])!r})"
        return "Command(" + ", ".join(repr(a) for a in self.argv) + ")"

    def with_stdio_defaults(self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Spec:
        """The same, with the streams that were not set explicitly set to these."""
        return replace(
            self,
            stdin=stdin if self.stdin is None else self.stdin,
            stdout=stdout if self.stdout is None else self.stdout,
            stderr=stderr if self.stderr is None else self.stderr,
        )

    def environment(self) -> dict[str, str] | None:
        """The child's environment, or None to inherit the parent's unchanged."""
        if not self.env_clear and not self.env:
            return None
        env = {} if self.env_clear else dict(os.environ)
        for key, value in self.env:
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


class Specified:
    """Base of the immutable builders that carry a :class:`Spec` (``Command``).

    The layers below the builder (spawn, pipelines) take commands through this base and
    :func:`spec_of` / :func:`respecified`, so they never import the builder itself.
    """

    __slots__ = ("_spec",)

    _spec: Spec

    def __init__(self, spec: Spec) -> None:
        self._spec = spec


_S = TypeVar("_S", bound=Specified)


def spec_of(builder: Specified) -> Spec:
    """What ``builder`` describes."""
    return builder._spec


def respecified(builder: _S, spec: Spec) -> _S:
    """A builder of the same class as ``builder``, describing ``spec``."""
    new = object.__new__(type(builder))
    Specified.__init__(new, spec)
    return new
