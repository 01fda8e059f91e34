"""The process handle of a remote child: what ``Child`` and its exit policy drive.

It stands where a local :class:`~anyio_proc._process.ProcessHandle` stands, with the same
methods, over two things: the remote command (its status comes from the agent's reports,
its signals go through the agent, to its pid or its process group), and the local ``ssh``
session process that carries its streams (a real local child, reaped here).

The states map onto the local ones: ``RUNNING`` until the command's exit is reported;
``EXITED`` while its group (which may still have members) and the ssh session are not
dealt with, as a group leader's zombie is kept; ``REAPED`` once the group is gone (or
killed) and the local ssh has exited and been reaped.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import anyio

from .._child import discard
from .._lifecycle import Lifecycle
from .._os.signals import SIGKILL
from .._process import KILL_GRACE, ProcessHandle
from .._status import ExitStatus, signal_name
from ._session import remote_signal_name

if TYPE_CHECKING:
    from .. import Child
    from ._connection import Connection
    from ._session import Session

__all__ = ["RemoteProcessHandle"]

logger = logging.getLogger("anyio_proc")

#: After the remote group is gone, how long the local ssh may take to see its session end
#: (a descendant that left the group can still hold the session's output open).
_SESSION_END_GRACE = 5.0


class RemoteProcessHandle(ProcessHandle):
    """A remote command and its local ``ssh`` session, as ``Child`` sees a process.

    Every method ``Child``, its policies and its module functions call is defined here;
    the local machinery of the base class (waiters, ``/proc``) is not used, so its
    ``__init__`` is not called.
    """

    def __init__(self, connection: Connection, session: Session, local: Child) -> None:
        # Not ProcessHandle.__init__: see the class docstring. The names Child reads:
        self.pid = local.pid  # a local pid, like every Child's
        self.args = session.args
        self.state = Lifecycle()
        self.leads_group = True
        self.keep_zombie = True
        self.session = None  # the local notion (a session leader's other groups)
        self.tree = None
        self.connection = connection
        self.remote = session
        self.local = local
        self._owner = os.getpid()
        self._started = time.monotonic()

    def ours(self) -> bool:
        return os.getpid() == self._owner

    # -- exit ----------------------------------------------------------------------------

    def poll(self) -> ExitStatus | None:
        status = self.state.status
        if status is not None:
            return status
        status = self.remote.status
        if status is None:
            return None
        self.state.exited(status, reaped=False)
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = time.monotonic() - self._started
            logger.debug(
                "remote pid %s on %s exited: %s after %.3f s",
                self.remote.pid,
                self.connection.host,
                status,
                elapsed,
            )
        return status

    async def wait_exited(self, *, polled: bool = False) -> ExitStatus:
        self.state.enter_wait()
        try:
            status = self.poll()
            while status is None:
                await self.remote.reported.wait()
                status = self.poll()
            return status
        finally:
            self.state.leave_wait()

    def _reaped(self) -> None:
        """The group is dealt with and the local ssh reaped: forget them."""
        if self.state.reaped:
            return
        discard(self.local)  # exited and reaped by now; closes what it still holds
        if self.state.running:
            status = self.remote.status or ExitStatus(-SIGKILL, args=self.args)
            self.state.exited(status, reaped=True)
        else:
            self.state.reaped_now()
        self.connection.forget(self.remote)

    def reap_zombie(self) -> None:
        if self.remote.local_done.is_set():
            self._reaped()

    def reap_blocking(self) -> None:
        self._reaped()

    def kill_and_reap_now(self, *, everything: bool = True) -> None:
        """The last resort, without waiting: SIGKILL to the remote group (an order the
        agent carries out on its own), SIGKILL to the local ssh, which is reaped."""
        if self.state.reaped or not self.ours():
            return
        self.send(SIGKILL, everything=everything)
        self.remote.killed = True
        self._reaped()

    def close(self) -> None:
        pass

    def abandon(self, *, kill: bool) -> bool:
        if self.state.reaped or not self.ours():
            return False
        running = self.remote.status is None
        if kill:
            self.send(SIGKILL, everything=False)
        # The local ssh is left to its watcher task, which reaps it when it ends.
        return running

    # -- signals -------------------------------------------------------------------------

    def send(self, sig: int, *, everything: bool, session: bool = True) -> None:
        """Send ``sig`` through the agent: to the remote group with ``everything``, else
        to the command itself while it runs. Never once the group has been dealt with.
        (``session``: the local notion of the other groups of a session the child leads,
        which a remote child has none of.)"""
        if not self.ours() or self.state.reaped:
            return
        remote = self.remote
        name = "KILL" if sig == SIGKILL else remote_signal_name(sig)
        if everything and remote.pgid is not None:
            if self.connection.post(f"k {name} {remote.pgid}"):
                remote.killed |= sig == SIGKILL
                logger.debug(
                    "sent %s to remote group %d on %s",
                    signal_name(sig),
                    remote.pgid,
                    self.connection.host,
                )
        elif (
            remote.pid is not None
            and remote.status is None
            and self.connection.post(f"s {name} {remote.pid}")
        ):
            logger.debug(
                "sent %s to remote pid %d on %s",
                signal_name(sig),
                remote.pid,
                self.connection.host,
            )

    def group_signallable(self) -> bool:
        return not self.state.reaped and self.remote.pgid is not None

    # -- what is left --------------------------------------------------------------------

    def still_running(self) -> bool:
        """True until the remote group is known to be gone and the local ssh has ended:
        whether a group has members is only known by asking the agent, which the policy's
        wait (:meth:`wait_all_gone`) does."""
        if self.state.reaped:
            return False
        done = self.remote.local_done.is_set()
        return not (done and (self.remote.group_gone.is_set() or self.remote.lost))

    def group_unlistable(self) -> bool:
        return False

    async def _group_gone(self) -> None:
        remote = self.remote
        if remote.pgid is None or remote.group_gone.is_set():
            return
        if self.connection.post(f"w {remote.token} {remote.pgid}"):
            await remote.group_gone.wait()

    async def wait_all_gone(self) -> None:
        """Until the command has exited, its group is empty and the local ssh has ended.

        The session ends once sshd has reaped the wrapper (and the group's members have
        let go of its output): asking the agent after that, its first look usually finds
        the group gone, where the wrapper's zombie would have made it wait a step."""
        await self.wait_exited()
        await self.remote.local_done.wait()
        await self._group_gone()

    async def wait_all_gone_or_kill(self, deadline: float) -> bool:
        with anyio.CancelScope(deadline=deadline) as scope:
            await self.wait_all_gone()
        escalated = scope.cancelled_caught
        if escalated:
            self.send(SIGKILL, everything=True)
            with anyio.move_on_after(KILL_GRACE):
                await self.wait_exited()
                await self._group_gone()
        # A descendant that left the group (setsid) can keep the session's output open,
        # and with it the local ssh: it escapes, but the ssh is ours and is stopped.
        with anyio.move_on_after(_SESSION_END_GRACE):
            await self.remote.local_done.wait()
        self._reaped()
        return escalated
