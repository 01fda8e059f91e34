"""``Pipeline``: processes joined stdout to stdin by OS pipes, as ``a | b | c`` in a shell.

The pipes between stages are plain kernel pipes handed to both processes at spawn: the
data flows from one process to the next without passing through Python, so a pipeline
runs as fast as the same one started by a shell.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from anyio import TASK_STATUS_IGNORED
from anyio.abc import Process

from ._child import shut_down_all, user_stacklevel
from ._command import Command, Stdio, StdioArg, _path_arg, _stdio
from ._os.pipes import set_blocking
from ._spawn import SpawnContext, start_child
from ._status import ExitStatus, Output
from ._streams import PipeReceiveStream, PipeSendStream, _PipeEnd, communicate

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeAlias

    from anyio.abc import TaskStatus

    from ._child import Child
    from ._command import StrOrBytesPath

__all__ = ["Pipeline", "PipelineChild", "PipelineSpawnContext", "PipelineStatus"]


@dataclass(frozen=True)
class _FileRedirect:
    """A path opened at spawn time (``< path``, ``> path``, ``>> path``)."""

    path: StrOrBytesPath
    append: bool = False


@dataclass(frozen=True)
class _BytesInput:
    """Bytes the first stage reads as its stdin (a here-document)."""

    data: bytes


_Redirect: TypeAlias = _FileRedirect | _BytesInput
_StderrTarget: TypeAlias = StdioArg | _FileRedirect


@dataclass(frozen=True)
class _PipelineSpec:
    stages: tuple[Command, ...]
    stdin: _Redirect | None = None  # replaces the first stage's stdin at spawn
    stdout: _FileRedirect | None = None  # replaces the last stage's stdout at spawn
    stderr: _StderrTarget | None = None  # for every stage that has no stderr of its own
    pipefail: bool = True


def _check_joinable(stages: Sequence[Command]) -> None:
    """A stage's stdin or stdout set where the pipeline itself connects it is a mistake."""
    last = len(stages) - 1
    for index, stage in enumerate(stages):
        spec = stage._spec
        if index > 0 and spec.stdin is not None:
            raise ValueError(
                f"{stage!r} sets stdin, but in a pipeline it reads the previous stage's "
                "output; set stdin on the first command (or on the Pipeline)"
            )
        if index < last and spec.stdout is not None:
            raise ValueError(
                f"{stage!r} sets stdout, but in a pipeline it feeds the next stage; "
                "set stdout on the last command (or on the Pipeline)"
            )
        if Stdio.PTY in (spec.stdin, spec.stdout, spec.stderr):
            raise ValueError(f"{stage!r} uses a pseudo-terminal, which a pipeline does not support")


class Pipeline:
    """Commands joined stdout to stdin, built with ``|``: ``Command("a") | Command("b")``.

    Immutable like :class:`Command`: every builder method returns a new ``Pipeline``. The
    pipeline's stdin is its first command's, its stdout its last command's; each command
    keeps its own environment, directory, stderr and exit policy. Start it with
    :func:`spawn` (``async with spawn(pipeline) as p:``), or run it to completion with
    :meth:`status` or :meth:`output`.

    The exit status follows ``set -o pipefail`` by default: the status of the last
    (rightmost) stage that failed, or success when all succeeded. ``pipefail(False)``
    gives the plain shell rule, the last stage's status. Each stage's status is in
    :attr:`PipelineStatus.statuses` either way.
    """

    __slots__ = ("_spec",)

    _spec: _PipelineSpec

    def __init__(self, *commands: Command) -> None:
        if not commands:
            raise ValueError("a pipeline needs at least one command")
        for command in commands:
            if not isinstance(command, Command):
                raise TypeError(f"a pipeline joins Commands, not {type(command).__name__}")
        _check_joinable(commands)
        self._spec = _PipelineSpec(tuple(commands))

    @classmethod
    def _from_spec(cls, spec: _PipelineSpec) -> Pipeline:
        self = cls.__new__(cls)
        self._spec = spec
        return self

    def _with(self, **changes: Any) -> Pipeline:
        return Pipeline._from_spec(replace(self._spec, **changes))

    def _with_stage(self, index: int, stage: Command) -> Pipeline:
        stages = list(self._spec.stages)
        stages[index] = stage
        _check_joinable(stages)
        return self._with(stages=tuple(stages))

    @property
    def commands(self) -> tuple[Command, ...]:
        """The stages, first to last."""
        return self._spec.stages

    def __len__(self) -> int:
        return len(self._spec.stages)

    def __or__(self, other: Command | Pipeline) -> Pipeline:
        if isinstance(other, Command):
            other = Pipeline(other)
        elif not isinstance(other, Pipeline):
            return NotImplemented
        left, right = self._spec, other._spec
        if left.stdout is not None:
            raise ValueError("the left side of '|' sends its stdout to a file")
        if right.stdin is not None:
            raise ValueError("the right side of '|' reads its stdin from a file or bytes")
        if left.stderr is not None and right.stderr is not None and left.stderr != right.stderr:
            raise ValueError("the two sides of '|' send stderr to different places")
        stages = (*left.stages, *right.stages)
        _check_joinable(stages)
        return Pipeline._from_spec(
            _PipelineSpec(
                stages,
                stdin=left.stdin,
                stdout=right.stdout,
                stderr=left.stderr if left.stderr is not None else right.stderr,
                pipefail=left.pipefail,
            )
        )

    def __ror__(self, other: Command) -> Pipeline:
        if not isinstance(other, Command):
            return NotImplemented
        return Pipeline(other) | self

    # -- the ends --------------------------------------------------------------------------

    def stdin(self, stdio: StdioArg) -> Pipeline:
        """The first command's stdin (a :class:`Stdio` value, fd, file or pipe stream)."""
        stage = self._spec.stages[0].stdin(stdio)
        return self._with_stage(0, stage)._with(stdin=None)

    def stdout(self, stdio: StdioArg) -> Pipeline:
        """The last command's stdout."""
        stage = self._spec.stages[-1].stdout(stdio)
        return self._with_stage(-1, stage)._with(stdout=None)

    def stderr(self, stdio: StdioArg) -> Pipeline:
        """stderr of every command that does not set its own.

        ``Stdio.PIPE`` makes one pipe that all of them share (as a terminal is shared in a
        shell), read through the running pipeline's ``stderr``; ``Stdio.STDOUT`` sends each
        command's stderr down the pipe with its stdout (``2>&1`` on every stage).
        """
        stderr = _stdio(stdio, "stderr")
        if stderr is Stdio.PTY:
            raise ValueError("a pipeline does not support pseudo-terminals")
        return self._with(stderr=stderr)

    def stdin_piped(self) -> Pipeline:
        return self.stdin(Stdio.PIPE)

    def stdout_piped(self) -> Pipeline:
        return self.stdout(Stdio.PIPE)

    def stderr_piped(self) -> Pipeline:
        return self.stderr(Stdio.PIPE)

    def stdin_file(self, path: StrOrBytesPath) -> Pipeline:
        """Read stdin from the file at ``path`` (``< path``), opened at spawn."""
        return self._without_stdin()._with(stdin=_FileRedirect(_path_arg(path, "stdin path")))

    def stdin_bytes(self, data: bytes | bytearray | memoryview) -> Pipeline:
        """Give ``data`` as stdin (a here-document).

        The data is put in an anonymous in-memory file (a temporary file where there is
        no ``memfd_create``) that the first command reads directly; no task feeds it.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin_bytes takes bytes, not {type(data).__name__}")
        return self._without_stdin()._with(stdin=_BytesInput(bytes(data)))

    def stdout_file(self, path: StrOrBytesPath, *, append: bool = False) -> Pipeline:
        """Write stdout to the file at ``path``: truncated (``> path``) or appended to
        (``>> path``, with ``append=True``); created if missing, with mode 0o666 & ~umask."""
        stage = self._spec.stages[-1]
        if stage._spec.stdout is not None:
            stage = Command._from_spec(replace(stage._spec, stdout=None))
        redirect = _FileRedirect(_path_arg(path, "stdout path"), bool(append))
        return self._with_stage(-1, stage)._with(stdout=redirect)

    def stderr_file(self, path: StrOrBytesPath, *, append: bool = False) -> Pipeline:
        """Write the stderr of every command that does not set its own to ``path``."""
        return self._with(stderr=_FileRedirect(_path_arg(path, "stderr path"), bool(append)))

    def _without_stdin(self) -> Pipeline:
        stage = self._spec.stages[0]
        if stage._spec.stdin is None:
            return self
        return self._with_stage(0, Command._from_spec(replace(stage._spec, stdin=None)))

    # -- status ----------------------------------------------------------------------------

    def pipefail(self, enabled: bool = True) -> Pipeline:
        """Choose the rule for the pipeline's exit status.

        ``True`` (the default, ``set -o pipefail``): the status of the last stage that
        failed, success only when every stage succeeded. ``False``: the last stage's
        status, whatever the others did (a POSIX shell's default).
        """
        return self._with(pipefail=bool(enabled))

    # -- running ---------------------------------------------------------------------------

    def spawn(self) -> SpawnContext[PipelineChild]:
        """Same as ``spawn(self)``."""
        from ._spawn import spawn

        return spawn(self)

    async def status(
        self, *, task_status: TaskStatus[PipelineChild] = TASK_STATUS_IGNORED
    ) -> PipelineStatus:
        """Run to completion with stdio inherited (unless set); return the status.

        **Cancellation:** every process gets its exit policy and is reaped first.
        """
        async with SpawnContext(partial(start_pipeline, self)) as running:
            task_status.started(running)
            return await running.wait()

    async def output(
        self, *, task_status: TaskStatus[PipelineChild] = TASK_STATUS_IGNORED
    ) -> Output:
        """Run to completion with the last stdout captured, the stderr of every stage
        captured in one stream, and stdin null (each unless set).

        Does not raise for a failed status: call ``.check()`` on the result.
        """
        pipeline = self
        spec = self._spec
        if spec.stdin is None and spec.stages[0]._spec.stdin is None:
            pipeline = pipeline.stdin(Stdio.NULL)
        if spec.stdout is None and spec.stages[-1]._spec.stdout is None:
            pipeline = pipeline.stdout(Stdio.PIPE)
        if spec.stderr is None:
            pipeline = pipeline.stderr(Stdio.PIPE)
        async with SpawnContext(partial(start_pipeline, pipeline)) as running:
            task_status.started(running)
            return await running.wait_with_output()

    def __repr__(self) -> str:
        text = " | ".join(repr(stage) for stage in self._spec.stages)
        return text if len(self._spec.stages) > 1 else f"Pipeline({text})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(self._spec)


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
        end-of-file concurrently, wait; ``Output.status`` is the :class:`PipelineStatus`."""
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
                self._stderr._close()
        if escalated:
            escalated[0]._warn_escalated(self, user_stacklevel())

    async def __aenter__(self) -> PipelineChild:
        return self

    def __repr__(self) -> str:
        status = self.try_wait()
        state = "running" if status is None else f"exited ({status})"
        return f"<PipelineChild pids={list(self.pids)} {state} {pipeline_repr(self._children)!r}>"


def _open_redirect(redirect: _FileRedirect | _BytesInput, reading: bool) -> int:
    if isinstance(redirect, _BytesInput):
        return _memory_file(redirect.data)
    if reading:
        flags = os.O_RDONLY
    else:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if redirect.append else os.O_TRUNC)
    return os.open(redirect.path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)


def _memory_file(data: bytes) -> int:
    """An fd of an unnamed file holding ``data``, positioned at its start."""
    if sys.platform == "linux":
        fd = os.memfd_create("anyio_proc-stdin", os.MFD_CLOEXEC)
    else:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="anyio_proc-stdin-")
        os.unlink(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _discard(child: Child) -> None:
    """Undo a stage that started when a later one could not: kill it, reap it, close it."""
    child.kill()  # its whole group, if it leads one
    child._kill_now_and_reap()
    child._closed = True
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream._close()


def start_pipeline(pipeline: Pipeline) -> PipelineChild:
    """Start every stage, or none: on failure the started ones are killed and reaped and
    every fd opened here is closed before the error propagates."""
    spec = pipeline._spec
    stages = spec.stages
    last = len(stages) - 1
    owned: set[int] = set()  # fds to close in the parent whatever happens
    children: list[Child] = []
    stderr_stream: PipeReceiveStream | None = None
    handed: _PipeEnd | None = None

    def track(fd: int) -> int:
        owned.add(fd)
        return fd

    def release(fd: int) -> None:
        owned.discard(fd)
        os.close(fd)

    try:
        # Files first: a missing directory or a permission problem stops the pipeline
        # before any process exists.
        stdin_fd = None if spec.stdin is None else track(_open_redirect(spec.stdin, True))
        stdout_fd = None if spec.stdout is None else track(_open_redirect(spec.stdout, False))
        stderr_arg: StdioArg | None
        if spec.stderr is Stdio.PIPE:
            read_fd, write_fd = os.pipe()
            stderr_stream = PipeReceiveStream(read_fd)
            set_blocking(read_fd, False)
            stderr_arg = track(write_fd)
        elif isinstance(spec.stderr, _FileRedirect):
            stderr_arg = track(_open_redirect(spec.stderr, False))
        elif isinstance(spec.stderr, _PipeEnd):
            # Every stage writes to it: hand the stream over once, after the last spawn,
            # or the first stage's spawn would close it under the others.
            handed = spec.stderr
            stderr_arg = handed._fd_for_child()
        else:
            stderr_arg = spec.stderr
        # Blocking pipes, non-inheritable (so no stage holds another's ends open and every
        # reader sees end-of-file when its writer exits); the spawn installs each at 0 or 1.
        pipes = [tuple(map(track, os.pipe())) for _ in range(last)]
        for index, stage in enumerate(stages):
            command = stage
            if index > 0:
                command = command.stdin(pipes[index - 1][0])
            elif stdin_fd is not None:
                command = command.stdin(stdin_fd)
            if index < last:
                command = command.stdout(pipes[index][1])
            elif stdout_fd is not None:
                command = command.stdout(stdout_fd)
            if stderr_arg is not None and stage._spec.stderr is None:
                command = command.stderr(stderr_arg)
            children.append(start_child(command))
            # This stage holds its ends now; ours would keep its neighbours from ever
            # seeing end-of-file.
            if index > 0:
                release(pipes[index - 1][0])
            if index < last:
                release(pipes[index][1])
    except BaseException:
        if handed is not None:
            handed._not_handed_over()
        for child in children:
            _discard(child)
        for fd in owned:
            os.close(fd)
        if stderr_stream is not None:
            stderr_stream._close()
        raise
    for fd in owned:
        os.close(fd)
    if handed is not None:
        handed._handed_over()
    return PipelineChild(children, stderr_stream, pipefail=spec.pipefail)


#: What ``spawn(pipeline)`` returns (``SpawnContext`` giving a :class:`PipelineChild`).
PipelineSpawnContext = SpawnContext[PipelineChild]
