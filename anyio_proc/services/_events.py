"""What a service reports: its output lines, its events, and its failure (values only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from anyio_proc import ExitStatus

__all__ = ["EventKind", "OutputLine", "ServiceEvent", "ServiceFailed", "StreamName"]

StreamName = Literal["stdout", "stderr"]
EventKind = Literal["spawned", "ready", "exited", "restarting", "stopping", "failed"]


class OutputLine(NamedTuple):
    """One line of a service's output, without its line ending."""

    service: str
    stream: StreamName
    line: str


@dataclass(frozen=True)
class ServiceEvent:
    """Something that happened to a service, for logs and progress displays.

    ``exited`` carries the ``status``, whether the supervisor ``stopped`` it, and whether
    its exit policy ``escalated`` to SIGKILL (the process, or something left in its process
    group or tree, outlived the shutdown signal's grace period; the status alone does not
    tell, as the leader of a group may have obeyed the signal while a member did not);
    ``restarting`` the ``delay`` before the next start; ``spawned`` the ``pid``.
    """

    service: str
    kind: EventKind
    pid: int | None = None
    status: ExitStatus | None = None
    stopped: bool = False
    delay: float | None = None
    message: str = ""
    escalated: bool = False

    def __str__(self) -> str:
        if self.kind == "spawned":
            return f"started with pid {self.pid}"
        if self.kind == "exited":
            text = f"{'stopped' if self.stopped else 'exited'}: {self.status}"
            if self.escalated:
                text += "; escalated to SIGKILL after the grace period"
            return text
        if self.kind == "restarting" and self.delay is not None:
            # Past a day, %g: a huge backoff is a number, not a line of digits.
            delay = f"{self.delay:.2f}" if self.delay < 86400 else f"{self.delay:.3g}"
            return f"restarting in {delay} s"
        return self.message or self.kind


class ServiceFailed(Exception):
    """Raised when a service cannot be kept running: it exited before it was ready and is
    not restarted, was not ready within its ``ready_timeout``, could not be started, or
    needed more restarts than its limit allows within the window.

    ``service`` is its name, ``status`` the exit status of its last run (``None`` if no
    process ran).
    """

    def __init__(self, service: str, reason: str, status: ExitStatus | None = None) -> None:
        self.service = service
        self.reason = reason
        self.status = status
        tail = f" (last run: {status})" if status is not None else ""
        super().__init__(f"service {service!r} {reason}{tail}")
