"""The launch path for every command: ``subprocess.Popen``, with our own ownership rules.

Used for what ``posix_spawn`` cannot do (a working directory, ids, umask, a pre-exec
hook, ``die_with_parent``, ``pass_fds``), everywhere but Linux, and on Python 3.11 and 3.12
while many fds are open (``posix_spawn.few_fds_to_close``). The child it makes starts as a
``posix_spawn``'d one does: stdio as planned, every other fd closed, no signal blocked,
SIGPIPE and SIGXFSZ at their defaults, and ``os.environ`` when no environment is given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from .launch_records import current_record, lost_child, thread_children, undo_launches
from .pdeathsig import on_long_lived_thread, parent_death_pre_exec
from .stdio_plan import CLOSED, close_all, plan_stdio, reaches_child

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._spec import Spec, StrOrBytesPath

__all__ = ["popen"]

_PY311 = sys.version_info >= (3, 11)


def popen(spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    """Start the command with ``Popen``; return its pid, in the launch record
    (``launch_records.py``) before any Python code runs."""
    stdio, copies = plan_stdio(stdio, spec.pass_fds)
    try:
        return _popen_planned(spec, env, stdio)
    finally:
        close_all(copies)


def _popen_planned(spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    kwargs = _kwargs(spec, env, stdio)
    if sys.platform != "win32":
        # Popen cannot close a std fd in the child; a hook does, when the child would get
        # ours.
        to_close = [target for target, fd in enumerate(stdio) if fd == CLOSED]
        kwargs.update(_posix_kwargs(spec, [fd for fd in to_close if reaches_child(fd, ())]))
    argv: list[StrOrBytesPath] = [spec.program if spec.arg0 is None else spec.arg0]
    argv.extend(spec.args)

    # Taken here: on_long_lived_thread may run create() on another thread.
    record = current_record()

    def create() -> int:
        return _OwnedPopen(record, argv, executable=spec.program, **kwargs).pid

    if spec.die_with_parent:
        # PR_SET_PDEATHSIG fires when the forking *thread* exits: fork on one that lives.
        return on_long_lived_thread(create)
    return create()


def _kwargs(
    spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]
) -> dict[str, Any]:
    """Popen's arguments on every OS."""
    stdin, stdout, stderr = (None if fd == CLOSED else fd for fd in stdio)
    kwargs: dict[str, Any] = {
        "stdin": stdin,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": spec.cwd,
        # os.environ, as the posix_spawn path gives: with None, Popen would pass the C
        # environ, which C code can change behind os.environ's back (readline sets
        # COLUMNS and LINES), so the two paths would give different environments.
        "env": os.environ if env is None else env,
        "close_fds": True,
    }
    if spec.startupinfo is not None:
        kwargs["startupinfo"] = spec.startupinfo  # Popen rejects it off Windows, as it should
    if spec.creation_flags:
        kwargs["creationflags"] = spec.creation_flags
    return kwargs


def _posix_kwargs(spec: Spec, to_close: list[int]) -> dict[str, Any]:
    """Popen's POSIX-only arguments; ``to_close``: std fds the child must not keep."""
    kwargs: dict[str, Any] = {
        "pass_fds": spec.pass_fds,
        "start_new_session": spec.new_session,
        "user": spec.uid,
        "group": spec.gid,
        "extra_groups": spec.groups,
        "umask": -1 if spec.umask is None else spec.umask,
    }
    pgid = spec.process_group
    if pgid is not None and _PY311:
        kwargs["process_group"] = pgid
        pgid = None
    hook = _pre_exec_hook(spec, to_close, pgid)
    if hook is not None:
        kwargs["preexec_fn"] = hook
    return kwargs


def _pre_exec_hook(
    spec: Spec, to_close: list[int], join_group: int | None
) -> Callable[[], None] | None:
    """The hook the child runs before exec (None when it needs none): in this order,
    unblock every signal, join process group ``join_group`` (Python 3.10), close the std
    fds ``to_close``, run the user's hook, and last arm ``die_with_parent``'s signal, which
    a change of ids in the user's hook would clear."""
    hook: Callable[[], Any] | None = spec.pre_exec
    if to_close:
        hook = _closing_then(to_close, hook)
    if join_group is not None:
        # Python 3.10's Popen has no process_group: setpgid in the hook, before the user's.
        hook = _joining_group_then(join_group, hook)
    if spec.die_with_parent:
        hook = parent_death_pre_exec(hook)
    if hook is not None or _signals_blocked():
        # The child starts with no signal blocked, as on the posix_spawn path (and in
        # tokio): a parent blocking SIGTERM for a signalfd must not make its children deaf
        # to the exit policy. Popen cannot do it without a hook (and a full fork), so the
        # hook is added only when a signal is blocked or a hook runs anyway.
        hook = _unblock_signals_then(hook)
    return hook


def _signals_blocked() -> bool:
    if sys.platform == "win32":
        return False
    return bool(signal.pthread_sigmask(signal.SIG_BLOCK, ()))


def _unblock_signals_then(hook: Callable[[], Any] | None) -> Callable[[], None]:
    def unblock() -> None:
        if sys.platform != "win32":  # only ever called on POSIX; this is for the type checker
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if hook is not None:
            hook()

    return unblock


def _closing_then(fds: list[int], hook: Callable[[], Any] | None) -> Callable[[], None]:
    def close() -> None:
        for fd in fds:
            os.close(fd)
        if hook is not None:
            hook()

    return close


def _joining_group_then(pgid: int, hook: Callable[[], Any] | None) -> Callable[[], None]:
    def join() -> None:
        if sys.platform != "win32":  # only ever called on POSIX; this is for the type checker
            os.setpgid(0, pgid)
        if hook is not None:
            hook()

    return join


class _OwnedPopen(subprocess.Popen[bytes]):
    """A ``Popen`` whose process we reap, and whose creation loses no process.

    Its ``returncode`` is set (to 0, meaning nothing) as soon as the process exists, so
    subprocess never queues the pid for its own reaping (which would ``waitpid()`` it behind
    our back) and never warns about it when the object is dropped.

    ``Popen._execute_child`` stores the pid only after fork (or vfork, where the parent
    sleeps until the child execs) has returned, and then waits for the exec's result,
    running a ``pre_exec`` hook meanwhile: an exception from a signal handler in either
    place escapes with the process running and nobody to reap it. And with SIGCHLD ignored
    or reaped by a handler, a failed exec leaves ``returncode`` None. Both are settled here.
    """

    def __init__(self, record: list[int], *args: Any, **kwargs: Any) -> None:
        self._record = record
        super().__init__(*args, **kwargs)

    # *args: the signature differs between Python versions (3.11 added process_group).
    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        before = thread_children()
        try:
            super()._execute_child(*args, **kwargs)  # type: ignore[misc]
            self._record.append(self.pid)
            self.returncode = 0
        except BaseException:
            # Set: Popen reaped the child after a failed exec. None: it still runs, or
            # somebody else reaped it (SIGCHLD ignored): undo_launches tells which.
            reaped = self.returncode is not None
            self.returncode = 0  # first, so that whatever lands next, Popen never warns
            pid: int | None = self.pid
            if pid is None:
                # Interrupted between fork returning and the pid being stored.
                pid = lost_child(before)
            # Recorded: the caller undoes it.
            if pid is not None and not reaped and pid not in self._record:
                undo_launches([pid])
            raise
