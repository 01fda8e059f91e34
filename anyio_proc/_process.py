"""One child process as the OS sees it: its exit, its reaping, and every signal sent to it.

:class:`ProcessHandle` is what ``Child`` and the exit policies drive. Every signal for the
child, its process group, its session or its tree goes through :meth:`ProcessHandle.send`
(one path, one set of checks: never a reaped pid, never from a forked copy of the program);
every record of an exit or a reap goes through the :class:`~anyio_proc._lifecycle.Lifecycle`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

import anyio

from ._lifecycle import Lifecycle
from ._os.groups import group_members_seen, signal_group, wait_group_empty
from ._os.signals import SIGKILL, signals_deferred
from ._pacing import paced
from ._status import ExitStatus, signal_name

if TYPE_CHECKING:
    from ._os.session import Session
    from ._os.tree import Descendants
    from ._os.waiters import ExitWaiter

__all__ = ["KILL_GRACE", "ProcessHandle"]

logger = logging.getLogger("anyio_proc")

#: A SIGKILLed process can only linger in uninterruptible sleep; nothing waits on that forever.
KILL_GRACE = 5.0


class ProcessHandle:
    """The child process, its group, session and tree: waiting, reaping, signalling."""

    #: Set when the exit policy had to SIGKILL although the child itself had exited: what
    #: outlived the shutdown signal was in its group, session or tree.
    others_outlived = False

    def __init__(
        self,
        waiter: ExitWaiter,
        args: tuple[str, ...],
        *,
        leads_group: bool,
        keep_zombie: bool,
        session: Session | None,
        tree: Descendants | None,
    ) -> None:
        self.pid = waiter.pid
        self.args = args
        self.state = Lifecycle()
        self.leads_group = leads_group
        # A group leader's zombie pins its pgid: until it is reaped the number cannot be
        # reused, so signalling the group cannot hit strangers.
        self.keep_zombie = keep_zombie
        self.session = session
        self.tree = tree
        self._waiter: ExitWaiter | None = waiter
        self._owner_pid = os.getpid()
        self._started = time.monotonic()
        # When the exit was first seen: a census of /proc begun later shows whatever the
        # child started before it exited.
        self._exit_seen = math.inf
        # Another thread may poll too (returncode read from a worker thread): without the
        # lock, the loser of a reap would take the winner's for a foreign one, or find the
        # pidfd closed. Reentrant: a signal handler may end a block while we hold it.
        self._lock = threading.RLock()

    @property
    def status(self) -> ExitStatus | None:
        return self.state.status

    def ours(self) -> bool:
        """False in a forked copy of the program: an inherited pidfd still names the
        parent's child, and the copy must never signal or reap it."""
        return os.getpid() == self._owner_pid

    # -- exit and reaping --------------------------------------------------------------

    def poll(self) -> ExitStatus | None:
        """The status if the child has exited (reaping it unless the zombie is kept)."""
        status = self.state.status
        if status is not None:
            return status
        with self._lock:
            if self.state.status is not None:
                return self.state.status
            waiter = self._waiter
            if waiter is None:  # pragma: no cover - released only after a status is known
                return None
            reap = not self.keep_zombie
            try:
                returncode = waiter.poll(reap=reap)
            except ChildProcessError:
                # Someone else reaped it (SIGCHLD set to SIG_IGN, a foreign waitpid(-1)).
                self._record(ExitStatus.unknown(args=self.args), reaped=True)
            else:
                if returncode is None:
                    return None
                self._record(ExitStatus(returncode, args=self.args), reaped=reap)
            return self.state.status

    def _record(self, status: ExitStatus, *, reaped: bool) -> None:
        self.state.exited(status, reaped=reaped)
        self._exit_seen = time.monotonic()
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = time.monotonic() - self._started
            logger.debug("pid %d exited: %s after %.3f s", self.pid, status, elapsed)
        self._release_if_done()

    def _reaped_now(self) -> None:
        self.state.reaped_now()
        self._release_if_done()

    def _release_if_done(self) -> None:
        if self.state.waiter_releasable:
            with self._lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.close()

    async def wait_exited(self, *, polled: bool = False) -> ExitStatus:
        """Wait for the exit; not a checkpoint if it has happened. ``polled``: the caller
        has just seen :meth:`poll` return ``None``, so the first look is skipped."""
        self.state.enter_wait()
        try:
            status = None if polled else self.poll()
            while status is None:
                waiter = self._waiter
                assert waiter is not None
                await waiter.wait()
                status = self.poll()
            return status
        finally:
            self.state.leave_wait()
            self._release_if_done()

    def reap_zombie(self) -> None:
        """Reap a zombie kept to pin the group number, once the group is dealt with."""
        with self._lock:
            waiter = self._waiter
            if self.state.reaped or waiter is None:
                return
            try:
                returncode = waiter.poll(reap=True)
            except ChildProcessError:
                returncode = None
            if self.state.running:  # its exit had not been recorded yet
                status = (
                    ExitStatus.unknown(args=self.args)
                    if returncode is None
                    else ExitStatus(returncode, args=self.args)
                )
                self._record(status, reaped=True)
            else:
                self._reaped_now()

    def reap_blocking(self) -> None:
        """Reap the child, which has been sent SIGKILL, blocking until it is gone."""
        waiter = self._waiter
        if self.state.reaped or waiter is None:
            return
        try:
            waiter.poll(reap=False)  # the waiter knows whether the pid is still ours
            _, raw = os.waitpid(self.pid, 0)
        except ChildProcessError:
            raw = None
        if self.state.running:
            status = (
                ExitStatus.unknown(args=self.args)
                if raw is None
                else ExitStatus(os.waitstatus_to_exitcode(raw), args=self.args)
            )
            self._record(status, reaped=True)
        else:
            self._reaped_now()

    def kill_and_reap_now(self, *, everything: bool = True) -> None:
        """The last resort: SIGKILL the child (and, with ``everything``, all it reaches),
        reap the child, blocking.

        Briefly: SIGKILL cannot be caught, so the wait is the time the kernel takes to tear
        the child down. Members of its group and its tree are not ours to reap; they die of
        the signal and their own parents (or init) reap them. An interrupt meanwhile (Ctrl-C
        pressed twice) does not stop the job half done: the steps are safe to repeat.
        """
        if self.state.reaped or not self.ours():
            return
        deadline = time.monotonic() + KILL_GRACE
        while True:
            try:
                # Held back, a second Ctrl-C arrives once the job is done: raised as the
                # block ends, it is caught below, and the next round finds nothing to do.
                with signals_deferred():
                    self.send(SIGKILL, everything=everything)
                    self.reap_blocking()
                return
            except Exception:
                raise
            except BaseException:
                # Raised by a signal handler; give up only on a child that will not die.
                if time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        """Release the tree's descriptors (the waiter goes once the child is reaped)."""
        if self.tree is not None:
            self.tree.close()

    def abandon(self, *, kill: bool) -> bool:
        """The Child is being collected: True if the process was still running (it is then
        SIGKILLed if ``kill``, and reaped in the background whenever it exits)."""
        if self.tree is not None:
            self.tree.close()  # only our pidfds: descendants are left to kill_on_drop's rules
        waiter = self._waiter
        if waiter is None:
            return False
        if not self.ours():
            # A forked copy of the program: not our child to kill or reap.
            self._waiter = None
            waiter.close()
            return False
        try:
            running = not self.state.reaped and waiter.poll(reap=True) is None
        except ChildProcessError:
            running = False
        if running and kill:
            self.send(SIGKILL, everything=False)
        self._waiter = None
        if not running:
            waiter.close()
            return False
        waiter.abandon()
        return True

    # -- signals: the one path ---------------------------------------------------------

    def send(self, sig: int, *, everything: bool, session: bool = True) -> None:
        """Send ``sig`` to the child; with ``everything``, to its group (when it leads one
        and the group number is still pinned), the rest of its session (unless
        ``session`` is false: :meth:`signal_session` does that part) and its tree too.

        Never to a reaped child (its pid may be recycled) nor from a forked copy."""
        if not self.ours():
            return
        tree = self.tree if everything else None
        if tree is None:
            self._send_direct(sig, everything, session)
            return
        if tree.walking:
            # The exit policy's walk is under way (it lets other tasks run): it thaws what
            # it froze; what it found so far is signalled.
            self._send_direct(sig, everything, session)
            tree.signal(sig)
            return
        # Walk the tree before anything dies (a dead process's children are re-parented
        # out of reach), frozen so nothing forks meanwhile; _os/tree.py says why.
        try:
            tree.freeze(self._signal_root)
            self._send_direct(sig, everything, session)
            tree.signal(sig)
        finally:
            tree.thaw(self._signal_root)

    async def signal_session(self, sig: int) -> None:
        """Send ``sig`` to the rest of the session the child leads (other process groups:
        a shell's jobs), found by a census of ``/proc`` that the exit policies of all the
        sessions and groups being stopped share, taken off the event loop's thread.

        **Cancellation:** safe; nothing is sent if cancelled.
        """
        if self.session is not None and self.ours():
            await self.session.signal_shared(sig, self.group_signallable)

    async def send_everything(self, sig: int) -> None:
        """As ``send(sig, everything=True)``, for the exit policy: the tree's walk waits
        for a level slow to stop with the event loop running, and its steps take their
        turns (``_pacing.py``).

        **Cancellation:** as any exception in the walk: what was stopped is continued, and
        nothing is signalled.
        """
        tree = self.tree
        if tree is None or tree.walking or not self.ours():
            await paced(partial(self.send, sig, everything=True, session=False))
        else:
            try:
                await tree.freeze_async(self._signal_root)
                await paced(partial(self._signal_then_thaw, sig, tree))
            finally:
                tree.thaw(self._signal_root)  # what an exception left stopped (else nothing)
        await self.signal_session(sig)

    def _signal_then_thaw(self, sig: int, tree: Descendants) -> None:
        try:
            self._send_direct(sig, True, False)
            tree.signal(sig)
        finally:
            tree.thaw(self._signal_root)

    def _send_direct(self, sig: int, everything: bool, session: bool) -> None:
        if everything and self.group_signallable():
            try:
                signal_group(self.pid, sig)
            except ProcessLookupError:
                return
            logger.debug("sent %s to process group %d", signal_name(sig), self.pid)
            if session and self.session is not None:
                self.session.signal(sig)  # the rest of the session: other groups (jobs)
        elif self._signal_root(sig):
            logger.debug("sent %s to pid %d", signal_name(sig), self.pid)

    def _signal_root(self, sig: int) -> bool:
        """Signal the child itself; True if delivered, so its pid is its own."""
        if self.state.status is not None or self.state.reaped:
            return False
        with self._lock:
            waiter = self._waiter
            if waiter is None:  # pragma: no cover
                return False
            try:
                waiter.send_signal(sig)
            except ProcessLookupError:
                return False  # it exited (or was reaped elsewhere) since we last looked
        return True

    def group_signallable(self) -> bool:
        """True while the group number is still pinned by our unreaped leader."""
        if not self.leads_group or self.state.reaped:
            return False
        # A foreign reaper (a SIGCHLD handler calling waitpid(-1)) may have taken the
        # leader, freeing the group number for reuse: look again (without reaping, so an
        # unobserved exit still leaves the group pinned) before trusting it.
        waiter = self._waiter
        if waiter is not None:
            try:
                waiter.poll(reap=False)
            except ChildProcessError:
                if self.state.running:
                    self._record(ExitStatus.unknown(args=self.args), reaped=True)
                else:
                    self._reaped_now()
        return not self.state.reaped

    # -- what is left --------------------------------------------------------------------

    def still_running(self) -> bool:
        """Anything the exit policy must stop: the child, its tree, group or session."""
        if self.poll() is None:
            return True
        if self.tree is not None and self.tree.any_alive():
            return True
        if not self.group_signallable():
            return False
        # None means /proc could not be listed (fd exhaustion): members may be there, so
        # they get the signal and the grace period rather than being assumed gone; so do
        # members not known yet (no census since the exit: none is taken here, in the event
        # loop's thread, and a signal to a group of one zombie does no harm).
        if group_members_seen(self.pid, self.pid, self._exit_seen) is not False:
            return True
        return self.session is not None and self.session.alive_seen(self._exit_seen) is not False

    def group_unlistable(self) -> bool:
        """The child leads a group whose members cannot be listed (no /proc)."""
        if not self.leads_group:
            return False
        return group_members_seen(self.pid, self.pid, self._exit_seen) is None

    async def wait_all_gone(self) -> None:
        """Until the child, its group, session and tree are gone (no deadline of its own)."""
        await self.wait_exited()
        if self.group_signallable():
            # One census of /proc per round serves every group being waited for.
            await wait_group_empty(self.pid, self.pid, self._exit_seen)
            if self.session is not None:
                await self.session.wait_gone()
        if self.tree is not None:
            await self.tree.wait_gone()

    async def wait_all_gone_or_kill(self, deadline: float) -> bool:
        """Wait until ``deadline`` for everything to be gone, then SIGKILL what is left and
        reap the child. True if SIGKILL was needed."""
        with anyio.CancelScope(deadline=deadline) as scope:
            await self.wait_all_gone()
        escalated = scope.cancelled_caught
        if escalated:
            self.others_outlived = self.poll() is not None
            await self.send_everything(SIGKILL)
            with anyio.move_on_after(KILL_GRACE):
                await self.wait_all_gone()
        elif self.group_unlistable():
            # Members cannot be listed here: the shutdown signal was their chance.
            self._send_direct(SIGKILL, True, True)
        await self.wait_exited()  # the direct child, at least, always dies of SIGKILL
        self.reap_zombie()
        return escalated
