"""Running one command to completion: its exit status, or its captured output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._pty import output_with_terminal, status_with_terminal
from ._spawn import spawn_spec
from ._spec import Stdio

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from ._child import Child
    from ._spec import Spec
    from ._status import ExitStatus, Output

__all__ = ["run_output", "run_status"]


async def run_status(spec: Spec, task_status: TaskStatus[Child]) -> ExitStatus:
    """``Command.status()``: stdio as set (inherited by default)."""
    async with spawn_spec(spec) as child:
        task_status.started(child)
        if child.pty is not None:
            return await status_with_terminal(child, spec.stdin is Stdio.PTY)
        return await child.wait()


async def run_output(spec: Spec, task_status: TaskStatus[Child]) -> Output:
    """``Command.output()``: stdout and stderr captured, stdin null, unless set."""
    spec = spec.with_stdio_defaults(Stdio.NULL, Stdio.PIPE, Stdio.PIPE)
    async with spawn_spec(spec) as child:
        task_status.started(child)
        if child.pty is not None:
            on_terminal = (
                spec.stdin is Stdio.PTY,
                spec.stdout is Stdio.PTY,
                spec.stderr is Stdio.PTY,
            )
            return await output_with_terminal(child, on_terminal)
        return await child.wait_with_output()
