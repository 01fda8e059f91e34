"""What the program knows of one remote command, from the agent's reports and its ``ssh``.

A :class:`Session` is filled in by the connection's reader (the reports) and by its
watcher (the local ``ssh`` session process ending); the remote child's handle and the
spawn only read it and wait on its events. No I/O here.
"""

from __future__ import annotations

import signal as _signal

import anyio

from .._os.signals import SIGKILL
from .._status import ExitStatus

__all__ = ["Session", "remote_signal_name"]


def remote_signal_name(sig: int) -> str:
    """The name the remote ``kill -s`` takes for ``sig`` (``TERM``): numbers differ
    between systems, names do not."""
    try:
        name = _signal.Signals(sig).name
    except ValueError:
        raise ValueError(f"signal {sig} has no portable name to send to a remote host") from None
    return name[3:] if name.startswith("SIG") else name


def _local_signal(name: str) -> int | None:
    value = getattr(_signal, f"SIG{name}", None)
    return int(value) if isinstance(value, int) else None


class Session:
    """One remote command: its group and pid, its start and exit as reported."""

    def __init__(self, token: int, args: tuple[str, ...], timeout: float) -> None:
        self.token = token
        self.args = args
        self.timeout = timeout
        self.pgid: int | None = None
        #: The group the wrapper registered with the agent, even if the command never ran.
        self.group: int | None = None
        self.pid: int | None = None
        #: Why it could not start: "cwd", "program", "closing", or "session" when the
        #: ssh session ended before the command started.
        self.failure: str | None = None
        self.status: ExitStatus | None = None
        #: Set once the command runs, or could not start (failure set).
        self.started = anyio.Event()
        #: Set once ``status`` is known.
        self.reported = anyio.Event()
        self.group_gone = anyio.Event()
        self.synced = anyio.Event()
        #: Set once the local ssh session process has exited (and been reaped).
        self.local_done = anyio.Event()
        #: We sent SIGKILL to the group: a wrapper gone without a report was killed by it.
        self.killed = False
        #: The connection went away: nothing more will be reported.
        self.lost = False

    # -- reports -------------------------------------------------------------------------

    def on_started(self, pgid: int, pid: int) -> None:
        self.pgid = self.group = pgid
        self.pid = pid
        self.started.set()

    def on_failed(self, kind: str, group: int | None) -> None:
        if self.pgid is None:
            self.failure = kind
            self.group = group
            self.started.set()

    def on_exited(self, kind: str, value: str) -> None:
        if self.status is not None:
            return
        returncode: int | None = None
        if kind == "s":
            signum = _local_signal(value)
            returncode = None if signum is None else -signum
        elif value.isdigit():
            returncode = int(value)
        self.status = (
            ExitStatus.unknown(
                args=self.args,
                why=f"signal {value} on the host, which has no number here"
                if kind == "s"
                else f"the host reported {value!r}",
            )
            if returncode is None
            else ExitStatus(returncode, args=self.args)
        )
        self.reported.set()

    def on_lost(self) -> None:
        """The connection is gone: wake every wait; the watcher settles the status."""
        self.lost = True
        self.group_gone.set()
        self.synced.set()

    # -- the local ssh session has ended -------------------------------------------------

    def settle(self, local_returncode: int) -> None:
        """The local ``ssh`` has exited and every report sent before is in: decide what
        was not reported."""
        if self.pgid is None and self.failure is None:
            self.failure = "session"
        if self.status is None:
            if self.pgid is None or self.lost:
                # Never started, or nobody left to ask: what ssh itself said, or nothing.
                if self.lost:
                    self.status = ExitStatus.unknown(args=self.args, why="connection lost")
                elif local_returncode == 255:
                    self.status = ExitStatus.unknown(args=self.args, why="ssh failed")
                else:
                    self.status = ExitStatus(local_returncode, args=self.args)
            else:
                # The wrapper traps every signal but one: it can end without a report
                # only when SIGKILL reaches its group.
                self.status = ExitStatus(-SIGKILL, args=self.args)
        self.local_done.set()
        if self.pgid is None:
            self.group_gone.set()  # no group was ever made
        self.started.set()
        self.reported.set()
