"""A running pipeline: ``PipelineChild``, its ``PipelineStatus``, and starting one.

``Pipeline`` (``_pipeline.py``) is the builder; this module takes its frozen description
(:class:`PipelineSpec`) and starts every stage, or none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from anyio.abc import Process

from ._child import discard, shut_down_all, user_stacklevel, warn_escalated
from ._communicate import communicate
from ._os.memfile import memory_file
from ._os.pipes import set_blocking
from ._spawn import start_child
from ._spec import Specified, Stdio, StdioArg, spec_of
from ._status import ExitStatus, Output
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
    from collections.abc import Sequence
    from typing import TypeAlias

    from ._child import Child
    from ._spec import Spec, StrOrBytesPath

__all__ = [
    "BytesInput",
    "FileRedirect",
    "PipelineChild",
    "PipelineSpec",
    "PipelineStatus",
    "start_pipeline",
]


@dataclass(frozen=True)
class FileRedirect:
    """A path opened at spawn time (``< path``, ``> path``, ``>> path``)."""

    path: StrOrBytesPath
    append: bool = False


@dataclass(frozen=True)
class BytesInput:
    """Bytes the first stage reads as its stdin (a here-document)."""

    data: bytes


Redirect: TypeAlias = FileRedirect | BytesInput
StderrTarget: TypeAlias = StdioArg | FileRedirect


@dataclass(frozen=True)
class PipelineSpec:
    """What a ``Pipeline`` describes: its stages and where its ends go."""

    stages: tuple[Specified, ...]
    stdin: Redirect | None = None  # replaces the first stage's stdin at spawn
    stdout: FileRedirect | None = None  # replaces the last stage's stdout at spawn
    stderr: StderrTarget | None = None  # for every stage that has no stderr of its own
    pipefail: bool = True


class PipelineStatus(ExitStatus):
    """The exit status of a pipeline: an :class:`ExitStatus` (the one the pipefail rule
    picked) with every stage's status in :attr:`statuses`, first to last.

    Its ``args`` are those of the stage whose status it is, so a failure message names the
    command that failed.
    """

    statuses: tuple[ExitStatus, ...]
    #: The rule it was chosen by (see :meth:`Pipeline.pipefail`).
    pipefail: bool

    def __new__(cls, statuses: Sequence[ExitStatus], *, pipefail: bool = True) -> PipelineStatus:
        if not statuses:
            raise ValueError("a pipeline status needs at least one stage status")
        chosen = statuses[-1]
        if pipefail:
            for status in reversed(statuses):
                if not status.success:
                    chosen = status
                    break
        self = cast(
            "PipelineStatus",
            super().__new__(cls, int(chosen), args=chosen.args, known=chosen.known),
        )
        self.statuses = tuple(statuses)
        self.pipefail = pipefail
        return self

    def __repr__(self) -> str:
        fields = super().__repr__().partition("(")[2]
        return f"PipelineStatus({fields[:-1]}, statuses={list(self.statuses)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_pipeline_status, (self.statuses, self.pipefail))


def _rebuild_pipeline_status(statuses: tuple[ExitStatus, ...], pipefail: bool) -> PipelineStatus:
    return PipelineStatus(statuses, pipefail=pipefail)


def pipeline_repr(children: Sequence[Child]) -> str:
    return " | ".join(" ".join(child.args) for child in children)


class PipelineChild(Process):
    """A running pipeline: what ``spawn(pipeline)`` gives.

    It implements :class:`anyio.abc.Process`: ``stdin`` is the first process's, ``stdout``
    the last's, ``stderr`` the shared stream of :meth:`Pipeline.stderr_piped`; ``pid`` is
    the last process's (as ``$!`` in a shell). :attr:`children` gives each process's
    :class:`Child`, for its own pid, stderr or signals.
    """

    def __init__(
        self, children: Sequence[Child], stderr: PipeReceiveStream | None, *, pipefail: bool
    ) -> None:
        self._children = tuple(children)
        self._stderr = stderr
        self._pipefail = pipefail

    @property
    def children(self) -> tuple[Child, ...]:
        """Each stage's :class:`Child`, first to last."""
        return self._children

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(child.pid for child in self._children)

    @property
    def pid(self) -> int:
        """The last process's pid, as ``$!`` gives it in a shell."""
        return self._children[-1].pid

    @property
    def stdin(self) -> PipeSendStream | None:
        return self._children[0].stdin

    @property
    def stdout(self) -> PipeReceiveStream | None:
        return self._children[-1].stdout

    @property
    def stderr(self) -> PipeReceiveStream | None:
        """The stderr pipe every stage shares, with :meth:`Pipeline.stderr_piped`."""
        return self._stderr

    @property
    def returncode(self) -> int | None:
        status = self.try_wait()
        return None if status is None else int(status)

    def try_wait(self) -> PipelineStatus | None:
        """The status once every process has exited (reaping them), else ``None``."""
        statuses = [child.try_wait() for child in self._children]
        if any(status is None for status in statuses):
            return None
        return PipelineStatus(statuses, pipefail=self._pipefail)  # type: ignore[arg-type]

    async def wait(self, *, close_stdin: bool = True) -> PipelineStatus:
        """Close the first process's stdin, wait for every process to exit, reap them.

        With ``close_stdin=False`` the first stdin is left open, as :meth:`Child.wait`.

        **Cancellation:** safe, as :meth:`Child.wait`; it can be called again.
        """
        statuses = [await child.wait(close_stdin=close_stdin) for child in self._children]
        return PipelineStatus(statuses, pipefail=self._pipefail)

    async def wait_with_output(self, input: bytes | None = None) -> Output:
        """Feed ``input`` to the first stdin, read the last stdout and the shared stderr to
        end-of-file concurrently, wait; ``Output.status`` is the :class:`PipelineStatus`.

        **Cancellation:** the processes are left running (the enclosing block's exit policy
        stops them); the output read so far is lost.
        """
        stdin = self.stdin
        if input is not None and stdin is None:
            raise ValueError("input was given but the pipeline's stdin is not piped")
        out, err = await communicate(stdin, self.stdout, self._stderr, input)
        return Output(await self.wait(), out, err)

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to every process still running."""
        for child in self._children:
            child.send_signal(signal)

    def terminate(self) -> None:
        for child in self._children:
            child.terminate()

    def kill(self) -> None:
        for child in self._children:
            child.kill()

    @property
    def escalated(self) -> bool:
        """True once the exit policy had to SIGKILL any stage (see :attr:`Child.escalated`)."""
        return any(child.escalated for child in self._children)

    async def aclose(self) -> None:
        """Apply each process's exit policy, all at once, and reap them all.

        Every call returns only once every process is stopped and reaped. A
        :class:`RuntimeWarning` reports an escalation to SIGKILL, once for the pipeline.

        **Cancellation:** as :meth:`Child.aclose`: shielded and bounded by the longest
        shutdown timeout; an interrupt that gets through the shield (``KeyboardInterrupt``, a
        native asyncio ``Task.cancel()``) kills every process with SIGKILL and reaps them
        before it propagates.
        """
        try:
            escalated = await shut_down_all(self._children)
        finally:
            if self._stderr is not None:
                close_now(self._stderr)
        if escalated:
            warn_escalated(escalated[0], self, user_stacklevel())

    async def __aenter__(self) -> PipelineChild:
        return self

    def __repr__(self) -> str:
        status = self.try_wait()
        state = "running" if status is None else f"exited ({status})"
        return f"<PipelineChild pids={list(self.pids)} {state} {pipeline_repr(self._children)!r}>"


def _open_redirect(redirect: FileRedirect | BytesInput, reading: bool) -> int:
    if isinstance(redirect, BytesInput):
        return memory_file(redirect.data)
    if reading:
        flags = os.O_RDONLY
    else:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if redirect.append else os.O_TRUNC)
    return os.open(redirect.path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)


class _Starting:
    """What starting a pipeline has opened and started so far, to undo if it fails."""

    def __init__(self) -> None:
        self.owned: set[int] = set()  # fds to close in the parent whatever happens
        self.children: list[Child] = []
        self.stderr_stream: PipeReceiveStream | None = None
        self.handed: PipeEnd | None = None

    def track(self, fd: int) -> int:
        self.owned.add(fd)
        return fd

    def release(self, fd: int) -> None:
        self.owned.discard(fd)
        os.close(fd)

    def open_stderr(self, target: StderrTarget | None) -> StdioArg | None:
        """The stderr every stage without one of its own gets."""
        if target is Stdio.PIPE:
            read_fd, write_fd = os.pipe()
            self.stderr_stream = PipeReceiveStream(read_fd)
            set_blocking(read_fd, False)
            return self.track(write_fd)
        if isinstance(target, FileRedirect):
            return self.track(_open_redirect(target, False))
        if isinstance(target, PipeEnd):
            # Every stage writes to it: hand the stream over once, after the last spawn,
            # or the first stage's spawn would close it under the others.
            self.handed = target
            return fd_for_child(target)
        return target

    def undo(self) -> None:
        if self.handed is not None:
            not_handed_over(self.handed)
        for child in self.children:
            discard(child)
        for fd in self.owned:
            os.close(fd)
        if self.stderr_stream is not None:
            close_now(self.stderr_stream)

    def done(self) -> None:
        for fd in self.owned:
            os.close(fd)
        if self.handed is not None:
            handed_over(self.handed)


def start_pipeline(spec: PipelineSpec) -> PipelineChild:
    """Start every stage, or none: on failure the started ones are killed and reaped and
    every fd opened here is closed before the error propagates."""
    starting = _Starting()
    try:
        # Files first: a missing directory or a permission problem stops the pipeline
        # before any process exists.
        track = starting.track
        stdin_fd = None if spec.stdin is None else track(_open_redirect(spec.stdin, True))
        stdout_fd = None if spec.stdout is None else track(_open_redirect(spec.stdout, False))
        stderr_arg = starting.open_stderr(spec.stderr)
        stages = [spec_of(stage) for stage in spec.stages]
        _start_stages(starting, stages, (stdin_fd, stdout_fd, stderr_arg))
    except BaseException:
        starting.undo()
        raise
    starting.done()
    return PipelineChild(starting.children, starting.stderr_stream, pipefail=spec.pipefail)


def _start_stages(
    starting: _Starting, stages: list[Spec], ends: tuple[int | None, int | None, StdioArg | None]
) -> None:
    stdin_fd, stdout_fd, stderr_arg = ends
    last = len(stages) - 1
    # Blocking pipes, non-inheritable (so no stage holds another's ends open and every
    # reader sees end-of-file when its writer exits); the spawn installs each at 0 or 1.
    pipes = [tuple(map(starting.track, os.pipe())) for _ in range(last)]
    for index, stage in enumerate(stages):
        if index > 0:
            stage = replace(stage, stdin=pipes[index - 1][0])
        elif stdin_fd is not None:
            stage = replace(stage, stdin=stdin_fd)
        if index < last:
            stage = replace(stage, stdout=pipes[index][1])
        elif stdout_fd is not None:
            stage = replace(stage, stdout=stdout_fd)
        if stderr_arg is not None and stage.stderr is None:
            stage = replace(stage, stderr=stderr_arg)
        starting.children.append(start_child(stage))
        # This stage holds its ends now; ours would keep its neighbours from ever seeing
        # end-of-file.
        if index > 0:
            starting.release(pipes[index - 1][0])
        if index < last:
            starting.release(pipes[index][1])
