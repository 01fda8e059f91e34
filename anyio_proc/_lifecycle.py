"""The states of a child process and of its exit policy, and the moves between them.

No I/O: the object only records what the code around it observed (an exit, a reap) and
decided (to start the exit policy), and refuses moves that make no sense, so a bug shows
up as an error here rather than as a zombie or a signal sent to a recycled pid.

The process::

    RUNNING --exit seen, zombie kept--> EXITED --reaped--> REAPED
    RUNNING --exit seen and reaped (or reaped by somebody else)--> REAPED

A group leader's zombie is kept (EXITED) while its group may still have members: the
unreaped leader pins the group number, so signalling the group cannot reach strangers.

The exit policy, independent of the process::

    OPEN --claim()--> CLOSING --finish()--> CLOSED
    OPEN --close_quietly()--> CLOSED      (nothing left to stop)

Only one caller wins ``claim()``; the others wait for CLOSED. The waiter (the pidfd or
thread watching the process) may be released once the process is REAPED and no task is
inside a wait, which :meth:`Lifecycle.waiter_releasable` tells.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._status import ExitStatus

__all__ = ["Lifecycle", "PolicyState", "ProcessState"]


class ProcessState(enum.Enum):
    RUNNING = "running"
    #: Exited; the zombie is kept to pin the process group number.
    EXITED = "exited"
    REAPED = "reaped"


class PolicyState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Lifecycle:
    """Where one child process and its exit policy stand."""

    __slots__ = ("policy", "process", "status", "waits")

    def __init__(self) -> None:
        self.process = ProcessState.RUNNING
        self.policy = PolicyState.OPEN
        self.status: ExitStatus | None = None
        #: Tasks inside a wait on the waiter: it must outlive them.
        self.waits = 0

    # -- the process -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is ProcessState.RUNNING

    @property
    def reaped(self) -> bool:
        return self.process is ProcessState.REAPED

    def exited(self, status: ExitStatus, *, reaped: bool) -> None:
        """The exit was seen: ``status``; the zombie was reaped with it, or is kept."""
        if self.process is not ProcessState.RUNNING:
            raise RuntimeError(f"exit recorded twice (state {self.process.value})")
        self.status = status
        self.process = ProcessState.REAPED if reaped else ProcessState.EXITED

    def reaped_now(self) -> None:
        """The zombie kept since the exit was seen is gone."""
        if self.process is ProcessState.RUNNING:
            raise RuntimeError("a running process cannot be reaped: record its exit first")
        self.process = ProcessState.REAPED

    def enter_wait(self) -> None:
        self.waits += 1

    def leave_wait(self) -> None:
        if self.waits <= 0:
            raise RuntimeError("leave_wait() without enter_wait()")
        self.waits -= 1

    @property
    def waiter_releasable(self) -> bool:
        """Reaped, and nobody is waiting: the waiter's descriptors can go."""
        return self.process is ProcessState.REAPED and self.waits == 0

    # -- the exit policy -------------------------------------------------------------

    def claim(self) -> bool:
        """Make the caller the one who applies the exit policy; False if somebody has."""
        if self.policy is not PolicyState.OPEN:
            return False
        self.policy = PolicyState.CLOSING
        return True

    def finish(self) -> None:
        """The policy that was claimed is over."""
        if self.policy is not PolicyState.CLOSING:
            raise RuntimeError(f"finish() without claim() (policy {self.policy.value})")
        self.policy = PolicyState.CLOSED

    def close_quietly(self) -> bool:
        """Closed without a policy (nothing was left to stop); False if already claimed."""
        if self.policy is not PolicyState.OPEN:
            return False
        self.policy = PolicyState.CLOSED
        return True

    @property
    def closed(self) -> bool:
        """The policy has started or ended: no new one may begin."""
        return self.policy is not PolicyState.OPEN

    def __repr__(self) -> str:
        return f"<Lifecycle {self.process.value}, policy {self.policy.value}, waits={self.waits}>"
