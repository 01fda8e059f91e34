"""Where a host is and how ``ssh`` is called to reach it: the command lines, as values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Target"]

#: Options that must be ours, whatever the user's configuration says: placed first on the
#: command line, where ssh takes the first value it is given.
_ALWAYS = (
    "BatchMode=yes",  # never a prompt: a missing key or unknown host fails at once
    "ClearAllForwardings=yes",  # a LocalForward in the user's config is not ours to open
    "PermitLocalCommand=no",
    "RemoteCommand=none",
    "EscapeChar=none",  # binary stdin is data, never "~." to the client
)

#: Defaults the user's ``options`` override (they come after them): notice a dead
#: connection within a minute.
_DEFAULTS = ("ServerAliveInterval=15", "ServerAliveCountMax=4")


@dataclass(frozen=True)
class Target:
    """A host as ``ssh`` is asked to reach it."""

    destination: str
    port: int | None = None
    options: tuple[tuple[str, str], ...] = ()
    config_file: str | None = None
    ssh: str = "ssh"
    connect_timeout: float = 30.0

    @classmethod
    def make(
        cls,
        destination: str,
        *,
        port: int | None,
        options: Mapping[str, str] | None,
        config_file: str | os.PathLike[str] | None,
        ssh: str,
        connect_timeout: float,
    ) -> Target:
        if not isinstance(destination, str) or not destination or destination.startswith("-"):
            raise ValueError(f"not a host to connect to: {destination!r}")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise ValueError(f"port must be an int between 1 and 65535, not {port!r}")
        pairs = []
        for key, value in (options or {}).items():
            if not isinstance(key, str) or not key.isalnum():
                raise ValueError(f"not an ssh option name: {key!r}")
            if not isinstance(value, str) or "\n" in value or "\0" in value:
                raise ValueError(f"ssh option {key} must be a one-line str, not {value!r}")
            pairs.append((key, value))
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0, not {connect_timeout!r}")
        return cls(
            destination,
            port,
            tuple(pairs),
            None if config_file is None else os.fspath(config_file),
            ssh,
            float(connect_timeout),
        )

    def _common(self, log: str, control_path: str, control_master: str) -> list[str]:
        argv = [self.ssh]
        if self.config_file is not None:
            argv += ["-F", self.config_file]
        argv += ["-E", log, "-T"]
        for option in (f"ControlPath={control_path}", f"ControlMaster={control_master}"):
            argv += ["-o", option]
        for option in _ALWAYS:
            argv += ["-o", option]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        for key, value in self.options:
            argv += ["-o", f"{key}={value}"]
        for option in (*_DEFAULTS, f"ConnectTimeout={max(1, round(self.connect_timeout))}"):
            argv += ["-o", option]
        return argv

    def master_argv(self, log: str, control_path: str, command: str) -> list[str]:
        """The master connection, running ``command`` (the agent) as its own session."""
        argv = self._common(log, control_path, "yes")
        argv[1:1] = ["-o", "ControlPersist=no"]
        return [*argv, "--", self.destination, command]

    def session_argv(self, log: str, control_path: str, command: str) -> list[str]:
        """One command over the master. ``ProxyCommand=false``: should the master be gone,
        ssh would otherwise quietly open a connection of its own, which nothing watches;
        this way it fails instead."""
        argv = self._common(log, control_path, "no")
        argv[1:1] = ["-o", "ProxyCommand=false"]
        return [*argv, "--", self.destination, command]
