"""The errors of remote processes: a connection that cannot be opened, or is lost."""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ConnectionLost",
    "HostKeyRejected",
    "HostUnreachable",
    "SSHError",
    "SessionRefused",
    "classify",
]


class SSHError(ConnectionError):
    """Raised when ``ssh`` cannot open or keep the connection to a host.

    ``host`` is the destination as given; ``detail`` what ``ssh`` said (its own log, never
    mixed with a command's output); ``returncode`` the exit code of the ``ssh`` process
    when it had exited (255 for ssh's own failures).
    """

    def __init__(self, host: str, message: str, detail: str = "", returncode: int | None = None):
        self.host = host
        self.detail = detail.strip()
        self.returncode = returncode
        text = f"{host}: {message}"
        if self.detail:
            text += f"\nssh said: {self.detail}"
        super().__init__(text)


class HostUnreachable(SSHError):
    """Raised when the host cannot be reached: no such name, connection refused, timeout."""


class AuthenticationFailed(SSHError):
    """Raised when the host refused every key offered (``BatchMode``: nothing is ever asked
    on a terminal, so a key that needs a passphrase or a password login fails here too)."""


class HostKeyRejected(SSHError):
    """Raised when the host's key is unknown or differs from the one in known_hosts.

    Never bypassed: add the key to known_hosts (``ssh-keyscan``, or one interactive
    ``ssh``) after checking its fingerprint."""


class SessionRefused(SSHError):
    """Raised when the server refused one more session on a connection (its
    ``MaxSessions`` is lower than ``ssh_host(max_sessions=...)`` said); the host then
    counts fewer sessions for that connection and starts the command on another."""


class ConnectionLost(SSHError):
    """Raised when the connection to the host ended while it was in use (the master
    ``ssh`` process died, or the network dropped and keepalives noticed)."""


_KINDS: tuple[tuple[type[SSHError], tuple[str, ...]], ...] = (
    (HostKeyRejected, ("Host key verification failed", "HOST IDENTIFICATION HAS CHANGED")),
    (AuthenticationFailed, ("Permission denied", "Too many authentication failures")),
    (
        HostUnreachable,
        (
            "Connection refused",
            "Connection timed out",
            "Could not resolve hostname",
            "No route to host",
            "Network is unreachable",
            "Connection closed by",
            "Connection reset",
        ),
    ),
)


def classify(host: str, detail: str, returncode: int | None) -> SSHError:
    """The error for a master connection that ended before it was ready."""
    for kind, needles in _KINDS:
        if any(needle in detail for needle in needles):
            message = {
                HostKeyRejected: "the host key is unknown or has changed",
                AuthenticationFailed: "authentication was refused",
                HostUnreachable: "the host cannot be reached",
            }[kind]
            return kind(host, message, detail, returncode)
    return SSHError(host, "ssh could not open the connection", detail, returncode)
