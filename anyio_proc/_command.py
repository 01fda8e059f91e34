"""``Command``, the immutable builder users see, over the frozen :class:`Spec`; ``spawn()``.

This is the top of the core: ``Command``'s ``spawn``/``status``/``output`` and ``|`` call
down into ``_spawn``, ``_run`` and ``_pipeline``, which take commands as
:class:`~anyio_proc._spec.Specified` values and never import this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, overload

from anyio import TASK_STATUS_IGNORED

from ._os.pdeathsig import check_supported as check_die_with_parent
from ._os.pty import check_size
from ._os.shell import shell_argv
from ._pipeline import Pipeline, PipelineChild, spawn_pipeline
from ._run import run_output, run_status
from ._spawn import SpawnContext, spawn_spec
from ._spec import (
    SIGTERM,
    Spec,
    Specified,
    Stdio,
    StdioArg,
    StrOrBytesPath,
    check_fd,
    check_id,
    env_name,
    env_value,
    path_arg,
    respecified,
    signal_number,
    spec_of,
    stdio_arg,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus
    from typing_extensions import Self

    from ._child import Child
    from ._status import ExitStatus, Output

__all__ = ["Command", "spawn"]


class Command(Specified):
    """An immutable description of a process to start.

    Every builder method returns a new ``Command``, so one can be reused, extended and
    shared between tasks. Arguments are checked when they are given: bad input raises
    :class:`ValueError` or :class:`TypeError` before any process exists. Nothing is ever
    run through a shell unless :meth:`Command.shell` built it.

    By default the child inherits the parent's stdin, stdout and stderr.
    """

    __slots__ = ()

    def __init__(self, program: StrOrBytesPath, *args: StrOrBytesPath) -> None:
        program = path_arg(program, "program")
        if not os.fspath(program):
            raise ValueError("program must not be empty")
        super().__init__(Spec(program, tuple(path_arg(a, "argument") for a in args)))

    @classmethod
    def shell(cls, line: str) -> Command:
        """A command line for the system shell: ``/bin/sh -c line`` (``cmd.exe /c`` on Windows).

        Only this constructor involves a shell; quote untrusted input with
        :func:`shlex.quote`.
        """
        if not isinstance(line, str):
            raise TypeError(f"a shell line must be a str, not {type(line).__name__}")
        program, *args = shell_argv(line)
        return cls(program, *args)._with(shell=True)

    def _with(self, **changes: Any) -> Command:
        return respecified(self, replace(spec_of(self), **changes))

    # -- what it runs ------------------------------------------------------------------

    @property
    def program(self) -> StrOrBytesPath:
        return spec_of(self).program

    @property
    def argv(self) -> tuple[str, ...]:
        """Program and arguments as strings, for display and error messages."""
        return spec_of(self).argv

    def arg(self, arg: StrOrBytesPath) -> Command:
        """Append one argument."""
        return self._with(args=(*spec_of(self).args, path_arg(arg, "argument")))

    def args(self, args: Iterable[StrOrBytesPath]) -> Command:
        """Append arguments."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args() takes an iterable of arguments; use arg() for one string")
        return self._with(args=(*spec_of(self).args, *(path_arg(a, "argument") for a in args)))

    def arg0(self, name: StrOrBytesPath) -> Command:
        """Unix: the name the program sees as ``argv[0]``, instead of the program path."""
        return self._with(arg0=path_arg(name, "arg0"))

    # -- environment and directory -----------------------------------------------------

    def env(self, key: str, value: str) -> Command:
        """Set one environment variable, over the parent's environment unless cleared."""
        key = env_name(key)
        return self._with(env=(*spec_of(self).env, (key, env_value(key, value))))

    def envs(self, mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Command:
        """Set several environment variables."""
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        checked = tuple((k, env_value(k, v)) for k, v in ((env_name(k), v) for k, v in items))
        return self._with(env=(*spec_of(self).env, *checked))

    def env_remove(self, key: str) -> Command:
        """Remove a variable, whether inherited or set earlier on this command."""
        return self._with(env=(*spec_of(self).env, (env_name(key), None)))

    def env_clear(self) -> Command:
        """Start from an empty environment: nothing of the parent's, nor of earlier calls."""
        return self._with(env_clear=True, env=())

    def current_dir(self, path: StrOrBytesPath) -> Command:
        """The child's working directory. A relative program path is resolved from it."""
        return self._with(cwd=path_arg(path, "current_dir"))

    # -- stdio ---------------------------------------------------------------------------

    def stdin(self, stdio: StdioArg) -> Command:
        return self._with(stdin=stdio_arg(stdio, "stdin"))

    def stdout(self, stdio: StdioArg) -> Command:
        return self._with(stdout=stdio_arg(stdio, "stdout"))

    def stderr(self, stdio: StdioArg) -> Command:
        return self._with(stderr=stdio_arg(stdio, "stderr"))

    def stdin_piped(self) -> Command:
        return self._with(stdin=Stdio.PIPE)

    def stdout_piped(self) -> Command:
        return self._with(stdout=Stdio.PIPE)

    def stderr_piped(self) -> Command:
        return self._with(stderr=Stdio.PIPE)

    # -- lifetime ------------------------------------------------------------------------

    def kill_on_drop(self, flag: bool = True) -> Command:
        """Kill the child (with SIGKILL) if its ``Child`` is garbage-collected while running.

        Either way a collected child is reaped in the background, never left a zombie.
        """
        return self._with(kill_on_drop=bool(flag))

    def shutdown(self, signal: int = SIGTERM, timeout: float = 5.0) -> Command:
        """The exit policy of ``async with spawn(...)``: send ``signal``, wait ``timeout``
        seconds for the child to exit, then SIGKILL."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
        if not 0 <= timeout < math.inf:
            raise ValueError(f"timeout must be finite and >= 0, not {timeout}")
        return self._with(shutdown_signal=signal_number(signal), shutdown_timeout=float(timeout))

    # -- Unix options --------------------------------------------------------------------

    def process_group(self, pgid: int = 0) -> Command:
        """Unix: put the child in process group ``pgid`` (0: a new group it leads).

        When the child leads its group, shutdown and :meth:`Child.kill` signal the whole
        group, which reaches what it started (``sh -c 'a | b'``).
        """
        return self._with(process_group=check_id(pgid, "pgid"))

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
        if flag:
            check_die_with_parent()
        return self._with(die_with_parent=bool(flag))

    def uid(self, uid: int) -> Command:
        """Unix: the user id the child runs as (needs privileges)."""
        return self._with(uid=check_id(uid, "uid"))

    def gid(self, gid: int) -> Command:
        """Unix: the group id the child runs as (needs privileges)."""
        return self._with(gid=check_id(gid, "gid"))

    def groups(self, groups: Iterable[int]) -> Command:
        """Unix: the supplementary groups of the child (needs privileges)."""
        return self._with(groups=tuple(check_id(g, "group") for g in groups))

    def umask(self, mask: int) -> Command:
        """Unix: the child's file-mode creation mask."""
        mask = check_fd(mask, "umask")
        if mask > 0o777:
            raise ValueError(f"umask must be at most 0o777, not {oct(mask)}")
        return self._with(umask=mask)

    def pass_fds(self, fds: Iterable[int]) -> Command:
        """Unix: fds kept open in the child, at the same numbers; every other is closed.

        An entry among 0, 1 and 2 is kept only where that stream is inherited: naming one
        whose stream is set to something else (``pass_fds([0])`` with a piped stdin) raises
        :class:`ValueError` at spawn, before anything starts.
        """
        return self._with(pass_fds=tuple(sorted({check_fd(fd, "pass_fds entry") for fd in fds})))

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
        return self._with(creation_flags=check_fd(flags, "creation_flags"))

    def pty(self, rows: int = 24, cols: int = 80) -> Command:
        """POSIX: run the child on a new pseudo-terminal of ``rows`` x ``cols``.

        stdin, stdout and stderr all go to the terminal, which becomes the child's
        controlling terminal in a session of its own (so Ctrl-C, ``isatty`` and ``stty``
        work as in a terminal window); the ``Child`` exposes the other side as
        :attr:`Child.pty`. ``stdin(Stdio.PTY)`` and the like put single streams on it.
        """
        size = check_size(rows, cols)
        return self._with(stdin=Stdio.PTY, stdout=Stdio.PTY, stderr=Stdio.PTY, pty_size=size)

    # -- running -------------------------------------------------------------------------

    def spawn(self) -> SpawnContext[Child]:
        """Same as ``spawn(self)``: await it, or use it with ``async with``."""
        return spawn_spec(spec_of(self))

    async def status(self, *, task_status: TaskStatus[Child] = TASK_STATUS_IGNORED) -> ExitStatus:
        """Run to completion with stdio inherited (unless set); return the exit status.

        Under ``await tg.start(cmd.status)`` the started value is the running ``Child``.
        With streams on a pseudo-terminal (:meth:`pty`), what the program writes there is
        read and discarded, and end-of-file (Ctrl-D) is typed once if stdin is on it.

        **Cancellation:** the child gets the exit policy (signal, grace, SIGKILL) and is
        reaped before the cancellation propagates.
        """
        return await run_status(spec_of(self), task_status)

    async def output(self, *, task_status: TaskStatus[Child] = TASK_STATUS_IGNORED) -> Output:
        """Run to completion with stdout and stderr captured and stdin null (unless set).

        Does not raise for a failed status: call ``.check()`` on the result.

        With streams on a pseudo-terminal (:meth:`pty`), what the program wrote to the
        terminal (``\\r\\n`` line endings, stdout and stderr merged) is ``stdout``, read
        to the terminal's end of file; ``stderr`` is ``b""`` unless piped. Nothing can be
        typed, so end-of-file (Ctrl-D) is typed once if stdin is on the terminal.

        **Cancellation:** as :meth:`status`; the output read so far is lost.
        """
        return await run_output(spec_of(self), task_status)

    def __repr__(self) -> str:
        return spec_of(self).display()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return spec_of(self) == spec_of(other)

    def __or__(self, other: Command | Pipeline) -> Pipeline:
        """``a | b``: a :class:`Pipeline` joining ``a``'s stdout to ``b``'s stdin."""
        if not isinstance(other, (Command, Pipeline)):
            return NotImplemented
        return Pipeline(self) | other

    def __hash__(self) -> int:
        return hash(spec_of(self))

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


@overload
def spawn(cmd: Pipeline) -> SpawnContext[PipelineChild]: ...
@overload
def spawn(cmd: Command | Sequence[StrOrBytesPath] | StrOrBytesPath) -> SpawnContext[Child]: ...
def spawn(
    cmd: Command | Pipeline | Sequence[StrOrBytesPath] | StrOrBytesPath,
) -> SpawnContext[Child] | SpawnContext[PipelineChild]:
    """Start ``cmd``; use the result with ``async with`` or ``await`` it.

    ``async with spawn(cmd) as child:`` binds the process to the block: leaving it, however
    that happens, applies the exit policy (close stdin, shutdown signal, grace period,
    SIGKILL) and reaps the child. ``child = await spawn(cmd)`` hands ownership to the
    caller, who must ``await child.aclose()`` (or use ``async with child``).

    ``cmd`` is a :class:`Command`, a sequence of program and arguments, or a program name
    (a ``str`` is never a shell line; use :meth:`Command.shell`). A :class:`Pipeline`
    starts all of its processes, or none, and gives a :class:`PipelineChild`.

    Raises :class:`RuntimeError` when called outside a running event loop, the OS error
    (``FileNotFoundError``, ``PermissionError``, ``NotADirectoryError``, ``OSError``) with
    the program named when the process cannot be started, and :class:`ValueError` for stdio
    or ``pass_fds`` that name closed fds. Nothing is left open when it raises.

    **Cancellation:** spawning is not cancellable half-way: a cancellation seen before the
    process exists prevents it; once it exists, the caller gets it (or the block shuts it
    down), so no child is ever orphaned.
    """
    if isinstance(cmd, Pipeline):
        return spawn_pipeline(cmd)
    if isinstance(cmd, Command):
        return spawn_spec(spec_of(cmd))
    if isinstance(cmd, (str, bytes, os.PathLike)):
        return spawn_spec(spec_of(Command(cmd)))
    argv = list(cmd)
    if not argv:
        raise ValueError("cannot spawn an empty argument list")
    return spawn_spec(spec_of(Command(argv[0], *argv[1:])))
