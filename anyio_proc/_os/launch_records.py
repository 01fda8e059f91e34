"""The record of the processes a launch creates, so that none is ever lost.

An exception from a Python signal handler (Ctrl-C, a test timeout's SIGALRM) can land at
the first bytecode after the call that created a process, before its pid reaches any
variable, and anywhere on the way up to the ``Child``. So both launch paths put the pid in
the caller's record as the kernel hands it over (``posix_spawn.py``, ``popen.py``), and
whoever fails before owning the process gives that record to :func:`undo_launches`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .signals import start_quiet_thread

__all__ = [
    "current_record",
    "lost_child",
    "record_launches",
    "thread_children",
    "undo_launches",
]

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
    runs) until the next call. A caller that fails before something owns the process gives
    the record to :func:`undo_launches`.
    """
    record: list[int] = []
    _launches.record = record
    return record


def current_record() -> list[int]:
    """Where a launch on this thread puts the pid it creates (a throwaway list when no
    caller asked for a record)."""
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
            start_quiet_thread(thread)
        except RuntimeError:
            pass  # interpreter shutdown: init reaps it once we are gone


if sys.platform == "linux":

    def thread_children() -> bytes:
        """This thread's children, for :func:`lost_child`: the raw list, parsed only if
        needed."""
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

    def lost_child(before: bytes) -> int | None:
        """The child this thread forked since ``before`` (from :func:`thread_children`), if
        one and only one appeared.

        Two or more (orphans handed to this thread, when the process is a subreaper) make
        it ambiguous: better a leak than a stranger killed.
        """
        new = set(thread_children().split()) - set(before.split())
        return int(new.pop()) if len(new) == 1 else None

else:

    def thread_children() -> bytes:
        return b""  # no way to see them: the lost-pid window stays open here

    def lost_child(before: bytes) -> int | None:
        return None
