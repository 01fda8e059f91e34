"""Creating the OS process: ``posix_spawn`` where the options allow, ``Popen`` otherwise.

Both give the child the same start: stdio as planned, every other fd closed (``close_fds``
always), SIGPIPE and SIGXFSZ back at their defaults (Python ignores them; a child must
not inherit that), any other disposition inherited as POSIX and ``subprocess`` do (so
``nohup`` keeps working), and exec errors raised in the parent as ``OSError``.

``posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)``) skips ``Popen``'s Python-level
set-up and its error pipe; it cannot change the working directory, ids, umask or run a
pre-exec hook, so those commands go through ``Popen``; so do all commands on Python 3.11
and 3.12 while many fds are open (see ``_few_fds_to_close``).

Either way the stdio plan goes through ``_plan_stdio`` first, which makes it safe when the
parent has free slots among 0-2 (a daemon, ``prog <&-``), where the pipes, terminals and
files made for the spawn land.

A process, once created, is never lost: an exception from a Python signal handler (Ctrl-C,
a test timeout's SIGALRM) can land at the first bytecode after the call that created it,
before its pid reaches any variable, and anywhere on the way up to the ``Child``. So both
paths put the pid in the caller's record (``record_launches``) as the kernel hands it over,
and whoever fails before owning the process gives that record to ``undo_launches``.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .tree import on_long_lived_thread, parent_death_pre_exec

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._command import StrOrBytesPath, _Spec

__all__ = ["DEVNULL", "STDOUT", "StdioTarget", "launch", "record_launches", "undo_launches"]

DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
#: For each of stdin, stdout, stderr: ``None`` (inherit), ``DEVNULL``, ``STDOUT`` (stderr
#: only) or an fd of ours to install there.
StdioTarget = "int | None"
# In a planned stdio (never given to subprocess): the child must not have this fd open.
_CLOSED = -100
_STREAMS = ("stdin", "stdout", "stderr")

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
# How many further exceptions (a user pressing Ctrl-C again and again) undoing a spawn
# goes through before giving up on it: each attempt takes microseconds, or the time a
# SIGKILLed process takes to die.
_UNDO_ATTEMPTS = 8


class _Launches(threading.local):
    # Per thread: a spawn and the failure that undoes it happen on the caller's thread.
    record: list[int] | None = None


_launches = _Launches()


def record_launches() -> list[int]:
    """Start a record of the processes this thread's launches create, and return it.

    Each pid is in it from the moment the kernel hands it over (before any Python code
    runs: see ``_posix_spawn`` and ``_OwnedPopen``) until the next call. A caller that fails
    before something owns the process gives the record to :func:`undo_launches`.
    """
    record: list[int] = []
    _launches.record = record
    return record


def _current_record() -> list[int]:
    record = _launches.record
    return [] if record is None else record


def undo_launches(record: list[int]) -> None:
    """Kill and reap every process in ``record`` (our children that nobody owns yet),
    emptying it; a pid that somebody else has reaped is left alone, as it may be reused.

    Cleaning up is what an exception from a signal handler interrupts too (Ctrl-C pressed
    again): both steps can be repeated, so they are, up to ``_UNDO_ATTEMPTS`` times; the
    last such exception is raised once done, in place of the one being handled, as if it
    had landed in the handler.
    """
    later: BaseException | None = None
    attempts = 0
    while record and attempts < _UNDO_ATTEMPTS:
        try:
            _kill_and_reap(record[-1])
            del record[-1]  # after: interrupted in between, the next attempt finds it reaped
        except BaseException as exc:
            later = exc
            attempts += 1
    if later is not None:
        raise later


if sys.platform == "win32":

    def _kill_and_reap(pid: int) -> None:
        # No reaping on Windows: the Popen's handle keeps the process object until dropped.
        try:
            os.kill(pid, signal.SIGTERM)  # TerminateProcess
        except OSError:
            pass  # already gone

else:

    def _kill_and_reap(pid: int) -> None:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return  # it had exited: reaped now
        except ChildProcessError:
            return  # reaped by somebody else (SIGCHLD ignored, a waitpid(-1) handler)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # reaped by somebody else since
        except PermissionError:
            # It exec'd a program that changed its real uid (setuid, then setuid()): it
            # cannot be killed, and a blocking reap could last for ever.
            _reap_in_background(pid)
            return
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped by somebody else since

    def _reap_quietly(pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def _reap_in_background(pid: int) -> None:
        thread = threading.Thread(
            target=_reap_quietly, args=(pid,), name=f"anyio_proc reaper {pid}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            pass  # interpreter shutdown: init reaps it once we are gone


if sys.platform == "linux":

    def _thread_children() -> bytes:
        """This thread's children, for ``_lost_child``: the raw list, parsed only if needed."""
        try:
            fd = os.open("/proc/thread-self/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return b""  # no /proc, or a kernel without CONFIG_PROC_CHILDREN
        try:
            return os.read(fd, 1 << 20)
        except OSError:
            return b""
        finally:
            os.close(fd)

    def _lost_child(before: bytes) -> int | None:
        """The child this thread forked since ``before``, if one and only one appeared.

        Two or more (orphans handed to this thread, when the process is a subreaper) make
        it ambiguous: better a leak than a stranger killed.
        """
        new = set(_thread_children().split()) - set(before.split())
        return int(new.pop()) if len(new) == 1 else None

else:

    def _thread_children() -> bytes:
        return b""  # no way to see them: the lost-pid window stays open here

    def _lost_child(before: bytes) -> int | None:
        return None


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
        before = _thread_children()
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
                pid = _lost_child(before)
            # Recorded: the caller undoes it.
            if pid is not None and not reaped and pid not in self._record:
                undo_launches([pid])
            raise


def launch(spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    """Start the process; return its pid. Raises the OS error when it cannot start, and
    :class:`ValueError` when a ``pass_fds`` entry is also a stdio stream set otherwise."""
    if spec.new_session and spec.process_group == 0:
        # setsid() makes the child lead a new group already, and a session leader's
        # setpgid(0, 0) fails (EPERM): what was asked for is there without it.
        spec = replace(spec, process_group=None)
    try:
        if _POSIX_SPAWN and _posix_spawn_can(spec, stdio) and _few_fds_to_close():
            try:
                return _posix_spawn(spec, env, stdio)
            except OSError as exc:
                # glibc refuses file actions on fds at or above RLIMIT_NOFILE (EBADF)
                # before creating anything; when the limit was lowered below fds we hold,
                # Popen's answer (EMFILE, or success) is the one to give.
                if exc.errno != errno.EBADF:
                    raise
        return _popen(spec, env, stdio)
    except (PermissionError, subprocess.SubprocessError) as exc:
        better = _process_group_error(exc, spec)
        if better is None:
            raise
        raise better from None


def _process_group_error(exc: Exception, spec: _Spec) -> OSError | None:
    """The error to give instead of ``exc`` when it is the child's ``setpgid`` failing.

    The child reports only an errno: ``posix_spawn`` blames the program, ``Popen`` on
    Python 3.11 the working directory, and on 3.10 (where our pre-exec hook calls setpgid,
    before the user's) the hook. ``EPERM`` with a group asked for is setpgid's when the
    group is not one the child can join, which the parent can check.
    """
    pgid = spec.process_group
    if not pgid:
        return None
    if isinstance(exc, OSError) and exc.errno != errno.EPERM:
        return None
    if isinstance(exc, subprocess.SubprocessError) and _PY311:
        return None  # the user's pre_exec hook raised
    if spec.new_session:
        why = f"a new session's leader (new_session()) cannot join process group {pgid}"
    elif not _group_in_our_session(pgid):
        why = f"cannot join process group {pgid}: there is none of that number in this session"
    else:
        return None  # setpgid can succeed: something else refused
    strerror = f"{os.strerror(errno.EPERM)} ({why})"
    return PermissionError(errno.EPERM, strerror, os.fsdecode(spec.program))


def _group_in_our_session(pgid: int) -> bool:
    """Whether process group ``pgid`` exists in our session, as ``setpgid`` requires."""
    if sys.platform == "win32":
        return True  # no process groups; nothing to blame
    ours = os.getsid(0)
    try:
        if os.getpgid(pgid) == pgid:  # its leader is alive
            return os.getsid(pgid) == ours
    except OSError:
        pass  # the leader is gone; its group lives on while a member does
    if sys.platform != "linux":
        return True  # cannot tell: leave the error as it came
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # exited meanwhile
            # After "(comm)": state, ppid, pgrp, session.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) == pgid:
                return int(fields[3]) == ours
    return False


def _posix_spawn_can(spec: _Spec, stdio: tuple[int | None, ...]) -> bool:
    """Whether ``posix_spawn`` can apply ``spec``; any ``stdio`` is fine (see
    ``_plan_stdio``), the argument stays for the callers' symmetry with ``launch``."""
    return not (
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


def _reaches_child(fd: int, pass_fds: Sequence[int]) -> bool:
    """Whether the child gets our ``fd`` at the same number when nothing is installed
    there: open and inheritable, or kept with ``pass_fds``."""
    if fd in pass_fds:
        return True
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False  # closed


def _plan_stdio(
    stdio: tuple[int | None, ...], pass_fds: Sequence[int], terminal: int | None = None
) -> tuple[tuple[int | None, ...], list[int]]:
    """``stdio`` made safe to install in any order, and the fds made for it, ours to close
    once the child exists (or not).

    With a free slot among 0-2 in the parent (a daemon, ``prog <&-``), a pipe, terminal
    or file for the spawn lands there. At its own target it still needs installing, since
    our fds are close-on-exec; at another it may be overwritten by an earlier dup2
    (bpo-32844); so every such source moves to a close-on-exec copy above 2. Left as it
    is: a source at its target that the child gets anyway (the parent's own stdio passed
    on), and ``terminal``, which the child opens by name.

    stderr sent to an inherited stdout goes where the child's fd 1 goes: to the parent's
    fd 1 when the child gets it, else nowhere (``_CLOSED``), never to whatever of ours sits
    on 1. A ``pass_fds`` entry among 0-2 keeps its number, so it is refused as the target
    of a stream set otherwise.
    """
    if sys.platform == "win32":
        return stdio, []  # handles, not fd numbers: subprocess maps them
    for fd in pass_fds:
        if fd <= 2 and stdio[fd] is not None and stdio[fd] != fd:
            raise ValueError(
                f"pass_fds keeps fd {fd} for the child, which is also its {_STREAMS[fd]}, "
                "set to something else"
            )
    sources = list(stdio)
    if sources[2] == STDOUT and sources[1] is None:
        sources[2] = 1 if _reaches_child(1, pass_fds) else _CLOSED
    copies: dict[int, int] = {}
    try:
        for target, source in enumerate(sources):
            if source is None or not 0 <= source <= 2 or source == terminal:
                continue
            if source == target and _reaches_child(source, pass_fds):
                continue
            if source not in copies:
                copies[source] = _copy_above_stdio(source)
            sources[target] = copies[source]
    except BaseException:
        for copy in copies.values():
            os.close(copy)
        raise
    return tuple(sources), list(copies.values())


if sys.platform == "win32":

    def _copy_above_stdio(fd: int) -> int:
        raise NotImplementedError  # _plan_stdio leaves Windows' stdio to subprocess

else:
    import fcntl

    def _copy_above_stdio(fd: int) -> int:
        """A close-on-exec copy of ``fd`` above 2 (``os.dup`` would take a free slot)."""
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


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
        stdio, copies = _plan_stdio(stdio, spec.pass_fds, terminal)
        try:
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
                elif source == _CLOSED:
                    if _reaches_child(target, ()):
                        actions.append((os.POSIX_SPAWN_CLOSE, target))
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
            spawn = partial(os.posix_spawn, file_actions=actions, **kwargs)
            # A signal arriving while the kernel creates the process (the parent sleeps
            # until the child execs) has its Python handler run as the call returns,
            # before Python code can store the pid: map() and list.extend(), both C, call
            # posix_spawn and store the pid with no bytecode in between.
            record = _current_record()
            record.extend(map(spawn, (path,), (argv,), (environ,)))
            return record[-1]
        finally:
            _close_all(copies)

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


def _closing_then(fds: list[int], hook: Callable[[], Any] | None) -> Callable[[], None]:
    def close() -> None:
        for fd in fds:
            os.close(fd)
        if hook is not None:
            hook()

    return close


def _popen(spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    stdio, copies = _plan_stdio(stdio, spec.pass_fds)
    try:
        return _popen_planned(spec, env, stdio)
    finally:
        _close_all(copies)


def _popen_planned(spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    # Popen cannot close a std fd in the child; a hook does, when the child would get ours.
    to_close = [target for target, fd in enumerate(stdio) if fd == _CLOSED]
    to_close = [fd for fd in to_close if _reaches_child(fd, ())]
    stdio = tuple(None if fd == _CLOSED else fd for fd in stdio)
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
        if to_close:
            pre_exec = _closing_then(to_close, pre_exec)
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

    # Taken here: on_long_lived_thread may run create() on another thread.
    record = _current_record()

    def create() -> int:
        return _OwnedPopen(record, argv, executable=spec.program, **kwargs).pid

    if spec.die_with_parent:
        # PR_SET_PDEATHSIG fires when the forking *thread* exits: fork on one that lives.
        return on_long_lived_thread(create)
    return create()
