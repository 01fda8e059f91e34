"""The fast launch path: ``posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)``).

It skips ``Popen``'s Python-level set-up and its error pipe, and no Python code runs
between fork and exec. It cannot change the working directory, ids or umask, or run a
pre-exec hook (:func:`posix_spawn_can` says which commands it takes), and it is used only
where it is tested: Linux (:data:`SUPPORTED`).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from .launch_records import current_record
from .stdio_plan import CLOSED, DEVNULL, STDOUT, close_all, plan_stdio, reaches_child

if TYPE_CHECKING:
    from .._spec import Spec, StrOrBytesPath

__all__ = ["SUPPORTED", "few_fds_to_close", "posix_spawn", "posix_spawn_can", "try_posix_spawn"]

#: Whether this path is used at all here: only where it is tested, Linux. Elsewhere Popen
#: does everything.
SUPPORTED = sys.platform == "linux"

_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)  # Python 3.13+
# Python < 3.13 cannot ask posix_spawn to close every fd above 2, so the inheritable ones
# are listed from /proc/self/fd, at about 2 µs per open fd (the listing and a fcntl each).
# Popen on 3.11 and 3.12 closes them in the child with one close_range(), at a fixed extra
# cost of about 100 µs: it is the cheaper path from this many open fds on (measured: even
# at 64 on 3.11, at about 100 on 3.12). 3.10's Popen closes fds one by one as well.
_LISTING_LIMIT = 64
_POPEN_CLOSES_IN_ONE_CALL = sys.version_info >= (3, 11)
# Python ignores these; a child must not inherit that (Popen restores them too).
_RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


def posix_spawn_can(spec: Spec) -> bool:
    """Whether this path is used here and can apply ``spec`` (any stdio is fine once
    planned, see ``stdio_plan.py``)."""
    return SUPPORTED and not (
        spec.cwd is not None
        or spec.uid is not None
        or spec.gid is not None
        or spec.groups is not None
        or spec.umask is not None
        or spec.pre_exec is not None
        or spec.die_with_parent
        or spec.pass_fds
        or spec.creation_flags
        or spec.startupinfo is not None
    )


def few_fds_to_close() -> bool:
    """Whether closing our inheritable fds on this path costs less than with Popen."""
    if _CLOSEFROM is not None or not _POPEN_CLOSES_IN_ONE_CALL:
        return True
    try:
        # The number of open fds, on Linux 6.2 and later; older kernels say 0, and keep
        # the listing (our fds then cost what they did before this check).
        return os.stat("/proc/self/fd").st_size < _LISTING_LIMIT
    except OSError:
        return True


def try_posix_spawn(
    spec: Spec,
    env: dict[str, str] | None,
    stdio: tuple[int | None, ...],
    *,
    terminal: int | None = None,
) -> int | None:
    """:func:`posix_spawn`, or None when glibc refused before creating anything: then
    Popen's answer is the one to give, and the caller asks it.

    glibc refuses file actions on fds at or above ``RLIMIT_NOFILE`` (``EBADF``); when the
    limit was lowered below fds we hold, Popen either succeeds or fails as it should
    (``EMFILE``).
    """
    try:
        return posix_spawn(spec, env, stdio, terminal=terminal)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
    return None


def posix_spawn(
    spec: Spec,
    env: dict[str, str] | None,
    stdio: tuple[int | None, ...],
    *,
    terminal: int | None = None,
) -> int:
    """``posix_spawn`` the command (which :func:`posix_spawn_can` takes); return its pid,
    in the launch record (``launch_records.py``) before any Python code runs.

    ``terminal``, an fd of ours found in ``stdio``, is a pseudo-terminal's slave side that
    the child takes as its controlling terminal, in a new session.
    """
    if sys.platform != "linux":
        raise NotImplementedError  # SUPPORTED is false here
    # Without env: os.environ's own dict of encoded entries (what it hands putenv), read
    # in C, where os.environ itself would decode and re-encode every entry in Python, a
    # fifth of the cost of a spawn. Not the C environ, which C code (readline) changes
    # behind os.environ's back: both launch paths give os.environ.
    environ: Any = env if env is not None else getattr(os.environ, "_data", os.environ)
    path = _find_program(spec.program, environ)
    argv = [spec.program if spec.arg0 is None else spec.arg0, *spec.args]
    stdio, copies = plan_stdio(stdio, spec.pass_fds, terminal)
    try:
        kwargs: dict[str, Any] = {"setsigdef": _RESTORED_SIGNALS, "setsigmask": ()}
        if spec.process_group is not None:
            kwargs["setpgroup"] = spec.process_group
        if spec.new_session or terminal is not None:
            kwargs["setsid"] = True
        spawn = partial(os.posix_spawn, file_actions=_file_actions(stdio, terminal), **kwargs)
        # A signal arriving while the kernel creates the process (the parent sleeps until
        # the child execs) has its Python handler run as the call returns, before Python
        # code can store the pid: map() and list.extend(), both C, call posix_spawn and
        # store the pid with no bytecode in between.
        record = current_record()
        record.extend(map(spawn, (path,), (argv,), (environ,)))
        return record[-1]
    finally:
        close_all(copies)


def _file_actions(stdio: tuple[int | None, ...], terminal: int | None) -> list[tuple[Any, ...]]:
    """What the child does before exec: install the planned ``stdio`` (the terminal opened
    by name), then close every other fd."""
    if sys.platform != "linux":
        raise NotImplementedError  # SUPPORTED is false here
    actions: list[tuple[Any, ...]] = []
    first_on_terminal: int | None = None
    for target, source in enumerate(stdio):
        if terminal is not None and source == terminal:
            if first_on_terminal is None:
                # glibc runs setsid before the file actions, so this open (without
                # O_NOCTTY) makes the terminal the new session's controlling one.
                first_on_terminal = target
                tty = os.ttyname(terminal)
                actions.append((os.POSIX_SPAWN_OPEN, target, tty, os.O_RDWR, 0))
            else:
                actions.append((os.POSIX_SPAWN_DUP2, first_on_terminal, target))
        elif source is None or source == target:
            continue
        elif source == DEVNULL:
            mode = os.O_RDONLY if target == 0 else os.O_WRONLY
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, mode, 0))
        elif source == STDOUT:
            actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        elif source == CLOSED:
            if reaches_child(target, ()):
                actions.append((os.POSIX_SPAWN_CLOSE, target))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
    if _CLOSEFROM is not None:
        actions.append((_CLOSEFROM, 3))
    else:
        actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds(2))
    return actions


def _find_program(program: StrOrBytesPath, env: Any) -> StrOrBytesPath:
    """Search PATH (the child's) as execvp would, without a failed spawn per directory."""
    name = os.fspath(program)
    if isinstance(name, bytes):
        if b"/" in name:
            return name
        dirs: list[Any] = [os.fsencode(d) for d in os.get_exec_path(env)]
    else:
        if "/" in name:
            return name
        dirs = list(os.get_exec_path(env))
    denied = False
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate  # type: ignore[no-any-return,unused-ignore]
        denied = denied or os.path.exists(candidate)
    code = errno.EACCES if denied else errno.ENOENT
    raise OSError(code, os.strerror(code), os.fsdecode(name))


def _inheritable_fds(keep: int) -> list[int]:
    """Our fds above ``keep`` that would survive exec: what close_fds must close."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > keep:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:
                pass  # the directory fd listdir used, closed by now
    return found
