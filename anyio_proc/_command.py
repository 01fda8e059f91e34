"""``Command``, the immutable description of a process to start, and ``Stdio``."""

from __future__ import annotations

import enum
import math
import os
import signal as _signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, Union

from anyio import TASK_STATUS_IGNORED

if TYPE_CHECKING:
    from typing import TypeAlias

    from anyio.abc import TaskStatus
    from typing_extensions import Self

    from ._child import Child
    from ._pipeline import Pipeline
    from ._spawn import SpawnContext
    from ._status import ExitStatus, Output

__all__ = ["Command", "Stdio", "StdioArg", "StrOrBytesPath"]

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

_MAX_ID = 2**32 - 1  # uid_t / gid_t
_SIGTERM = int(getattr(_signal, "SIGTERM", 15))


def _check_no_nul(value: str | bytes, what: str) -> None:
    if (value.find("\0") if isinstance(value, str) else value.find(b"\0")) >= 0:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")


def _path_arg(value: object, what: str) -> StrOrBytesPath:
    if isinstance(value, os.PathLike):
        raw = os.fspath(value)
        if not isinstance(raw, (str, bytes)):
            raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
        _check_no_nul(raw, what)
        return value
    if isinstance(value, (str, bytes)):
        _check_no_nul(value, what)
        return value
    raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")


def _env_name(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"environment variable names must be str, not {type(key).__name__}")
    if not key or "=" in key:
        raise ValueError(f"illegal environment variable name {key!r}")
    _check_no_nul(key, "environment variable name")
    return key


def _env_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"environment variable {key!r} must be a str, not {type(value).__name__}")
    _check_no_nul(value, f"environment variable {key!r}")
    return value


def _id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_ID:
        raise ValueError(f"{what} must be between 0 and {_MAX_ID}, not {value}")
    return value


def _fd(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int fd, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be a non-negative fd, not {value}")
    return value


def _stdio(value: object, which: str) -> StdioArg:
    if isinstance(value, Stdio):
        result: StdioArg = value
    elif isinstance(value, bool):
        raise TypeError(f"{which} takes a Stdio value, an fd or a file, not a bool")
    elif isinstance(value, int):
        result = _SUBPROCESS_CONSTANTS.get(value) or _fd(value, which)
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


def _signal_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"signal must be an int or signal.Signals, not {type(value).__name__}")
    if value not in _signal.valid_signals():
        raise ValueError(f"{value} is not a valid signal number here")
    return int(value)


@dataclass(frozen=True)
class _Spec:
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
    shutdown_signal: int = _SIGTERM
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


class Command:
    """An immutable description of a process to start.

    Every builder method returns a new ``Command``, so one can be reused, extended and
    shared between tasks. Arguments are checked when they are given: bad input raises
    :class:`ValueError` or :class:`TypeError` before any process exists. Nothing is ever
    run through a shell unless :meth:`Command.shell` built it.

    By default the child inherits the parent's stdin, stdout and stderr.
    """

    __slots__ = ("_spec",)

    _spec: _Spec

    def __init__(self, program: StrOrBytesPath, *args: StrOrBytesPath) -> None:
        program = _path_arg(program, "program")
        if not os.fspath(program):
            raise ValueError("program must not be empty")
        self._spec = _Spec(program, tuple(_path_arg(a, "argument") for a in args))

    @classmethod
    def shell(cls, line: str) -> Command:
        """A command line for the system shell: ``/bin/sh -c line`` (``cmd.exe /c`` on Windows).

        Only this constructor involves a shell; quote untrusted input with
        :func:`shlex.quote`.
        """
        if not isinstance(line, str):
            raise TypeError(f"a shell line must be a str, not {type(line).__name__}")
        if sys.platform == "win32":
            cmd = cls(os.environ.get("COMSPEC", "cmd.exe"), "/c", line)
        else:
            cmd = cls("/bin/sh", "-c", line)
        return cmd._with(shell=True)

    @classmethod
    def _from_spec(cls, spec: _Spec) -> Command:
        self = cls.__new__(cls)
        self._spec = spec
        return self

    def _with(self, **changes: Any) -> Command:
        return Command._from_spec(replace(self._spec, **changes))

    # -- what it runs ------------------------------------------------------------------

    @property
    def program(self) -> StrOrBytesPath:
        return self._spec.program

    @property
    def argv(self) -> tuple[str, ...]:
        """Program and arguments as strings, for display and error messages."""
        spec = self._spec
        return tuple(os.fsdecode(a) for a in (spec.program, *spec.args))

    def arg(self, arg: StrOrBytesPath) -> Command:
        """Append one argument."""
        return self._with(args=(*self._spec.args, _path_arg(arg, "argument")))

    def args(self, args: Iterable[StrOrBytesPath]) -> Command:
        """Append arguments."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args() takes an iterable of arguments; use arg() for one string")
        return self._with(args=(*self._spec.args, *(_path_arg(a, "argument") for a in args)))

    def arg0(self, name: StrOrBytesPath) -> Command:
        """Unix: the name the program sees as ``argv[0]``, instead of the program path."""
        return self._with(arg0=_path_arg(name, "arg0"))

    # -- environment and directory -----------------------------------------------------

    def env(self, key: str, value: str) -> Command:
        """Set one environment variable, over the parent's environment unless cleared."""
        key = _env_name(key)
        return self._with(env=(*self._spec.env, (key, _env_value(key, value))))

    def envs(self, mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Command:
        """Set several environment variables."""
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        checked = tuple((k, _env_value(k, v)) for k, v in ((_env_name(k), v) for k, v in items))
        return self._with(env=(*self._spec.env, *checked))

    def env_remove(self, key: str) -> Command:
        """Remove a variable, whether inherited or set earlier on this command."""
        return self._with(env=(*self._spec.env, (_env_name(key), None)))

    def env_clear(self) -> Command:
        """Start from an empty environment: nothing of the parent's, nor of earlier calls."""
        return self._with(env_clear=True, env=())

    def current_dir(self, path: StrOrBytesPath) -> Command:
        """The child's working directory. A relative program path is resolved from it."""
        return self._with(cwd=_path_arg(path, "current_dir"))

    def _environment(self) -> dict[str, str] | None:
        """The child's environment, or None to inherit the parent's unchanged."""
        spec = self._spec
        if not spec.env_clear and not spec.env:
            return None
        env = {} if spec.env_clear else dict(os.environ)
        for key, value in spec.env:
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    # -- stdio ---------------------------------------------------------------------------

    def stdin(self, stdio: StdioArg) -> Command:
        return self._with(stdin=_stdio(stdio, "stdin"))

    def stdout(self, stdio: StdioArg) -> Command:
        return self._with(stdout=_stdio(stdio, "stdout"))

    def stderr(self, stdio: StdioArg) -> Command:
        return self._with(stderr=_stdio(stdio, "stderr"))

    def stdin_piped(self) -> Command:
        return self._with(stdin=Stdio.PIPE)

    def stdout_piped(self) -> Command:
        return self._with(stdout=Stdio.PIPE)

    def stderr_piped(self) -> Command:
        return self._with(stderr=Stdio.PIPE)

    def _stdio_defaults(self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Command:
        """Fill in the stdio that was not set explicitly."""
        spec = self._spec
        return self._with(
            stdin=stdin if spec.stdin is None else spec.stdin,
            stdout=stdout if spec.stdout is None else spec.stdout,
            stderr=stderr if spec.stderr is None else spec.stderr,
        )

    # -- lifetime ------------------------------------------------------------------------

    def kill_on_drop(self, flag: bool = True) -> Command:
        """Kill the child (with SIGKILL) if its ``Child`` is garbage-collected while running.

        Either way a collected child is reaped in the background, never left a zombie.
        """
        return self._with(kill_on_drop=bool(flag))

    def shutdown(self, signal: int = _SIGTERM, timeout: float = 5.0) -> Command:
        """The exit policy of ``async with spawn(...)``: send ``signal``, wait ``timeout``
        seconds for the child to exit, then SIGKILL."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
        if not 0 <= timeout < math.inf:
            raise ValueError(f"timeout must be finite and >= 0, not {timeout}")
        return self._with(shutdown_signal=_signal_number(signal), shutdown_timeout=float(timeout))

    # -- Unix options --------------------------------------------------------------------

    def process_group(self, pgid: int = 0) -> Command:
        """Unix: put the child in process group ``pgid`` (0: a new group it leads).

        When the child leads its group, shutdown and :meth:`Child.kill` signal the whole
        group, which reaches what it started (``sh -c 'a | b'``).
        """
        return self._with(process_group=_id(pgid, "pgid"))

    def new_session(self) -> Command:
        """Unix: run the child in a new session (``setsid``), leading its own group."""
        return self._with(new_session=True)

    def kill_tree(self, flag: bool = True) -> Command:
        """Shutdown and :meth:`Child.kill` also reach descendants that left the group.

        Before signalling, the child's tree is frozen (SIGSTOP, level by level) and walked
        through ``/proc``, so a grandchild that called ``setsid`` or ignores the shutdown
        signal is signalled too, then SIGKILLed with the rest after the grace period. A
        process already re-parented before the walk (a daemon whose middle process exited)
        is no longer a descendant and escapes. ``kill_on_drop`` still kills the child
        only. Linux only; elsewhere it degrades to signalling the child, or its group.
        """
        return self._with(kill_tree=bool(flag))

    def die_with_parent(self, flag: bool = True) -> Command:
        """Linux: the child gets SIGKILL if this process dies, even by SIGKILL.

        Uses ``prctl(PR_SET_PDEATHSIG)`` in a pre-exec step, so the spawn takes the slower
        ``fork`` path instead of ``posix_spawn``. The signal is tied to the thread that
        forks: spawns from a thread other than the main one are handed to a thread that
        outlives the child. It is armed after ``uid()``/``gid()`` take effect; an exec of a
        set-user-ID program, or a later change of credentials by the child, clears it.

        Raises :class:`ValueError` here, at the builder, on systems other than Linux.
        """
        from ._os.tree import PARENT_DEATH_SIGNAL

        if flag and not PARENT_DEATH_SIGNAL:
            raise ValueError(
                f"die_with_parent() needs Linux (prctl PR_SET_PDEATHSIG), not {sys.platform}"
            )
        return self._with(die_with_parent=bool(flag))

    def uid(self, uid: int) -> Command:
        """Unix: the user id the child runs as (needs privileges)."""
        return self._with(uid=_id(uid, "uid"))

    def gid(self, gid: int) -> Command:
        """Unix: the group id the child runs as (needs privileges)."""
        return self._with(gid=_id(gid, "gid"))

    def groups(self, groups: Iterable[int]) -> Command:
        """Unix: the supplementary groups of the child (needs privileges)."""
        return self._with(groups=tuple(_id(g, "group") for g in groups))

    def umask(self, mask: int) -> Command:
        """Unix: the child's file-mode creation mask."""
        mask = _fd(mask, "umask")
        if mask > 0o777:
            raise ValueError(f"umask must be at most 0o777, not {oct(mask)}")
        return self._with(umask=mask)

    def pass_fds(self, fds: Iterable[int]) -> Command:
        """Unix: fds kept open in the child, at the same numbers; every other is closed.

        An entry among 0, 1 and 2 is kept only where that stream is inherited: naming one
        whose stream is set to something else (``pass_fds([0])`` with a piped stdin) raises
        :class:`ValueError` at spawn, before anything starts.
        """
        return self._with(pass_fds=tuple(sorted({_fd(fd, "pass_fds entry") for fd in fds})))

    def pre_exec(self, fn: Callable[[], Any]) -> Command:
        """Unix: call ``fn`` in the child between fork and exec.

        Unsafe with threads: if another thread held a lock (the GIL's helpers, logging,
        malloc) at fork time, ``fn`` can deadlock the child. Prefer the dedicated options.
        """
        if not callable(fn):
            raise TypeError(f"pre_exec takes a callable, not {type(fn).__name__}")
        return self._with(pre_exec=fn)

    def creation_flags(self, flags: int) -> Command:
        """Windows: process creation flags (``subprocess.CREATE_NEW_PROCESS_GROUP``, ...).

        Elsewhere a non-zero value makes the spawn raise :class:`ValueError`.
        """
        return self._with(creation_flags=_fd(flags, "creation_flags"))

    def pty(self, rows: int = 24, cols: int = 80) -> Command:
        """POSIX: run the child on a new pseudo-terminal of ``rows`` x ``cols``.

        stdin, stdout and stderr all go to the terminal, which becomes the child's
        controlling terminal in a session of its own (so Ctrl-C, ``isatty`` and ``stty``
        work as in a terminal window); the ``Child`` exposes the other side as
        :attr:`Child.pty`. ``stdin(Stdio.PTY)`` and the like put single streams on it.
        """
        from ._pty import check_size

        size = check_size(rows, cols)
        return self._with(stdin=Stdio.PTY, stdout=Stdio.PTY, stderr=Stdio.PTY, pty_size=size)

    # -- running -------------------------------------------------------------------------

    def spawn(self) -> SpawnContext[Child]:
        """Same as ``spawn(self)``: await it, or use it with ``async with``."""
        from ._spawn import spawn

        return spawn(self)

    async def status(self, *, task_status: TaskStatus[Child] = TASK_STATUS_IGNORED) -> ExitStatus:
        """Run to completion with stdio inherited (unless set); return the exit status.

        Under ``await tg.start(cmd.status)`` the started value is the running ``Child``.
        With streams on a pseudo-terminal (:meth:`pty`), what the program writes there is
        read and discarded, and end-of-file (Ctrl-D) is typed once if stdin is on it.

        **Cancellation:** the child gets the exit policy (signal, grace, SIGKILL) and is
        reaped before the cancellation propagates.
        """
        from ._spawn import spawn

        async with spawn(self) as child:
            task_status.started(child)
            if child.pty is not None:
                from ._pty import status_with_terminal

                return await status_with_terminal(child, self._spec.stdin is Stdio.PTY)
            return await child.wait()

    async def output(self, *, task_status: TaskStatus[Child] = TASK_STATUS_IGNORED) -> Output:
        """Run to completion with stdout and stderr captured and stdin null (unless set).

        Does not raise for a failed status: call ``.check()`` on the result.

        With streams on a pseudo-terminal (:meth:`pty`), what the program wrote to the
        terminal (``\\r\\n`` line endings, stdout and stderr merged) is ``stdout``, read
        to the terminal's end of file; ``stderr`` is ``b""`` unless piped. Nothing can be
        typed, so end-of-file (Ctrl-D) is typed once if stdin is on the terminal.

        **Cancellation:** as :meth:`status`; the output read so far is lost.
        """
        from ._spawn import spawn

        cmd = self._stdio_defaults(Stdio.NULL, Stdio.PIPE, Stdio.PIPE)
        async with spawn(cmd) as child:
            task_status.started(child)
            if child.pty is not None:
                from ._pty import output_with_terminal

                spec = cmd._spec
                on_terminal = (
                    spec.stdin is Stdio.PTY,
                    spec.stdout is Stdio.PTY,
                    spec.stderr is Stdio.PTY,
                )
                return await output_with_terminal(child, on_terminal)
            return await child.wait_with_output()

    def __repr__(self) -> str:
        spec = self._spec
        if spec.shell:
            return f"Command.shell({os.fsdecode(spec.args[-1])!r})"
        return "Command(" + ", ".join(repr(a) for a in self.argv) + ")"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return self._spec == other._spec

    def __or__(self, other: Command | Pipeline) -> Pipeline:
        """``a | b``: a :class:`Pipeline` joining ``a``'s stdout to ``b``'s stdin."""
        from ._pipeline import Pipeline

        if not isinstance(other, (Command, Pipeline)):
            return NotImplemented
        return Pipeline(self) | other

    def __hash__(self) -> int:
        return hash(self._spec)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self
