"""Creating the OS process: ``posix_spawn`` where the options allow, ``Popen`` otherwise.

Both paths (``posix_spawn.py``, ``popen.py``) give the child the same start: stdio as
planned (``stdio_plan.py``, safe when the parent has free slots among 0-2), every other
fd closed (``close_fds`` always), SIGPIPE and SIGXFSZ back at their defaults (Python
ignores them; a child must not inherit that), any other disposition inherited as POSIX and
``subprocess`` do (so ``nohup`` keeps working), and exec errors raised in the parent as
``OSError``. A child on a pseudo-terminal starts through ``pty.py``, which uses the same
two paths.

A process, once created, is never lost: the caller starts a record
(:func:`record_launches`), both paths put the pid in it as the kernel hands it over, and
whoever fails before owning the process gives that record to :func:`undo_launches`
(``launch_records.py``).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from .groups import group_in_session
from .launch_records import record_launches, undo_launches
from .popen import popen
from .posix_spawn import few_fds_to_close, posix_spawn_can, try_posix_spawn

if TYPE_CHECKING:
    from .._spec import Spec

__all__ = ["launch", "record_launches", "undo_launches"]

_PY311 = sys.version_info >= (3, 11)


def launch(spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...]) -> int:
    """Start the process; return its pid. Raises the OS error when it cannot start, and
    :class:`ValueError` when a ``pass_fds`` entry is also a stdio stream set otherwise.

    ``stdio``: for each of stdin, stdout, stderr, ``None`` (inherit),
    ``subprocess.DEVNULL``, ``subprocess.STDOUT`` (stderr only) or an fd of ours to
    install there.
    """
    if spec.new_session and spec.process_group == 0:
        # setsid() makes the child lead a new group already, and a session leader's
        # setpgid(0, 0) fails (EPERM): what was asked for is there without it.
        spec = replace(spec, process_group=None)
    try:
        if posix_spawn_can(spec) and few_fds_to_close():
            pid = try_posix_spawn(spec, env, stdio)
            if pid is not None:
                return pid
        return popen(spec, env, stdio)
    except (PermissionError, subprocess.SubprocessError) as exc:
        better = _process_group_error(exc, spec)
        if better is None:
            raise
        raise better from None


def _process_group_error(exc: Exception, spec: Spec) -> OSError | None:
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
    found = group_in_session(pgid, ours)
    return True if found is None else found  # None: cannot tell, leave the error as it came
