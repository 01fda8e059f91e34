"""Readiness checks: a line of output matching a pattern, or a TCP port accepting."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

if TYPE_CHECKING:
    from ._events import StreamName

__all__ = [
    "ReadyCheck",
    "ReadyLine",
    "ReadyPort",
    "check_remote_ready",
    "line_pattern",
    "wait_for_port",
]

# Polling a port: there is no event for "someone listens now". Start fast, since servers
# usually bind within milliseconds, and back off to a light load.
_PORT_POLL_FIRST = 0.01
_PORT_POLL_MAX = 0.25


@dataclass(frozen=True)
class ReadyLine:
    """Ready once a line of output matches ``pattern`` (``re.search``); ``stream`` limits
    the search to ``"stdout"`` or ``"stderr"``."""

    pattern: str | re.Pattern[str]
    stream: Literal["stdout", "stderr"] | None = None

    def __post_init__(self) -> None:
        if self.stream not in (None, "stdout", "stderr"):
            raise ValueError(
                f"ReadyLine stream must be 'stdout', 'stderr' or None, not {self.stream!r}"
            )
        try:
            self.compiled()  # a bad regular expression fails here, not in start()
        except re.error as exc:
            raise ValueError(f"ReadyLine: bad regular expression {self.pattern!r}: {exc}") from exc

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern) if isinstance(self.pattern, str) else self.pattern


@dataclass(frozen=True)
class ReadyPort:
    """Ready once a TCP connection to ``host:port`` succeeds.

    Anything listening there counts, so pick a port the service owns. The connection is
    made from this machine, also for a service on a remote host, which therefore needs a
    ``host`` naming that machine (see :meth:`Supervisor.start`).
    """

    port: int
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        # Checked here: a bad port would otherwise fail inside the supervisor's polling task
        # (OverflowError from the socket layer), not where the mistake is.
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"ReadyPort port must be an int, not {type(self.port).__name__}")
        if not 0 < self.port < 65536:
            raise ValueError(f"ReadyPort port {self.port} is out of range (1-65535)")


#: What ``Supervisor.start(ready=...)`` takes.
ReadyCheck = ReadyLine | ReadyPort


def _names_this_machine(host: str) -> bool:
    """True for an address that always means the machine the connection is made from
    (loopback, ``localhost``, the unspecified address), whatever host a service runs on."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False  # a host name: it names whichever machine it resolves to
    return address.is_loopback or address.is_unspecified


def check_remote_ready(check: ReadyCheck | None, destination: str) -> None:
    """Refuse a :class:`ReadyPort` that would poll this machine for a service that runs on
    ``destination``: its port is open (or not) there, not here."""
    if isinstance(check, ReadyPort) and _names_this_machine(check.host):
        raise ValueError(
            f"ReadyPort({check.port}, host={check.host!r}) would check this machine, but the "
            f"service runs on {destination!r}: give the address the port is reachable at "
            f"from here (ReadyPort({check.port}, host=...)), or use a ReadyLine"
        )


def line_pattern(check: ReadyCheck | None, stream: StreamName) -> re.Pattern[str] | None:
    """The pattern to search in the lines of ``stream``, if ``check`` looks at them."""
    if isinstance(check, ReadyLine) and check.stream in (None, stream):
        return check.compiled()
    return None


async def wait_for_port(check: ReadyPort) -> None:
    """Return once a TCP connection to the check's address succeeds.

    **Cancellation:** safe; it only polls (a connection being made is closed).
    """
    delay = _PORT_POLL_FIRST
    while True:
        try:
            conn = await anyio.connect_tcp(check.host, check.port)
        except OSError:
            await anyio.sleep(delay)
            delay = min(delay * 2, _PORT_POLL_MAX)
            continue
        await conn.aclose()
        return
