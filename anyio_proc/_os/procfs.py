"""Linux: the one ``/proc`` reader, which works even when the fd table is full.

:func:`read_stat` parses ``/proc/<pid>/stat``; :func:`proc_read` and :func:`proc_list`
read any other file or directory. Every ``/proc`` walk of the exit policy (a process
group's members in ``groups.py``, a session's in ``session.py``, a child's descendants in
``tree.py``) opens files, one at a time. With the fd table full (``RLIMIT_NOFILE``
reached, ``EMFILE``; or the system's, ``ENFILE``) each open fails, a walk sees nothing, and
what it was meant to find would escape the shutdown signal. So one fd is held in reserve
from import on: an open that fails for lack of fds closes it, tries again in the slot it
frees, and takes the slot back at once. The walks only ever need one fd at a time (a
directory listed, or a file read, then closed), so that one slot is enough. Long-lived fds
(pidfds) never get it: they would keep it.

The reserve is a ``memfd``, whose inode is unique, so a program that closed every fd
(``closerange``) and reused the number cannot have its own file closed by us: the inode is
checked before closing. A lock serialises the borrowing, since event loops may run walks in
several threads; another thread's unrelated ``open`` can still take the freed slot first,
and that walk then fails as it would have without the reserve.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from typing import TYPE_CHECKING, NamedTuple, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

assert sys.platform == "linux"

__all__ = ["NO_ROOM", "Stat", "proc_list", "proc_read", "read_stat"]

_T = TypeVar("_T")

#: Errors that mean "no fd to spare", as opposed to "the file is not there".
NO_ROOM = (errno.EMFILE, errno.ENFILE)
#: Errors that mean "the process is gone" (ESRCH: it exited while we read).
_GONE = (errno.ENOENT, errno.ESRCH)


def _new_reserve() -> tuple[int, tuple[int, int]] | None:
    """A fresh reserve fd and its identity; None when none can be opened now, and
    ``OSError`` when none ever can (no ``memfd_create``: ENOSYS, or EPERM under seccomp)."""
    try:
        fd = os.memfd_create("anyio_proc reserve", os.MFD_CLOEXEC)
    except OSError as exc:
        if exc.errno in NO_ROOM:
            return None
        raise
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino)


class _Reserve:
    """The fd kept for walks; see the module's docstring."""

    def __init__(self) -> None:
        # Reentrant: a Python signal handler runs between two bytecodes of the main thread,
        # maybe while it holds the lock, and may itself end a child's block (a walk).
        self._lock = threading.RLock()
        self._held: tuple[int, tuple[int, int]] | None = None
        self._possible = hasattr(os, "memfd_create")
        self._refill()

    def _refill(self) -> None:
        """Open the reserve if it is missing and can be opened (call under the lock, or
        before anybody else can use this object)."""
        if self._held is not None or not self._possible:
            return
        try:
            self._held = _new_reserve()
        except OSError:
            self._possible = False  # walks run as they would without a reserve

    def _give_up(self) -> None:
        """Close the reserve fd, if there is one and it is still ours."""
        held, self._held = self._held, None
        if held is None:
            return
        fd, identity = held
        try:
            st = os.fstat(fd)
        except OSError:
            return  # closed behind our back (closerange, say): nothing to free
        if (st.st_dev, st.st_ino) == identity:
            os.close(fd)
        # Else it was closed behind our back and the number reused: not ours to close.

    def run(self, op: Callable[[], _T]) -> _T:
        """``op()``; if it fails for lack of fds, once more in the reserve's slot.

        ``op`` must close whatever it opens before returning. An exhaustion error is raised
        when even the reserve's slot did not make room.
        """
        if self._held is None and self._possible:
            # Lost earlier (another thread's open took the freed slot, or the table was
            # full at import): take it back now that there may be room.
            with self._lock:
                self._refill()
        try:
            return op()
        except OSError as exc:
            if exc.errno not in NO_ROOM:
                raise
        with self._lock:
            try:
                # Without a reserve, try anyway: an fd may have been closed meanwhile.
                self._give_up()
                return op()
            finally:
                self._refill()

    def after_fork_in_child(self) -> None:
        # A thread that held the lock at fork time does not exist in the child.
        self._lock = threading.RLock()


_reserve = _Reserve()
os.register_at_fork(after_in_child=_reserve.after_fork_in_child)


def _read_all(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    chunks = []
    try:
        # A children file can be long (a process with thousands of children).
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    finally:
        os.close(fd)
    return b"".join(chunks)


def _list(path: str) -> list[str] | None:
    try:
        return os.listdir(path)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise


def proc_read(path: str) -> bytes | None:
    """The contents of a ``/proc`` file, or None if it is not there (its process is gone).

    Raises :class:`OSError` when it cannot be read: ``EMFILE``/``ENFILE`` when no fd could
    be found for it, even with the reserve's; ``EACCES`` when ``/proc`` hides it from us
    (``hidepid``), which says nothing about whether the process is there.
    """
    return _reserve.run(lambda: _read_all(path))


def proc_list(path: str) -> list[str] | None:
    """The names in a ``/proc`` directory, or None if it is not there; raises as
    :func:`proc_read` does."""
    return _reserve.run(lambda: _list(path))


class Stat(NamedTuple):
    """What the exit policy reads from ``/proc/<pid>/stat`` (or a thread's)."""

    #: One letter: ``R`` running, ``S``/``D`` sleeping, ``T``/``t`` stopped or traced,
    #: ``Z`` zombie, ``X`` dead...
    state: str
    ppid: int
    pgid: int
    sid: int
    #: Clock ticks after boot: with the pid, it names one process (pids are reused).
    start: int

    @property
    def exited(self) -> bool:
        """A zombie (or dead): no signal reaches it and it will never run again."""
        return self.state in ("Z", "X")

    @property
    def stopped(self) -> bool:
        """Stopped (SIGSTOP, Ctrl-Z, reading the terminal in the background) or traced."""
        return self.state in ("T", "t")


def read_stat(pid: int, tid: int | None = None) -> Stat | None:
    """The ``stat`` of process ``pid`` (of its thread ``tid`` if given), or None if it is
    gone; raises :class:`OSError` when it cannot be read, as :func:`proc_read` does."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    data = proc_read(path)
    if not data:
        return None
    # The command name may hold spaces and parentheses: the fields start after its last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None  # not a stat file as we know it
    return Stat(
        fields[0].decode("ascii", "replace"),
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        int(fields[19]),
    )
