"""Creating the OS process: ``posix_spawn`` where the options allow, ``Popen`` otherwise.

Both give the child the same start: stdio as planned, every other fd closed (``close_fds``
always), SIGPIPE and SIGXFSZ back at their defaults (Python ignores them; a child must
not inherit that), any other disposition inherited as POSIX and ``subprocess`` do (so
``nohup`` keeps working), and exec errors raised in the parent as ``OSError``.

``posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)``) skips ``Popen``'s Python-level
set-up and its error pipe; it cannot change the working directory, ids, umask or run a
pre-exec hook, so those commands go through ``Popen``; so do all commands on Python 3.11
and 3.12 while many fds are open (see ``_few_fds_to_close``).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from ._tree import on_long_lived_thread, parent_death_pre_exec

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._command import StrOrBytesPath, _Spec

__all__ = ["DEVNULL", "STDOUT", "StdioTarget", "launch"]

DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
#: For each of stdin, stdout, stderr: ``None`` (inherit), ``DEVNULL``, ``STDOUT`` (stderr
#: only) or an fd of ours to install there.
StdioTarget = "int | None"

_PY311 = sys.version_info >= (3, 11)
# Only where it is tested: Linux. Elsewhere Popen does everything.
_POSIX_SPAWN = sys.platform == "linux"
_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)  # Python 3.13+
# Python < 3.13 cannot ask posix_spawn to close every fd above 2, so the inheritable ones
# are listed from /proc/self/fd, at about 2 µs per open fd (the listing and a fcntl each).
# Popen on 3.11 and 3.12 closes them in the child with one close_range(), at a fixed extra
# cost of about 100 µs: it is the cheaper path from this many open fds on (measured: even
# at 64 on 3.11, at about 100 on 3.12). 3.10's Popen closes fds one by one as well.
_LISTING_LIMIT = 64
_POPEN_CLOSES_IN_ONE_CALL = sys.version_info >= (3, 11)
_RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


def launch(spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    """Start the process; return its pid. Raises the OS error when it cannot start."""
    if _POSIX_SPAWN and _posix_spawn_can(spec, stdio) and _few_fds_to_close():
        try:
            return _posix_spawn(spec, env, stdio)
        except OSError as exc:
            # glibc refuses file actions on fds at or above RLIMIT_NOFILE (EBADF) before
            # creating anything; when the limit was lowered below fds we hold, Popen's
            # answer (EMFILE, or success) is the one to give.
            if exc.errno != errno.EBADF:
                raise
    return _popen(spec, env, stdio)


def _posix_spawn_can(spec: _Spec, stdio: tuple[int | None, ...]) -> bool:
    if (
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
    ):
        return False
    # dup2 actions run in order: a source among 0-2 could already have been replaced by an
    # earlier action (bpo-32844). Popen untangles such cases; we leave them to it.
    return all(fd is None or fd < 0 or fd >= 3 or fd == target for target, fd in enumerate(stdio))


def _few_fds_to_close() -> bool:
    """Whether closing our inheritable fds on the posix_spawn path costs less than Popen."""
    if _CLOSEFROM is not None or not _POPEN_CLOSES_IN_ONE_CALL:
        return True
    try:
        # The number of open fds, on Linux 6.2 and later; older kernels say 0, and keep
        # the listing (our fds then cost what they did before this check).
        return os.stat("/proc/self/fd").st_size < _LISTING_LIMIT
    except OSError:
        return True


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


if sys.platform == "linux":

    def _posix_spawn(
        spec: _Spec,
        env: dict[str, str] | None,
        stdio: tuple[int | None, ...],
        *,
        terminal: int | None = None,
    ) -> int:
        """``posix_spawn`` the command; ``terminal``, an fd of ours found in ``stdio``, is a
        pseudo-terminal's slave side that the child takes as its controlling terminal."""
        # Without env: os.environ's own dict of encoded entries (what it hands putenv),
        # read in C, where os.environ itself would decode and re-encode every entry in
        # Python, a fifth of the cost of a spawn. Not the C environ, which C code
        # (readline) changes behind os.environ's back: both launch paths give os.environ.
        environ: Any = env if env is not None else getattr(os.environ, "_data", os.environ)
        path = _find_program(spec.program, environ)
        argv = [spec.program if spec.arg0 is None else spec.arg0, *spec.args]
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
            else:
                actions.append((os.POSIX_SPAWN_DUP2, source, target))
        if _CLOSEFROM is not None:
            actions.append((_CLOSEFROM, 3))
        else:
            actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds(2))
        kwargs: dict[str, Any] = {"setsigdef": _RESTORED_SIGNALS, "setsigmask": ()}
        if spec.process_group is not None:
            kwargs["setpgroup"] = spec.process_group
        if spec.new_session or terminal is not None:
            kwargs["setsid"] = True
        return os.posix_spawn(path, argv, environ, file_actions=actions, **kwargs)

else:

    def _posix_spawn(
        spec: _Spec,
        env: dict[str, str] | None,
        stdio: tuple[int | None, ...],
        *,
        terminal: int | None = None,
    ) -> int:
        raise NotImplementedError  # _POSIX_SPAWN is false here


def _unblock_signals_then(hook: Callable[[], Any] | None) -> Callable[[], None]:
    def unblock() -> None:
        if sys.platform != "win32":  # only ever called on POSIX; this is for the type checker
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if hook is not None:
            hook()

    return unblock


def _popen(spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    kwargs: dict[str, Any] = {
        "stdin": stdio[0],
        "stdout": stdio[1],
        "stderr": stdio[2],
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
    if sys.platform != "win32":
        kwargs.update(
            pass_fds=spec.pass_fds,
            start_new_session=spec.new_session,
            user=spec.uid,
            group=spec.gid,
            extra_groups=spec.groups,
            umask=-1 if spec.umask is None else spec.umask,
        )
        pre_exec = spec.pre_exec
        pgid = spec.process_group
        if pgid is not None:
            if _PY311:
                kwargs["process_group"] = pgid
            else:
                user_fn = pre_exec

                def pre_exec() -> None:
                    os.setpgid(0, pgid)
                    if user_fn is not None:
                        user_fn()

        if spec.die_with_parent:
            pre_exec = parent_death_pre_exec(pre_exec)
        if pre_exec is not None or signal.pthread_sigmask(signal.SIG_BLOCK, ()):
            # The child starts with no signal blocked, as on the posix_spawn path (and in
            # tokio): a parent blocking SIGTERM for a signalfd must not make its children
            # deaf to the exit policy. Popen cannot do it without a hook (and a full fork),
            # so the hook is added only when a signal is blocked or a hook runs anyway.
            pre_exec = _unblock_signals_then(pre_exec)
        if pre_exec is not None:
            kwargs["preexec_fn"] = pre_exec
    argv: list[StrOrBytesPath] = [spec.program if spec.arg0 is None else spec.arg0]
    argv.extend(spec.args)

    def create() -> int:
        popen = subprocess.Popen(argv, executable=spec.program, **kwargs)
        # We own the reap. A Popen with a returncode set never queues the pid for
        # subprocess's own cleanup (which would waitpid() it behind our back) and never warns.
        popen.returncode = 0
        return popen.pid

    if spec.die_with_parent:
        # PR_SET_PDEATHSIG fires when the forking *thread* exits: fork on one that lives.
        return on_long_lived_thread(create)
    return create()
