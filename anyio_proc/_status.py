"""Exit statuses, captured output and the error raised for a failed process."""

from __future__ import annotations

import os
import shlex
import signal as _signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ExitStatus", "Output", "ProcessFailed", "signal_name"]

_REAPED_ELSEWHERE = "reaped elsewhere"

#: How many trailing stderr lines a ProcessFailed message quotes.
_STDERR_TAIL_LINES = 10


def signal_name(signum: int, unknown: str | None = None) -> str:
    """The name of signal ``signum`` (``"SIGTERM"``); for a number this system has no
    name for, ``unknown`` if given, else the number itself (``"99"``)."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return str(signum) if unknown is None else unknown


class ExitStatus(int):
    """How a child process ended.

    An ``int`` whose value is the ``returncode`` as :mod:`subprocess` reports it: the exit
    code, or the negated signal number when a signal killed the process. So
    ``await child.wait() == 0`` reads naturally and code written for
    :class:`anyio.abc.Process` keeps working.

    When another part of the program reaped the child first (a ``SIGCHLD`` handler that calls
    ``waitpid(-1)``, or ``SIGCHLD`` set to ``SIG_IGN``), the real status is lost: the value is
    then ``0`` with :attr:`known` false, :attr:`code` and :attr:`signal` ``None`` and
    :attr:`success` false; :attr:`why` says why it is unknown (a remote child's, when the
    connection was lost).
    """

    args: tuple[str, ...]
    known: bool
    #: Why the status is unknown (``"reaped elsewhere"``), or ``None`` when it is known.
    why: str | None

    def __new__(
        cls,
        returncode: int,
        *,
        args: Sequence[str] = (),
        known: bool = True,
        why: str | None = None,
    ) -> ExitStatus:
        self = super().__new__(cls, returncode)
        self.args = tuple(args)
        self.known = known
        self.why = None if known else (why or _REAPED_ELSEWHERE)
        return self

    @classmethod
    def unknown(cls, *, args: Sequence[str] = (), why: str = "reaped elsewhere") -> ExitStatus:
        """The status of a child whose exit status cannot be known: by default, one that
        was consumed by someone else."""
        return cls(0, args=args, known=False, why=why)

    @property
    def returncode(self) -> int:
        """The value as :attr:`subprocess.Popen.returncode` would give it."""
        return int(self)

    @property
    def code(self) -> int | None:
        """The exit code, or ``None`` if a signal ended the process (or it is unknown)."""
        value = int(self)
        return value if value >= 0 and self.known else None

    @property
    def signal(self) -> int | None:
        """The number of the signal that ended the process, or ``None``."""
        value = int(self)
        return -value if value < 0 else None

    @property
    def success(self) -> bool:
        """True when the process exited with code 0."""
        return self.known and int(self) == 0

    def check(self) -> ExitStatus:
        """Return ``self`` if the process succeeded, else raise :class:`ProcessFailed`."""
        if not self.success:
            raise ProcessFailed(self, self.args)
        return self

    def __str__(self) -> str:
        if not self.known:
            return f"exit status: unknown ({self.why})"
        signum = self.signal
        if signum is not None:
            return f"signal: {signum} ({signal_name(signum, 'unknown signal')})"
        return f"exit status: {int(self)}"

    def __repr__(self) -> str:
        return (
            f"ExitStatus(returncode={int(self)}, code={self.code}, signal={self.signal}, "
            f"success={self.success})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_status, (int(self), self.args, self.known, self.why))


def _rebuild_status(
    returncode: int, args: tuple[str, ...], known: bool, why: str | None = None
) -> ExitStatus:
    return ExitStatus(returncode, args=args, known=known, why=why)


@dataclass(frozen=True)
class Output:
    """What :meth:`Command.output` and :meth:`Child.wait_with_output` collect."""

    status: ExitStatus
    stdout: bytes
    stderr: bytes

    @property
    def returncode(self) -> int:
        return self.status.returncode

    def check(self) -> Output:
        """Return ``self`` if the process succeeded, else raise :class:`ProcessFailed`."""
        if not self.status.success:
            raise ProcessFailed(self.status, self.status.args, self.stdout, self.stderr)
        return self


class ProcessFailed(subprocess.CalledProcessError):
    """Raised when a process that was required to succeed exited with another status.

    It is a :class:`subprocess.CalledProcessError`, so ``returncode``, ``cmd``, ``output``
    (alias ``stdout``) and ``stderr`` are where ``subprocess`` users look for them; ``status``
    is the :class:`ExitStatus`. The message ends with the last lines of stderr, when any were
    captured.
    """

    status: ExitStatus

    def __init__(
        self,
        status: int,
        cmd: Any,
        output: bytes | None = None,
        stderr: bytes | None = None,
    ) -> None:
        if not isinstance(status, ExitStatus):
            argv = [cmd] if isinstance(cmd, (str, bytes, os.PathLike)) else list(cmd)
            status = ExitStatus(status, args=[os.fsdecode(a) for a in argv])
        super().__init__(int(status), cmd, output, stderr)
        self.status = status

    def __str__(self) -> str:
        cmd = self.cmd
        if isinstance(cmd, (str, bytes)):
            shown = os.fsdecode(cmd)
        else:
            # Quoted as a shell would need it, so the message can be pasted and tells
            # ["a b"] from ["a", "b"].
            shown = shlex.join(
                os.fsdecode(a) if isinstance(a, (bytes, str)) else str(a) for a in cmd
            )
        if self.status.why == _REAPED_ELSEWHERE:
            head = f"Command `{shown}` was reaped elsewhere; its exit status is unknown"
        elif not self.status.known:
            head = f"Command `{shown}`: its exit status is unknown ({self.status.why})"
        elif self.status.signal is not None:
            head = f"Command `{shown}` died with {self.status}"
        else:
            head = f"Command `{shown}` failed with {self.status}"
        tail = _stderr_tail(self.stderr)
        return f"{head}\n{tail}" if tail else head

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.cmd, self.output, self.stderr))


def _stderr_tail(stderr: bytes | str | None) -> str:
    if not stderr:
        return ""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = text.rstrip("\n").splitlines()[-_STDERR_TAIL_LINES:]
    return "\n".join("  " + line for line in lines)
