"""The exit-waiter interface every per-OS mechanism implements."""

from __future__ import annotations

import errno
import os
import sys
import threading
from abc import ABC, abstractmethod

import anyio
import anyio.lowlevel

# Bound at import: anyio resolves its top-level names lazily, and an import attempted while
# the interpreter shuts down (a Child collected then) fails with "sys.meta_path is None".
from anyio import notify_closing as _notify_closing

from ..._polling import poll_until
from ..signals import start_quiet_thread

__all__ = ["ExitWaiter", "FdWaiter", "ReapedElsewhereWaiter", "close_watched_fd"]


class ExitWaiter(ABC):
    """Watches one child process for its exit, and signals it safely.

    A waiter never consumes an exit status on its own: :meth:`poll` is the only place a
    child is reaped, and only when the caller asks for it. That keeps the reap on the
    event-loop side and lets a process-group leader stay a zombie (reserving its pid and
    pgid) until the group has been dealt with.
    """

    pid: int

    @abstractmethod
    def poll(self, *, reap: bool) -> int | None:
        """Return the child's returncode if it has exited, else ``None``; never blocks.

        With ``reap=False`` the zombie is left in place (``WNOWAIT``), so the pid cannot be
        recycled yet and the status can be read again. Raises :class:`ChildProcessError`
        when somebody else reaped the child and its status is lost.
        """

    @abstractmethod
    async def wait(self) -> None:
        """Return once the child may have exited; the status is not consumed.

        May return spuriously (a ptraced child can wake a pidfd without exiting): callers
        confirm with :meth:`poll`. Several tasks may wait at once. Cancelling a wait does
        nothing to the child or to the other waiters, and the wait can be started again.
        """

    @abstractmethod
    def send_signal(self, sig: int) -> None:
        """Deliver ``sig`` to the child, which the caller has not reaped.

        Raises :class:`ProcessLookupError` when the process is already gone.
        """

    @abstractmethod
    def close(self) -> None:
        """Release what the waiter holds; called once the child has been reaped."""

    def abandon(self) -> None:
        """The owner is gone while the child may still run: reap it in the background.

        Used when a ``Child`` is garbage-collected unreaped. Nobody will read the status, so
        a blocking reap in a daemon thread is fine, and it frees the zombie as soon as the
        child exits rather than at some later spawn.
        """
        if sys.is_finalizing():
            # A thread started now never runs, and Thread.start() would wait for it forever.
            # The process is ending: its children are re-parented to init, which reaps them.
            self.close()
            return
        thread = threading.Thread(
            target=self._reap_and_close, name=f"anyio_proc reaper {self.pid}", daemon=True
        )
        try:
            start_quiet_thread(thread)
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            self.close()

    def _reap_and_close(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.close()


def close_watched_fd(fd: int) -> None:
    """Close an fd that tasks may have waited on with :func:`anyio.wait_readable`.

    ``notify_closing`` wakes any waiter and drops the backend's registration before the
    number can be reused; outside an event loop (garbage collection, a reaper thread)
    nobody can be waiting on it, so there is nothing to notify.
    """
    try:
        _notify_closing(fd)
    except RuntimeError:
        pass
    os.close(fd)


class FdWaiter(ExitWaiter):
    """A waiter whose exit notification is an fd that becomes readable and stays so."""

    __slots__ = ("_busy", "_fd", "pid")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd = fd
        self._busy = False

    async def wait(self) -> None:
        if not self._busy:
            self._busy = True
            try:
                await anyio.wait_readable(self._fd)
            finally:
                self._busy = False
            return
        # anyio allows one reader per fd; a duplicate gives each extra task its own, and
        # "readable" is a property of the shared file description, so all of them wake.
        try:
            extra = os.dup(self._fd)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # The fd table is full (the exit policy may be running just then): ask the
            # kernel about the exit now and then instead, which needs no fd.
            await poll_until(self._exited)
            return
        try:
            await anyio.wait_readable(extra)
        finally:
            close_watched_fd(extra)

    def _exited(self) -> bool:
        """Whether the child has exited, without reaping it (for polling)."""
        try:
            return self.poll(reap=False) is not None
        except ChildProcessError:
            return True  # reaped elsewhere: the caller's own poll() reports it

    def close(self) -> None:
        if self._busy:
            close_watched_fd(self._fd)
        else:
            # Nobody waits on it: the backends drop their registration when a wait ends
            # (asyncio's remove_reader; trio's is one-shot), so there is nothing to notify.
            os.close(self._fd)


class ReapedElsewhereWaiter(ExitWaiter):
    """For a child somebody else reaped before a waiter could be made for it.

    A foreign ``SIGCHLD`` handler calling ``waitpid(-1)`` can reap a fast child between its
    creation and ``pidfd_open`` (which then fails with ``ESRCH``). The pid may already be
    recycled, so it is never signalled or waited for; the status is lost.
    """

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self, *, reap: bool) -> int | None:
        raise ChildProcessError(f"process {self.pid} was reaped elsewhere")

    async def wait(self) -> None:
        await anyio.lowlevel.checkpoint()

    def send_signal(self, sig: int) -> None:
        raise ProcessLookupError(f"process {self.pid} was reaped elsewhere")

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass
