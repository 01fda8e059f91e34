"""One process of a service: its child, the tasks reading its output, its readiness, and
its ending (the exit policy applied once, then the output read to its end)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio

from anyio_proc import Stdio

from ._events import OutputLine, ServiceEvent, ServiceFailed
from ._ready import ReadyPort, line_pattern, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskGroup

    from anyio_proc import Child, Command, ExitStatus, PipeReceiveStream
    from anyio_proc.remote import Host

    from ._events import StreamName
    from ._host import ServiceHost
    from ._ready import ReadyCheck

__all__ = ["ProcessRun", "spawn_captured"]

Captured = list[tuple["StreamName", "PipeReceiveStream"]]


async def spawn_captured(
    command: Command, *, capture: bool, merge_stderr: bool, host: Host | None = None
) -> tuple[Child, Captured]:
    """Spawn ``command`` (on ``host`` if given: a :class:`~anyio_proc.remote.RemoteChild`,
    which is a Child); with ``capture``, also the streams to read its output from.

    The streams are taken over from the Child (:meth:`Child.take_stdout`): the exit policy
    would close the Child's own pipes once the process is reaped, dropping what it wrote
    just before exiting (a server's goodbye); taken over, they are read to end-of-file.
    """
    if capture:
        command = command.stdout_piped()
        # Merged: one pipe, so the order of lines between the two streams is kept.
        command = command.stderr(Stdio.STDOUT) if merge_stderr else command.stderr_piped()
    child: Child
    if host is None:
        child = await command.spawn()
    else:
        child = await host.spawn(command)
    if not capture:
        return child, []
    # No checkpoint from the spawn to here: the streams always have an owner.
    streams: Captured = [("stdout", child.take_stdout())]
    if not merge_stderr:
        streams.append(("stderr", child.take_stderr()))
    return child, streams


class ProcessRun:
    """One process of a service, from its spawn to its output's end."""

    def __init__(
        self,
        child: Child,
        streams: Captured,
        *,
        name: str,
        host: ServiceHost,
        ready_check: ReadyCheck | None,
        on_exit: Callable[[ExitStatus, bool], None],
    ) -> None:
        self.child = child
        self.streams = streams
        self.name = name
        self.host = host
        self.ready_check = ready_check
        #: Called with the status and whether it was stopped, once the process has ended.
        self.on_exit = on_exit
        self.ready = anyio.Event()
        #: Set once the exit policy has been claimed (by the service or by the shutdown).
        self.closing = False
        self.closed = anyio.Event()
        # Created up front so they can be cancelled even before their task runs.
        self.pump_scopes = [anyio.CancelScope(shield=True) for _ in streams]
        self.pumps_left = len(streams)
        self.pumps_done = anyio.Event()
        if not streams:
            self.pumps_done.set()
        self.check_scope = anyio.CancelScope()

    def start_tasks(self, tg: TaskGroup, *, poll_port: bool) -> None:
        """Start reading the streams, and with ``poll_port`` polling the ready port if the
        check is one (not after a restart: the service was ready once)."""
        for (which, stream), scope in zip(self.streams, self.pump_scopes, strict=True):
            tg.start_soon(self.pump, which, stream, scope)
        check = self.ready_check
        if check is None:
            self.ready.set()
        elif poll_port and isinstance(check, ReadyPort):
            tg.start_soon(self.watch_port, check)

    async def pump(
        self, which: StreamName, stream: PipeReceiveStream, scope: anyio.CancelScope
    ) -> None:
        """Pass each line of ``stream`` on, and watch it for the ready line; close it."""
        # Shielded: during a shutdown the output (a server's goodbye) keeps flowing until
        # end-of-file; drain() cancels it if a grandchild holds the pipe open too long.
        pattern = line_pattern(self.ready_check, which)
        try:
            with scope:
                async for line in stream.lines(errors="replace"):
                    if pattern is not None and not self.ready.is_set() and pattern.search(line):
                        self.ready.set()
                    self.host.output(OutputLine(self.name, which, line))
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            self.pumps_left -= 1
            if not self.pumps_left:
                self.pumps_done.set()

    async def watch_port(self, check: ReadyPort) -> None:
        with self.check_scope:
            await wait_for_port(check)
            self.ready.set()

    async def wait_ready(self, deadline: float | None, timeout: float | None) -> bool:
        """True once ready, False if the process exited first; ServiceFailed on timeout."""
        if self.ready.is_set():
            return True
        limit = math.inf if deadline is None else deadline - anyio.current_time()
        with anyio.move_on_after(limit) as timer:
            async with anyio.create_task_group() as race:

                async def exited() -> None:
                    await self.child.wait(close_stdin=False)  # stdin is the user's
                    race.cancel_scope.cancel()

                race.start_soon(exited)
                await self.ready.wait()
                race.cancel_scope.cancel()
        if self.ready.is_set():
            self.host.event(ServiceEvent(self.name, "ready"))
            return True
        if timer.cancelled_caught:
            raise ServiceFailed(self.name, f"was not ready within {timeout:g} s")
        return False

    async def close(self) -> None:
        """Apply the exit policy to the process (once) and record how it ended."""
        if self.closing:
            await self.closed.wait()
            return
        self.closing = True
        stopped = False
        try:
            with anyio.CancelScope(shield=True):
                stopped = self.child.returncode is None
                if stopped:
                    self.host.event(ServiceEvent(self.name, "stopping", pid=self.child.pid))
                await self.child.aclose()
                await self.child.wait(close_stdin=False)
        finally:
            # Even when something got through the shield (a Ctrl-C on trio, a native
            # asyncio cancel): aclose() has then killed and reaped the process. The
            # service's task, which waits for `closed`, reads the status recorded here, and
            # the exit is reported all the same (event() never raises).
            status = self.child.try_wait()
            if status is not None:
                self.on_exit(status, stopped)
            self.closed.set()
            if status is not None:
                self.host.event(
                    ServiceEvent(
                        self.name,
                        "exited",
                        status=status,
                        stopped=stopped,
                        escalated=self.child.escalated,
                    )
                )

    async def drain(self) -> None:
        """Stop the port check and read the output to its end, for ``drain_timeout`` at
        most (a grandchild may hold the pipe open); then stop reading.

        **Cancellation:** call it shielded: it is bounded in time by itself.
        """
        self.check_scope.cancel()
        with anyio.move_on_after(self.host.drain_timeout):
            await self.pumps_done.wait()
        for scope in self.pump_scopes:
            scope.cancel()
