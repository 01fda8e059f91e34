"""Running one command to completion: its exit status, or its captured output.

With streams on a pseudo-terminal, the terminal is read here too (``Command.pty()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ._spawn import spawn_spec
from ._spec import Stdio
from ._status import Output
from ._taskgroups import internal_task_group

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from ._child import Child
    from ._pty import PtyStream
    from ._spec import Spec
    from ._status import ExitStatus

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


# Nobody else reads the terminal for these two, and the program blocks once it has written
# what the terminal's queue holds (a few KiB): they read it themselves. Nobody can type at
# it either, so when stdin is on it they type end-of-file once, as `script` does when its
# own input ends: a program reading its terminal ends instead of waiting forever.


async def _type_end_of_file(pty: PtyStream) -> None:
    try:
        await pty.send_eof()
    except anyio.BrokenResourceError:
        pass  # the program has gone already, and took the terminal with it


async def output_with_terminal(child: Child, on_terminal: tuple[bool, bool, bool]) -> Output:
    """:meth:`Command.output` for a child with streams on a terminal; ``on_terminal`` says
    which of stdin, stdout and stderr are.

    The terminal is read to its end of file (every process holding it has exited, as for
    a pipe) while the pipes are read and the child is waited for. What it carried is
    ``stdout`` when stdout is on it, else ``stderr`` when stderr is (a terminal merges
    both into one stream); output of a terminal that carries neither (only stdin) is
    discarded.

    **Cancellation:** as :meth:`Child.wait_with_output`; the output read so far is lost.
    """
    pty = child.pty
    assert pty is not None
    stdin_on, stdout_on, stderr_on = on_terminal
    chunks: list[bytes] = []
    async with internal_task_group() as tg:
        tg.start_soon(_drain_terminal, pty, chunks)
        if stdin_on:
            await _type_end_of_file(pty)
        piped = await child.wait_with_output()
    terminal = b"".join(chunks)
    return Output(
        piped.status,
        terminal if stdout_on else piped.stdout,
        terminal if stderr_on and not stdout_on else piped.stderr,
    )


async def status_with_terminal(child: Child, stdin_on_terminal: bool) -> ExitStatus:
    """:meth:`Command.status` for a child with streams on a terminal: what the program
    writes there is read and discarded until it exits.

    **Cancellation:** as :meth:`Child.wait`: the child is left to the block's exit policy.
    """
    pty = child.pty
    assert pty is not None
    async with internal_task_group() as tg:
        tg.start_soon(_drain_terminal, pty, None)
        if stdin_on_terminal:
            await _type_end_of_file(pty)
        status = await child.wait()
        tg.cancel_scope.cancel()  # returns at exit, as wait() does, not at end of file
    return status


async def _drain_terminal(pty: PtyStream, chunks: list[bytes] | None) -> None:
    """Read the terminal to its end of file, keeping what it says in ``chunks`` (if any),
    so a program writing more than the terminal buffers never blocks."""
    while True:
        try:
            data = await pty.receive()
        except anyio.EndOfStream:
            return
        if chunks is not None:
            chunks.append(data)
