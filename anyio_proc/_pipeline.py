"""``Pipeline``: processes joined stdout to stdin by OS pipes, as ``a | b | c`` in a shell.

The pipes between stages are plain kernel pipes handed to both processes at spawn: the
data flows from one process to the next without passing through Python, so a pipeline
runs as fast as the same one started by a shell.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from anyio import TASK_STATUS_IGNORED

from ._pipeline_run import (
    BytesInput,
    FileRedirect,
    PipelineChild,
    PipelineSpec,
    PipelineStatus,
    start_pipeline,
)
from ._spawn import SpawnContext
from ._spec import Specified, Stdio, StdioArg, path_arg, respecified, spec_of, stdio_arg

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import TaskStatus

    from ._spec import StrOrBytesPath
    from ._status import Output

__all__ = ["Pipeline", "PipelineChild", "PipelineStatus", "spawn_pipeline"]


def _check_joinable(stages: Sequence[Specified]) -> None:
    """A stage's stdin or stdout set where the pipeline itself connects it is a mistake."""
    last = len(stages) - 1
    for index, stage in enumerate(stages):
        spec = spec_of(stage)
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

    _spec: PipelineSpec

    def __init__(self, *commands: Specified) -> None:
        if not commands:
            raise ValueError("a pipeline needs at least one command")
        for command in commands:
            if not isinstance(command, Specified):
                raise TypeError(f"a pipeline joins Commands, not {type(command).__name__}")
        _check_joinable(commands)
        self._spec = PipelineSpec(tuple(commands))

    @classmethod
    def _from_spec(cls, spec: PipelineSpec) -> Pipeline:
        self = cls.__new__(cls)
        self._spec = spec
        return self

    def _with(self, **changes: Any) -> Pipeline:
        return Pipeline._from_spec(replace(self._spec, **changes))

    def _with_stage(self, index: int, stage: Specified) -> Pipeline:
        stages = list(self._spec.stages)
        stages[index] = stage
        _check_joinable(stages)
        return self._with(stages=tuple(stages))

    @property
    def commands(self) -> tuple[Specified, ...]:
        """The stages, first to last."""
        return self._spec.stages

    def __len__(self) -> int:
        return len(self._spec.stages)

    def __or__(self, other: Specified | Pipeline) -> Pipeline:
        if isinstance(other, Specified):
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
            PipelineSpec(
                stages,
                stdin=left.stdin,
                stdout=right.stdout,
                stderr=left.stderr if left.stderr is not None else right.stderr,
                pipefail=left.pipefail,
            )
        )

    def __ror__(self, other: Specified) -> Pipeline:
        if not isinstance(other, Specified):
            return NotImplemented
        return Pipeline(other) | self

    # -- the ends --------------------------------------------------------------------------

    def stdin(self, stdio: StdioArg) -> Pipeline:
        """The first command's stdin (a :class:`Stdio` value, fd, file or pipe stream)."""
        stage = self._spec.stages[0]
        stage = respecified(stage, replace(spec_of(stage), stdin=stdio_arg(stdio, "stdin")))
        return self._with_stage(0, stage)._with(stdin=None)

    def stdout(self, stdio: StdioArg) -> Pipeline:
        """The last command's stdout."""
        stage = self._spec.stages[-1]
        stage = respecified(stage, replace(spec_of(stage), stdout=stdio_arg(stdio, "stdout")))
        return self._with_stage(-1, stage)._with(stdout=None)

    def stderr(self, stdio: StdioArg) -> Pipeline:
        """stderr of every command that does not set its own.

        ``Stdio.PIPE`` makes one pipe that all of them share (as a terminal is shared in a
        shell), read through the running pipeline's ``stderr``; ``Stdio.STDOUT`` sends each
        command's stderr down the pipe with its stdout (``2>&1`` on every stage).
        """
        stderr = stdio_arg(stdio, "stderr")
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
        return self._without_stdin()._with(stdin=FileRedirect(path_arg(path, "stdin path")))

    def stdin_bytes(self, data: bytes | bytearray | memoryview) -> Pipeline:
        """Give ``data`` as stdin (a here-document).

        The data is put in an anonymous in-memory file (a temporary file where there is
        no ``memfd_create``) that the first command reads directly; no task feeds it.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin_bytes takes bytes, not {type(data).__name__}")
        return self._without_stdin()._with(stdin=BytesInput(bytes(data)))

    def stdout_file(self, path: StrOrBytesPath, *, append: bool = False) -> Pipeline:
        """Write stdout to the file at ``path``: truncated (``> path``) or appended to
        (``>> path``, with ``append=True``); created if missing, with mode 0o666 & ~umask."""
        stage = self._spec.stages[-1]
        if spec_of(stage).stdout is not None:
            stage = respecified(stage, replace(spec_of(stage), stdout=None))
        redirect = FileRedirect(path_arg(path, "stdout path"), bool(append))
        return self._with_stage(-1, stage)._with(stdout=redirect)

    def stderr_file(self, path: StrOrBytesPath, *, append: bool = False) -> Pipeline:
        """Write the stderr of every command that does not set its own to ``path``."""
        return self._with(stderr=FileRedirect(path_arg(path, "stderr path"), bool(append)))

    def _without_stdin(self) -> Pipeline:
        stage = self._spec.stages[0]
        if spec_of(stage).stdin is None:
            return self
        return self._with_stage(0, respecified(stage, replace(spec_of(stage), stdin=None)))

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
        return spawn_pipeline(self)

    async def status(
        self, *, task_status: TaskStatus[PipelineChild] = TASK_STATUS_IGNORED
    ) -> PipelineStatus:
        """Run to completion with stdio inherited (unless set); return the status.

        **Cancellation:** every process gets its exit policy and is reaped first.
        """
        async with spawn_pipeline(self) as running:
            task_status.started(running)
            return await running.wait()

    async def output(
        self, *, task_status: TaskStatus[PipelineChild] = TASK_STATUS_IGNORED
    ) -> Output:
        """Run to completion with the last stdout captured, the stderr of every stage
        captured in one stream, and stdin null (each unless set).

        Does not raise for a failed status: call ``.check()`` on the result.

        **Cancellation:** as :meth:`status`; the output read so far is lost.
        """
        pipeline = self
        spec = self._spec
        if spec.stdin is None and spec.stages[0]._spec.stdin is None:
            pipeline = pipeline.stdin(Stdio.NULL)
        if spec.stdout is None and spec.stages[-1]._spec.stdout is None:
            pipeline = pipeline.stdout(Stdio.PIPE)
        if spec.stderr is None:
            pipeline = pipeline.stderr(Stdio.PIPE)
        async with spawn_pipeline(pipeline) as running:
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


def spawn_pipeline(pipeline: Pipeline) -> SpawnContext[PipelineChild]:
    """What ``spawn(pipeline)`` returns."""
    return SpawnContext(partial(start_pipeline, pipeline._spec))
