"""``spawn()``: creating the process, as an awaitable and as an async context manager."""

from __future__ import annotations

import logging
import os
import subprocess
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio.lowlevel
from anyio.abc import AsyncResource

from ._child import Child, owns_process
from ._os.launch import launch, record_launches, undo_launches
from ._os.pipes import set_blocking
from ._os.pty import launch_pty, open_pty
from ._os.waiters import select_waiter
from ._os.waiters.base import ExitWaiter, ReapedElsewhereWaiter
from ._pacing import paced
from ._pty import PtyStream
from ._spec import Spec, Stdio, StdioArg
from ._streams import (
    PipeEnd,
    PipeReceiveStream,
    PipeSendStream,
    close_now,
    fd_for_child,
    handed_over,
    not_handed_over,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType


__all__ = ["SpawnContext", "spawn_spec", "start_child"]

logger = logging.getLogger("anyio_proc")


def spawn_spec(spec: Spec) -> SpawnContext[Child]:
    """What ``spawn(cmd)`` returns for a command."""
    return SpawnContext(partial(start_child, spec))


_Running = TypeVar("_Running", bound=AsyncResource)


class SpawnContext(Generic[_Running]):
    """What :func:`spawn` returns: awaitable, and an async context manager.

    Gives a :class:`Child` for a :class:`Command`, a :class:`PipelineChild` for a
    :class:`Pipeline`.

    **Cancellation:** awaiting it, or entering the block, is not cancellable half-way (see
    :func:`spawn`): once the process exists, the caller gets it. Leaving the block applies
    the exit policy, shielded, as :meth:`Child.aclose` does, before a cancellation
    propagates.
    """

    __slots__ = ("_launch", "_running")

    def __init__(self, launch: Callable[[], _Running]) -> None:
        try:
            anyio.lowlevel.current_token()
        except RuntimeError:
            raise RuntimeError(
                "spawn() needs a running event loop: call it from async code run by "
                "anyio.run(), asyncio.run() or trio.run()"
            ) from None
        self._launch = launch
        self._running: _Running | None = None

    async def _start(self) -> _Running:
        # Cancellable only while it waits for its turn: once the processes exist they
        # reach the caller.
        return await paced(self._launch)

    def __await__(self) -> Generator[Any, None, _Running]:
        return self._start().__await__()

    async def __aenter__(self) -> _Running:
        if self._running is not None:
            raise RuntimeError("this spawn() context was already entered")
        self._running = await self._start()
        return self._running

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._running is not None
        await self._running.aclose()


class _Plan:
    """The fds a spawn opens and what to do with them afterwards."""

    __slots__ = (
        "child_fds",
        "parent_streams",
        "pty_size",
        "pty_slave",
        "streams_handed",
    )

    def __init__(self, pty_size: tuple[int, int] | None = None) -> None:
        self.child_fds: list[int] = []  # pipe ends that belong to the child: close after
        self.parent_streams: dict[str, PipeEnd] = {}
        self.streams_handed: list[PipeEnd] = []
        self.pty_size = pty_size
        self.pty_slave: int | None = None  # one terminal for every Stdio.PTY stream

    def close_all(self) -> None:
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds.clear()
        for stream in self.parent_streams.values():
            close_now(stream)
        for handed in self.streams_handed:
            not_handed_over(handed)


def _check_open(fd: int, what: str) -> None:
    try:
        os.fstat(fd)
    except OSError:
        raise ValueError(f"{what} names fd {fd}, which is not open") from None


def _resolve_stdio(value: StdioArg | None, which: str, plan: _Plan) -> int | None:
    """Map one stdio setting to a launch target, opening a pipe if needed."""
    if value is None or value is Stdio.INHERIT:
        return None
    if value is Stdio.NULL:
        return subprocess.DEVNULL
    if value is Stdio.STDOUT:
        return subprocess.STDOUT
    if value is Stdio.PTY:
        if plan.pty_slave is None:
            master, plan.pty_slave = open_pty(plan.pty_size)
            plan.parent_streams["pty"] = PtyStream(master)
            plan.child_fds.append(plan.pty_slave)
        return plan.pty_slave
    if value is Stdio.PIPE:
        read_fd, write_fd = os.pipe()  # both ends non-inheritable (PEP 446)
        if which == "stdin":
            child_fd, parent_fd = read_fd, write_fd
            plan.parent_streams[which] = PipeSendStream(parent_fd)
        else:
            child_fd, parent_fd = write_fd, read_fd
            plan.parent_streams[which] = PipeReceiveStream(parent_fd)
        set_blocking(parent_fd, False)
        plan.child_fds.append(child_fd)
        return child_fd
    if isinstance(value, int):
        _check_open(value, which)
        return value
    if isinstance(value, PipeEnd):
        fd = fd_for_child(value)
        plan.streams_handed.append(value)
        return fd
    try:
        fd = value.fileno()
    except ValueError as exc:  # "I/O operation on closed file"
        raise ValueError(f"{which}: {exc}") from None
    _check_open(fd, which)
    return fd


def _name_program(exc: OSError, spec: Spec) -> None:
    """Make an OS error from spawning say which program it was about."""
    program = os.fsdecode(spec.program)
    cwd = spec.cwd
    if exc.filename is None:
        exc.filename = program
    elif cwd is not None and os.fsdecode(exc.filename) == os.fsdecode(cwd):
        exc.strerror = f"{exc.strerror} (working directory of {program!r})"
    elif os.fsdecode(exc.filename) != program:
        exc.strerror = f"{exc.strerror} (running {program!r})"


class _Started:
    """What a spawn has made so far, for its undoing: assigned the moment each exists."""

    __slots__ = ("child", "waiter")

    def __init__(self) -> None:
        self.waiter: ExitWaiter | None = None
        self.child: Child | None = None


def start_child(spec: Spec, *, wait_policy: bool = False) -> Child:
    """Create the process and its ``Child``; leaves nothing open if it raises."""
    factory = select_waiter()
    plan = _Plan(spec.pty_size)
    launched = record_launches()
    started = _Started()
    try:
        pid = _launch(spec, plan)
        # The process exists. Until a Child owns it, anything raised here (EMFILE for the
        # pidfd, or an interrupt from a signal handler: Ctrl-C, a timeout's SIGALRM) kills
        # and reaps it rather than leak it.
        while plan.child_fds:
            # Popped first: an interrupt in between leaks the fd, never closes it twice.
            os.close(plan.child_fds.pop())
        for handed in plan.streams_handed:
            handed_over(handed)
        try:
            started.waiter = factory(pid)
        except ProcessLookupError:
            # Already exited and reaped by somebody else (a SIGCHLD handler calling
            # waitpid(-1)): the pid may be recycled, so neither kill nor wait (nor undo
            # this spawn below); status unknown.
            launched.clear()
            started.waiter = ReapedElsewhereWaiter(pid)
        child = _make_child(spec, plan, started, wait_policy)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("spawned pid %d: %s", pid, list(spec.argv))
        return child
    except BaseException:
        try:
            # A process created (the record has it from the moment the kernel handed its
            # pid over, wherever the interrupt landed since) is killed and reaped first: a
            # Child dropped with it then finds nothing to warn about.
            undo_launches(launched)
        finally:
            # The waiter is the Child's once its __init__ has made the process handle (its
            # first statement), and its __del__ closes it then.
            if started.waiter is not None and not owns_process(started.child):
                started.waiter.close()
            plan.close_all()  # what was handed over or closed already is skipped
        raise


def _launch(spec: Spec, plan: _Plan) -> int:
    """Resolve stdio and start the process; the OS error names the program."""
    try:
        stdio = (
            _resolve_stdio(spec.stdin, "stdin", plan),
            _resolve_stdio(spec.stdout, "stdout", plan),
            _resolve_stdio(spec.stderr, "stderr", plan),
        )
        for fd in spec.pass_fds:
            _check_open(fd, "pass_fds")
        if plan.pty_slave is None:
            return launch(spec, spec.environment(), stdio)
        return launch_pty(spec, spec.environment(), stdio, plan.pty_slave)
    except OSError as exc:  # from our pipes (EMFILE) as much as from the spawn itself
        _name_program(exc, spec)
        raise
    except subprocess.SubprocessError as exc:
        raise subprocess.SubprocessError(
            f"pre_exec raised in the child of {spec.display()}; nothing was run"
        ) from exc


def _make_child(spec: Spec, plan: _Plan, started: _Started, wait_policy: bool) -> Child:
    assert started.waiter is not None
    on_terminal = plan.pty_slave is not None
    # A child on a terminal leads its own session, hence its group.
    leads_group = spec.new_session or spec.process_group == 0 or on_terminal
    streams = plan.parent_streams
    # In two steps, so that the object is in `started` before __init__ runs: an interrupt
    # landing as Child(...) returns would drop it, running, to its __del__.
    child = started.child = Child.__new__(Child)
    Child.__init__(
        child,
        waiter=started.waiter,
        args=spec.argv,
        stdin=streams.get("stdin"),  # type: ignore[arg-type]
        stdout=streams.get("stdout"),  # type: ignore[arg-type]
        stderr=streams.get("stderr"),  # type: ignore[arg-type]
        pty=streams.get("pty"),  # type: ignore[arg-type]
        shutdown_signal=spec.shutdown_signal,
        shutdown_timeout=spec.shutdown_timeout,
        kill_on_drop=spec.kill_on_drop,
        kill_tree=spec.kill_tree,
        leads_group=leads_group,
        leads_session=spec.new_session or on_terminal,
        wait_policy=wait_policy,
    )
    return child
