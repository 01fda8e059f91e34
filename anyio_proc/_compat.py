"""``run_process`` and ``open_process``: anyio's signatures and semantics, our machinery.

Swapping ``from anyio import run_process, open_process`` for ``from anyio_proc import ...``
is the whole migration. The differences from :func:`spawn` are only the argument mapping (a
``str`` goes to the shell, as in anyio) and the exit policy: an ``open_process`` child is
waited for when its block ends, and killed only if that wait is cancelled.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import replace
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import anyio
from anyio import TASK_STATUS_IGNORED

from ._child import kill_and_reap_now, wait_exited
from ._command import Command
from ._os.users import group_id, user_id
from ._pacing import paced
from ._spawn import start_child
from ._spec import StrOrBytesPath, respecified, spec_of
from ._status import ProcessFailed
from ._taskgroups import internal_task_group

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from anyio.abc import TaskStatus

    from ._child import Child
    from ._status import ExitStatus
    from ._streams import PipeReceiveStream

__all__ = ["open_process", "run_process"]

_DEFAULT_CANCEL_GRACE = 5.0


def _resolve_user(user: str | int) -> int:
    if isinstance(user, int):
        return user
    return user_id(user)  # KeyError for an unknown name, as in subprocess


def _resolve_group(group: str | int) -> int:
    if isinstance(group, int):
        return group
    return group_id(group)


def _command(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    cwd: StrOrBytesPath | None,
    env: Mapping[str, str] | None,
    startupinfo: Any,
    creationflags: int,
    start_new_session: bool,
    pass_fds: Sequence[int],
    user: str | int | None,
    group: str | int | None,
    extra_groups: Iterable[str | int] | None,
    umask: int,
) -> Command:
    if isinstance(command, (str, bytes)):
        cmd = Command.shell(os.fsdecode(command))
    elif isinstance(command, os.PathLike):
        cmd = Command(command)
    else:
        argv = list(command)
        if not argv:
            raise ValueError("cannot run an empty argument list")
        cmd = Command(argv[0], *argv[1:])
    # None means "inherit" in subprocess's vocabulary.
    for which, value in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        if value is not None:
            cmd = getattr(cmd, which)(value)
    if cwd is not None:
        cmd = cmd.current_dir(cwd)
    if env is not None:
        cmd = cmd.env_clear().envs(env)
    if start_new_session:
        cmd = cmd.new_session()
    if pass_fds:
        cmd = cmd.pass_fds(pass_fds)
    if user is not None:
        cmd = cmd.uid(_resolve_user(user))
    if group is not None:
        cmd = cmd.gid(_resolve_group(group))
    if extra_groups is not None:
        cmd = cmd.groups([_resolve_group(g) for g in extra_groups])
    if umask >= 0:
        cmd = cmd.umask(umask)
    if creationflags:
        cmd = respecified(cmd, replace(spec_of(cmd), creation_flags=creationflags))
    if startupinfo is not None:
        cmd = respecified(cmd, replace(spec_of(cmd), startupinfo=startupinfo))
    return cmd


async def open_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None = subprocess.PIPE,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[str, str] | None = None,
    startupinfo: Any = None,
    creationflags: int = 0,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int = -1,
) -> Child:
    """Start a process, as :func:`anyio.open_process` does; return its :class:`Child`.

    ``command`` is a shell line when it is a ``str`` (or ``bytes``), else program and
    arguments. ``stdin``/``stdout``/``stderr`` take ``subprocess.PIPE``, ``DEVNULL``,
    ``STDOUT`` (stderr only), a file object, an fd, or ``None`` to inherit. ``env`` replaces
    the environment; ``user``, ``group`` and ``extra_groups`` take names or ids.

    Leaving ``async with`` on the result (or ``aclose()``) closes the pipes and waits for the
    process to exit by itself; only if that wait is cancelled is the process killed, and
    reaped, before the cancellation propagates. The child is reaped as soon as its exit is
    observed (``returncode``, ``wait()``).

    **Cancellation:** as for :func:`spawn`: a started process always reaches the caller.
    """
    cmd = _command(
        command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
        startupinfo=startupinfo, creationflags=creationflags,
        start_new_session=start_new_session, pass_fds=pass_fds, user=user, group=group,
        extra_groups=extra_groups, umask=umask,
    )  # fmt: skip
    spec = spec_of(cmd)
    return await paced(partial(start_child, spec, wait_policy=True))


async def terminate_then_kill(child: Child) -> None:
    """The default ``deliver_cancel`` of :func:`run_process`, as trio's on POSIX.

    SIGTERM, then SIGKILL with a :class:`RuntimeWarning` if the process is still running
    five seconds later. :func:`run_process` stops waiting on it as soon as the process exits.
    """
    child.terminate()
    await anyio.sleep(_DEFAULT_CANCEL_GRACE)
    warnings.warn(
        f"{child!r} ignored SIGTERM for {_DEFAULT_CANCEL_GRACE:g} seconds, so it was killed; "
        "pass a deliver_cancel that stops it the way it expects",
        RuntimeWarning,
        stacklevel=2,
    )
    child.kill()


async def run_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    input: bytes | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    check: bool = True,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[str, str] | None = None,
    startupinfo: Any = None,
    creationflags: int = 0,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int = -1,
    task_status: TaskStatus[Child] = TASK_STATUS_IGNORED,
    deliver_cancel: Callable[[Child], Awaitable[object]] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion, as :func:`anyio.run_process` does.

    Returns a :class:`subprocess.CompletedProcess` with the captured ``stdout`` and
    ``stderr`` (``None`` for a stream that was not piped). With ``check`` (the default) a
    non-zero exit raises :class:`ProcessFailed`, a :class:`subprocess.CalledProcessError`.
    ``input`` is written to stdin, which is then closed; it excludes ``stdin``.

    Under ``await tg.start(run_process, cmd)`` the started value is the running ``Child``.

    **Cancellation:** ``deliver_cancel(child)`` runs, shielded, while we wait for the process
    to exit (default: SIGTERM, then SIGKILL after 5 s, as trio does); it is cancelled as soon
    as the process has exited. If it raises, the process is killed all the same and the
    error propagates. The process is reaped before the cancellation propagates.
    """
    if stdin is not None and input is not None:
        raise ValueError("only one of stdin and input is allowed")
    child = await open_process(
        command, stdin=subprocess.PIPE if input else stdin, stdout=stdout, stderr=stderr,
        cwd=cwd, env=env, startupinfo=startupinfo, creationflags=creationflags,
        start_new_session=start_new_session, pass_fds=pass_fds, user=user, group=group,
        extra_groups=extra_groups, umask=umask,
    )  # fmt: skip
    captured: dict[str, bytes] = {}
    try:
        task_status.started(child)
        status = await _talk(child, input, captured)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _deliver_cancel(child, deliver_cancel or terminate_then_kill)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await child.aclose()
    stdout_bytes = captured.get("stdout")
    stderr_bytes = captured.get("stderr")
    if check and status != 0:
        raise ProcessFailed(status, command, stdout_bytes, stderr_bytes)
    return subprocess.CompletedProcess(command, int(status), stdout_bytes, stderr_bytes)


async def _talk(child: Child, input: bytes | None, captured: dict[str, bytes]) -> ExitStatus:
    """Feed ``input``, read the piped outputs into ``captured``, wait for the exit."""

    async def drain(name: str, stream: PipeReceiveStream) -> None:
        captured[name] = await stream.read_all()

    async with internal_task_group() as tg:
        if child.stdout is not None:
            tg.start_soon(drain, "stdout", child.stdout)
        if child.stderr is not None:
            tg.start_soon(drain, "stderr", child.stderr)
        if child.stdin is not None and input:
            try:
                await child.stdin.send(input)
            except anyio.BrokenResourceError:
                pass  # it stopped reading, as subprocess.run and asyncio allow
            await child.stdin.aclose()
        return await child.wait()


async def _deliver_cancel(
    child: Child, deliver_cancel: Callable[[Child], Awaitable[object]]
) -> None:
    """Run ``deliver_cancel`` until the child exits; kill the child whatever it does."""
    try:
        async with internal_task_group() as tg:

            async def deliver() -> None:
                await deliver_cancel(child)

            tg.start_soon(deliver)
            await wait_exited(child)
            tg.cancel_scope.cancel()
    finally:
        if child.try_wait() is None:
            child.kill()
            try:
                await wait_exited(child)
            except BaseException:
                kill_and_reap_now(child)  # a second interrupt: no awaiting any more
                raise
