"""Child processes on other hosts, over OpenSSH, with the same structured lifetimes.

::

    from anyio_proc import Command
    from anyio_proc.remote import ssh_host

    async with ssh_host("alice@build1") as host:
        async with host.spawn(Command("make", "-j8").stdout_piped()) as child:
            async for line in child.stdout.lines():
                print(line)

Leaving either block, however it ends (or the program being killed, or the connection
dropping), stops the remote process group: see docs/remote.md for the guarantee, its
costs and what can still escape.
"""

from __future__ import annotations

from ._child import RemoteChild as RemoteChild
from ._errors import AuthenticationFailed as AuthenticationFailed
from ._errors import ConnectionLost as ConnectionLost
from ._errors import HostKeyRejected as HostKeyRejected
from ._errors import HostUnreachable as HostUnreachable
from ._errors import SessionRefused as SessionRefused
from ._errors import SSHError as SSHError
from ._host import Host as Host
from ._host import ssh_host as ssh_host
from ._spawn import RemoteSpawnContext as RemoteSpawnContext

__all__ = [
    "AuthenticationFailed",
    "ConnectionLost",
    "Host",
    "HostKeyRejected",
    "HostUnreachable",
    "RemoteChild",
    "RemoteSpawnContext",
    "SSHError",
    "SessionRefused",
    "ssh_host",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("anyio_proc.remote."):
        _obj.__module__ = __name__
del _name, _obj
