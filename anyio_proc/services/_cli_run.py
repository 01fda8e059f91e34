"""Running the services of ``anyio-proc`` under a :class:`Supervisor`, until one ends
(``start``, foreman's rule) or all end (``run``), and the exit code of the whole."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from anyio_proc import Command, Stdio

from ._events import ServiceFailed
from ._policy import Backoff
from ._supervisor import Supervisor

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from anyio_proc import ExitStatus

    from ._cli_output import Printer
    from ._cli_plan import ServiceSpec
    from ._policy import RestartPolicy
    from ._service import Service

__all__ = ["Options", "exit_code", "shell_line", "supervise"]


@dataclass
class Options:
    backend: str
    restart: RestartPolicy
    timeout: float
    ready_timeout: float | None
    max_restarts: int
    backoff: float
    color: bool
    cwd: str | None
    stop_on_exit: bool  # foreman: any service ending stops the others
    stop_on_failure: bool


# A line with none of these is one simple command, which the shell may replace itself with.
_SHELL_SYNTAX = re.compile(r"[;&|(){}<>`\n]")
_KEYWORDS_AND_BUILTINS = (
    "! [[ case for function if select time until while . : alias cd eval exec exit export "
    "readonly return set shift source trap ulimit umask unset wait"
)
_NOT_PROGRAMS = frozenset(_KEYWORDS_AND_BUILTINS.split())


def shell_line(command: str) -> str:
    """The line given to ``sh -c``: ``exec`` in front of a simple command.

    The service is then the process we started, not a shell waiting for it: its exit
    status is the service's own, and the shutdown signal reaches it first, so a service
    that exits cleanly on SIGTERM is reported that way rather than as a shell killed by it.
    """
    words = command.split(maxsplit=1)
    if _SHELL_SYNTAX.search(command) or "=" in words[0] or words[0] in _NOT_PROGRAMS:
        return command
    return "exec " + command


def exit_code(status: ExitStatus) -> int:
    """A shell's exit code for ``status``: the code, or 128 + the signal."""
    code = status.code
    if code is not None:
        return code
    sig = status.signal
    return 128 + sig if sig is not None else 1


def _failure_code(exc: ServiceFailed) -> int:
    """The exit code for a service that gave up or failed its start: never 0, even when
    its last run exited 0 (``--restart always``, or an exit before it was ready)."""
    code = exit_code(exc.status) if exc.status is not None else 1
    return code or 1


def _command(spec: ServiceSpec, opts: Options) -> Command:
    cmd = (
        Command.shell(shell_line(spec.command))
        .envs(spec.env)
        .stdin(Stdio.NULL)
        # Its own process group: Ctrl-C in the terminal reaches only us, and we
        # stop the services in order; shutdown then reaches a shell's children too.
        .process_group(0)
        .shutdown(signal.SIGTERM, opts.timeout)
    )
    if opts.cwd is not None:
        cmd = cmd.current_dir(opts.cwd)
    return cmd


async def supervise(services: list[ServiceSpec], opts: Options, printer: Printer) -> int:
    """Run the services until one ends (foreman) or all end (``run``); the exit code.

    **Cancellation:** every service is stopped (see :class:`Supervisor`) before it propagates.
    """
    return await _Session(services, opts, printer).run()


class _Session:
    """One run of the services: when to stop, and the exit code it comes to."""

    def __init__(self, services: list[ServiceSpec], opts: Options, printer: Printer) -> None:
        self.specs = services
        self.opts = opts
        self.printer = printer
        self.supervisor = Supervisor(on_output=printer.output, on_event=printer.event)
        self.stop = anyio.Event()
        self.first_failure: int | None = None
        self.interrupted: int | None = None
        self.ended = 0

    async def run(self) -> int:
        async with anyio.create_task_group() as outer:
            # Outside the supervisor's block, so a second Ctrl-C is heard during the shutdown.
            await outer.start(self.on_signals)
            try:
                async with self.supervisor, anyio.create_task_group() as tg:
                    tg.start_soon(self.start_all, tg)
                    await self.stop.wait()
                    tg.cancel_scope.cancel()
            except ServiceFailed as exc:
                self.failed(_failure_code(exc))
            finally:
                outer.cancel_scope.cancel()
        if self.first_failure is not None:
            return self.first_failure
        if self.interrupted is not None:
            return 128 + self.interrupted
        return 0

    def failed(self, code: int) -> None:
        if self.first_failure is None:
            self.first_failure = code

    async def start_all(self, tg: TaskGroup) -> None:
        """Start the services in order, each once the one before it is ready."""
        opts = self.opts
        for spec in self.specs:
            try:
                service = await self.supervisor.start(
                    spec.name,
                    _command(spec, opts),
                    restart=opts.restart,
                    ready=spec.ready,
                    ready_timeout=opts.ready_timeout,
                    max_restarts=opts.max_restarts,
                    backoff=Backoff(initial=opts.backoff, max=max(30.0, opts.backoff)),
                    merge_stderr=True,
                )
            except ServiceFailed as exc:
                self.failed(_failure_code(exc))
                self.stop.set()
                return
            tg.start_soon(self.watch, service)

    async def watch(self, service: Service) -> None:
        """Wait for ``service`` to end; stop the others if it is time to."""
        status = await service.wait()
        self.ended += 1
        if service.stopped or self.stop.is_set():
            return
        if not status.success:
            self.failed(exit_code(status))
        if self.opts.stop_on_exit or (self.opts.stop_on_failure and not status.success):
            self.printer.system(f"{service.name} ended, stopping the others")
            self.stop.set()
        elif self.ended == len(self.specs):
            self.stop.set()

    async def on_signals(self, *, task_status: TaskStatus[None]) -> None:
        """SIGINT or SIGTERM stops everything; a second one kills what is left at once."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if self.interrupted is None:
                    self.interrupted = signum
                    name = signal.Signals(signum).name
                    self.printer.system(f"{name} received, stopping all services")
                    self.stop.set()
                else:
                    self.printer.system("second signal: killing all services now")
                    for service in self.supervisor.services:
                        child = service.child
                        if child is not None:
                            child.kill()
