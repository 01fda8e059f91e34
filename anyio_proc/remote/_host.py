"""``ssh_host()`` and ``Host``: a host's connections, and the children started there."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio import TASK_STATUS_IGNORED

from .. import Command, Stdio
from .._spec import spec_of
from ._connection import Connection
from ._errors import ConnectionLost, SessionRefused
from ._spawn import RemoteSpawnContext, check_remote, start_remote_child
from ._target import Target

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup, TaskStatus

    from .. import Child, ExitStatus, Output
    from .._spec import Spec, StrOrBytesPath
    from ._child import RemoteChild
    from ._session import Session

__all__ = ["Host", "ssh_host"]


def ssh_host(
    destination: str,
    *,
    port: int | None = None,
    options: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    ssh: str = "ssh",
    connect_timeout: float = 30.0,
    max_sessions: int = 10,
    max_connections: int = 16,
) -> Host:
    """A host reached with the OpenSSH client, for ``async with``.

    ``destination`` is what ``ssh`` takes (``alice@build1``, or a ``Host`` of your
    ``~/.ssh/config``, whose settings, agent and keys apply); ``port`` is ``-p``;
    ``options`` are ``-o`` settings (``{"IdentityFile": "..."}``), which come before the
    configuration files and so take precedence; ``config_file`` is ``-F`` (instead of
    ``~/.ssh/config``); ``ssh`` the client program. ``BatchMode=yes`` is always set: a
    prompt never hangs, a missing key or an unknown host key fails at once.

    Entering the block opens one master connection (``ControlMaster``, in a private
    directory) and raises :class:`SSHError` (:class:`HostUnreachable`,
    :class:`AuthenticationFailed`, :class:`HostKeyRejected`) if it cannot. Each command
    is one session over a master. A server accepts ``max_sessions`` sessions per
    connection (sshd's ``MaxSessions``, 10 by default; the agent takes one): past that,
    another master is opened, up to ``max_connections``; past those, a spawn waits for a
    session to end.

    Leaving the block stops every remote child still running (its exit policy), ends
    the agents (which stop anything left, see docs/remote.md) and closes the masters.
    """
    if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 2:
        raise ValueError(f"max_sessions must be an int >= 2, not {max_sessions!r}")
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be an int >= 1, not {max_connections!r}")
    target = Target.make(
        destination,
        port=port,
        options=options,
        config_file=config_file,
        ssh=ssh,
        connect_timeout=connect_timeout,
    )
    return Host(target, sessions=max_sessions - 1, connections=max_connections)


class Host:
    """A remote host and the children started on it; see :func:`ssh_host`."""

    def __init__(self, target: Target, *, sessions: int, connections: int) -> None:
        self._target = target
        self._sessions_per_connection = sessions
        self._max_connections = connections
        self._connections: list[Connection] = []
        self._opened = 0
        self._workdir: str | None = None
        self._tg: TaskGroup | None = None
        self._closing = False
        self._slot_freed = anyio.Event()
        self._children: weakref.WeakSet[RemoteChild] = weakref.WeakSet()
        self._service_scopes: set[anyio.CancelScope] = set()

    @property
    def destination(self) -> str:
        return self._target.destination

    @property
    def closed(self) -> bool:
        """True once the host's block has begun to end (or its opening failed): spawning
        on it raises :class:`RuntimeError` from then on."""
        return self._closing

    def __repr__(self) -> str:
        state = "closed" if self._closing else f"{len(self._connections)} connection(s)"
        return f"<Host {self.destination!r} {state}>"

    # -- the block -----------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        if self._workdir is not None:
            raise RuntimeError("this host was already entered")
        # The control sockets and ssh's logs: readable by us only.
        self._workdir = tempfile.mkdtemp(prefix="anyio-proc-ssh-")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            connection = self._new_connection()
            await self._open(connection)
            connection.active = 0  # opened for the host, not for a spawn
        except BaseException:
            await self._end()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self._end()
        return None

    async def _end(self) -> None:
        """Close everything, then the task group (the exception of the block, if any,
        goes on as it is: the group's tasks never raise into it)."""
        tg = self._tg
        assert tg is not None
        try:
            await self._close_all()
        finally:
            for scope in self._service_scopes:
                scope.cancel()
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def _start_service(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` in the host's task group, shielded: a cancellation of the code
        around the host must not stop the readers its own closing depends on."""

        async def shielded() -> None:
            with anyio.CancelScope(shield=True) as scope:
                self._service_scopes.add(scope)
                try:
                    await task()
                finally:
                    self._service_scopes.discard(scope)

        assert self._tg is not None
        self._tg.start_soon(shielded)

    async def aclose(self) -> None:
        """Stop every child still running here and close the connections.

        **Cancellation:** shielded: the children's exit policies and the agents' cleanup
        complete (bounded by the longest grace period plus a margin) first.
        """
        await self._close_all()

    async def _close_all(self) -> None:
        with anyio.CancelScope(shield=True):
            self._closing = True
            self._slot_freed.set()
            errors: list[Exception] = []

            async def close(child: RemoteChild) -> None:
                try:
                    await child.aclose()
                except Exception as exc:  # a RuntimeWarning turned error: report it after
                    errors.append(exc)

            children = list(self._children)
            try:
                if children:
                    async with anyio.create_task_group() as tg:
                        for child in children:
                            tg.start_soon(close, child)
            finally:
                # Each waits for its agent's cleanup and its master: all at once.
                async with anyio.create_task_group() as tg:
                    for connection in self._connections:
                        tg.start_soon(connection.close)
                self._connections.clear()
                if self._workdir is not None:
                    shutil.rmtree(self._workdir, ignore_errors=True)
            if errors:
                raise errors[0]

    # -- connections ---------------------------------------------------------------------

    def _new_connection(self) -> Connection:
        assert self._workdir is not None
        connection = Connection(
            self._target, self._workdir, self._opened, self._sessions_per_connection
        )
        self._opened += 1
        connection.active = 1  # the slot of the spawn that opens it
        self._connections.append(connection)
        return connection

    async def _open(self, connection: Connection) -> None:
        assert self._tg is not None
        try:
            await connection.open(self._start_service)
        except BaseException as exc:
            # Spawns waiting for this connection get the error; never a cancellation,
            # which belongs to the task it was delivered to.
            connection.error = (
                exc
                if isinstance(exc, Exception)
                else ConnectionLost(self.destination, "opening the connection was interrupted")
            )
            connection.ready.set()
            self._connections.remove(connection)
            self._slot_freed.set()
            raise

    async def _slot(self) -> Connection:
        """A connection with a free session slot, taken; a new one if all are full."""
        while True:
            if self._closing:
                raise RuntimeError(f"{self!r} is closed")
            for connection in self._connections:
                if connection.lost:
                    continue
                if connection.active < connection.capacity:
                    connection.active += 1
                    if not connection.ready.is_set():
                        try:
                            await connection.ready.wait()
                        except BaseException:
                            connection.active -= 1  # cancelled: the slot goes back
                            raise
                        if connection.error is not None:
                            connection.active -= 1
                            raise connection.error
                    return connection
            live = sum(1 for c in self._connections if not c.lost)
            if live < self._max_connections:
                connection = self._new_connection()
                await self._open(connection)
                return connection
            freed = self._slot_freed = anyio.Event()
            await freed.wait()

    def _watch(self, connection: Connection, session: Session, local: Child) -> None:
        async def watch() -> None:
            try:
                await connection.watch(session, local)
            finally:
                self._slot_freed.set()

        self._start_service(watch)

    # -- commands ------------------------------------------------------------------------

    def spawn(
        self, cmd: Command | Sequence[StrOrBytesPath] | StrOrBytesPath
    ) -> RemoteSpawnContext[RemoteChild]:
        """Start ``cmd`` on the host: ``async with host.spawn(cmd) as child:``, or
        ``child = await host.spawn(cmd)`` as with :func:`anyio_proc.spawn`.

        The ``Command`` is the same builder: arguments are passed exactly (each quoted
        for the remote shell), ``env``/``env_remove``/``env_clear`` and ``current_dir``
        apply on the host (over the environment the login gives), stdio settings apply to
        the local ends of the session. Options without meaning there (``uid``,
        ``pass_fds``, ``pre_exec``, ``pty``...) raise :class:`ValueError`.

        Raises :class:`FileNotFoundError` naming the host when the program or the working
        directory does not exist there, :class:`SSHError` when no session can be opened.

        **Cancellation:** as :func:`anyio_proc.spawn`: once the remote command may exist,
        the start completes and the caller gets the child (or the block stops it).
        """
        spec = spec_of(_as_command(cmd))
        check_remote(spec)
        return RemoteSpawnContext(lambda: self._start(spec))

    async def _start(self, spec: Spec) -> RemoteChild:
        refused: Connection | None = None
        while True:
            connection = await self._slot()
            try:
                child = await start_remote_child(connection, spec, partial(self._watch, connection))
            except SessionRefused:
                if refused is not connection:
                    # A session that ended here a moment ago may not be closed at the
                    # server yet: once the agent answers, it is; then try again.
                    refused = connection
                    await connection.barrier()
                    continue
                # Refused again: the server allows fewer sessions than we were told, and
                # what this connection has open now is its limit. Another one, or wait.
                if connection.active == 0:
                    raise
                connection.capacity = connection.active
                refused = None
                continue
            self._children.add(child)
            return child

    async def status(
        self,
        cmd: Command | Sequence[StrOrBytesPath] | StrOrBytesPath,
        *,
        task_status: TaskStatus[Child] = TASK_STATUS_IGNORED,
    ) -> ExitStatus:
        """Run ``cmd`` on the host to completion, stdio inherited; its exit status.

        **Cancellation:** the remote command gets the exit policy (signal, grace period,
        SIGKILL) before the cancellation propagates.
        """
        async with self.spawn(cmd) as child:
            task_status.started(child)
            return await child.wait()

    async def output(
        self,
        cmd: Command | Sequence[StrOrBytesPath] | StrOrBytesPath,
        *,
        task_status: TaskStatus[Child] = TASK_STATUS_IGNORED,
    ) -> Output:
        """Run ``cmd`` on the host with stdout and stderr captured and stdin null
        (unless set); does not raise for a failed status (call ``.check()``).

        **Cancellation:** as :meth:`status`; the output read so far is lost.
        """
        command = _as_command(cmd)
        spec = spec_of(command).with_stdio_defaults(Stdio.NULL, Stdio.PIPE, Stdio.PIPE)
        check_remote(spec)
        async with RemoteSpawnContext(lambda: self._start(spec)) as child:
            task_status.started(child)
            return await child.wait_with_output()


def _as_command(cmd: Any) -> Command:
    if isinstance(cmd, Command):
        return cmd
    if isinstance(cmd, (str, bytes, os.PathLike)):
        return Command(cmd)
    argv = list(cmd)
    if not argv:
        raise ValueError("cannot spawn an empty argument list")
    return Command(argv[0], *argv[1:])
