"""Starting one command on a host: the checks, the local ``ssh`` session, the ``Child``."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, NoReturn, TypeVar

import anyio

from .. import Child, Command, SpawnContext, Stdio, spawn
from .._child import discard
from ._child import RemoteChild
from ._errors import ConnectionLost, SessionRefused, SSHError
from ._handle import RemoteProcessHandle
from ._scripts import command_script, remote_env_name, wrapper_command
from ._session import remote_signal_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import AsyncResource

    from .._spec import Spec
    from ._connection import Connection
    from ._session import Session

__all__ = ["RemoteSpawnContext", "check_remote", "start_remote_child"]


def check_remote(spec: Spec) -> None:
    """Refuse, before anything starts, what has no meaning on a remote host."""
    unsupported = {
        "pre_exec": spec.pre_exec is not None,
        "uid": spec.uid is not None,
        "gid": spec.gid is not None,
        "groups": spec.groups is not None,
        "pass_fds": bool(spec.pass_fds),
        "arg0": spec.arg0 is not None,
        "creation_flags": bool(spec.creation_flags),
        "kill_tree": spec.kill_tree,
        "pty": Stdio.PTY in (spec.stdin, spec.stdout, spec.stderr),
        "process_group(pgid) with pgid != 0": spec.process_group not in (None, 0),
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(f"not available for a remote command: {', '.join(named)}")
    for key, _ in spec.env:
        remote_env_name(key)
    remote_signal_name(spec.shutdown_signal)


def _local_ssh(spec: Spec, argv: list[str]) -> Command:
    """The local ``ssh`` session, with the stdio the user asked of the command."""
    cmd = Command(*argv).kill_on_drop().shutdown(timeout=2.0)
    if spec.stdin is not None:
        cmd = cmd.stdin(spec.stdin)
    if spec.stdout is not None:
        cmd = cmd.stdout(spec.stdout)
    if spec.stderr is not None:
        cmd = cmd.stderr(spec.stderr)
    return cmd


def _start_error(connection: Connection, session: Session, spec: Spec, log: str) -> OSError:
    program = os.fsdecode(spec.program)
    host = connection.host
    if session.failure == "program":
        error: OSError = FileNotFoundError(
            errno.ENOENT, f"No such program on {host} (running {program!r})"
        )
        error.filename = program
        return error
    if session.failure == "cwd":
        cwd = os.fsdecode(spec.cwd or "")
        error = FileNotFoundError(
            errno.ENOENT,
            f"Cannot enter the working directory on {host} (of {program!r})",
        )
        error.filename = cwd
        return error
    if session.lost or session.failure == "closing":
        return ConnectionLost(host, f"the connection was lost while starting {program!r}")
    if "open refused" in log:  # "Session open refused by peer": past MaxSessions
        return SessionRefused(host, f"the server refused a session for {program!r}", log)
    return SSHError(host, f"ssh could not start a session for {program!r}", log)


async def start_remote_child(
    connection: Connection, spec: Spec, start_watch: Callable[[Session, Child], None]
) -> RemoteChild:
    """Start ``spec`` over ``connection`` (a session slot is already held); return once
    the command runs, or raise: FileNotFoundError for a missing program or working
    directory (naming the host), :class:`SSHError` for a session that could not open.

    **Cancellation:** shielded from the moment the local ssh exists: the caller gets the
    child, or nothing is left.
    """
    args = spec.argv
    session = connection.new_session(args, spec.shutdown_timeout)
    log_name = connection.session_log(session)
    remote = wrapper_command(
        connection.remote_dir,
        session.token,
        remote_signal_name(spec.shutdown_signal),
        spec.shutdown_timeout,
        command_script(spec),
    )
    argv = connection.target.session_argv(
        connection.log_path(log_name), connection.control_path, remote
    )
    try:
        local = await spawn(_local_ssh(spec, argv))
    except BaseException:
        connection.forget(session)
        connection.active -= 1
        raise
    start_watch(session, local)
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(connection.target.connect_timeout):
            await session.started.wait()
        if session.pgid is None:
            # Not started: the session failed (its ssh ends, if it has not) or hangs.
            if session.started.is_set():
                with anyio.move_on_after(5):  # its ssh ends with the wrapper
                    await session.local_done.wait()
            else:
                session.failure = "session"
            discard(local)
            with anyio.move_on_after(5):
                await session.local_done.wait()
            error = _start_error(connection, session, spec, connection.ssh_said(log_name))
            connection.forget(session)
            raise error
    handle = RemoteProcessHandle(connection, session, local)
    # In two steps, as the core does: the object exists before __init__ can be interrupted.
    child = RemoteChild.__new__(RemoteChild)
    Child.__init__(
        child,
        waiter=None,
        process=handle,
        args=args,
        stdin=local.stdin,
        stdout=local.take_stdout() if local.stdout is not None else None,
        stderr=local.take_stderr() if local.stderr is not None else None,
        shutdown_signal=spec.shutdown_signal,
        shutdown_timeout=spec.shutdown_timeout,
        kill_on_drop=spec.kill_on_drop,
        leads_group=True,
    )
    return child


_Running = TypeVar("_Running", bound="AsyncResource")


class RemoteSpawnContext(SpawnContext[_Running]):
    """What :meth:`Host.spawn` returns: awaitable, and an async context manager, as
    :func:`anyio_proc.spawn`'s :class:`~anyio_proc.SpawnContext`."""

    __slots__ = ("_remote_launch",)

    def __init__(self, launch: Callable[[], Awaitable[_Running]]) -> None:
        super().__init__(_not_local)
        self._remote_launch = launch

    async def _start(self) -> _Running:
        # Awaited, not paced: a remote start waits on the network, not in this thread.
        return await self._remote_launch()


def _not_local() -> NoReturn:
    raise AssertionError("a remote spawn has no local launch")  # _start is overridden
