"""``RemoteChild``: a :class:`~anyio_proc.Child` whose process runs on another host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import Child

if TYPE_CHECKING:
    from ._handle import RemoteProcessHandle

__all__ = ["RemoteChild"]


class RemoteChild(Child):
    """A child process on a remote host, started by :meth:`Host.spawn`.

    Everything of :class:`~anyio_proc.Child` applies: the streams are the local ``ssh``
    session's pipes, :meth:`~anyio_proc.Child.wait` returns the remote command's own
    status (a signal that killed it included), signals reach the remote command
    (``send_signal``, ``terminate``) or its whole process group (``kill``, the exit
    policy), and leaving the block stops the remote group and reaps the local ``ssh``.

    :attr:`~anyio_proc.Child.pid` is the local ``ssh`` process; :attr:`remote_pid` and
    :attr:`remote_pgid` are the command's numbers on the host.
    """

    _process: RemoteProcessHandle

    @property
    def host(self) -> str:
        """The destination the command runs on, as given to :func:`ssh_host`."""
        return self._process.connection.host

    @property
    def remote_pid(self) -> int | None:
        """The command's process id on the remote host."""
        return self._process.remote.pid

    @property
    def remote_pgid(self) -> int | None:
        """The remote process group the command leads (its wrapper's, see docs/remote.md)."""
        return self._process.remote.pgid

    def __repr__(self) -> str:
        status = self._process.status
        state = "running" if status is None else f"exited ({status})"
        return (
            f"<RemoteChild {self.host} remote_pid={self.remote_pid} {state} "
            f"{list(self._process.args)!r}>"
        )
