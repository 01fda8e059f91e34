"""A service: its public face (:class:`Service`) and the task that runs it, restarting
its process by policy until it ends for good (:class:`ServiceRunner`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio import TASK_STATUS_IGNORED

from ._events import ServiceEvent, ServiceFailed
from ._policy import RestartBudget
from ._ready import ReadyLine
from ._run import ProcessRun, spawn_captured

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from anyio_proc import Child, Command, ExitStatus
    from anyio_proc.remote import Host

    from ._host import ServiceHost
    from ._policy import Backoff, RestartPolicy
    from ._ready import ReadyCheck

__all__ = ["Service", "ServiceRunner"]


class Service:
    """A named service of a :class:`Supervisor`; :meth:`Supervisor.start` returns it."""

    def __init__(
        self,
        runner: ServiceRunner,
        name: str,
        command: Command,
        *,
        restart: RestartPolicy,
        ready: ReadyCheck | None,
        ready_timeout: float | None,
        backoff: Backoff,
        max_restarts: int,
        restart_window: float,
        host: Host | None = None,
    ) -> None:
        self._runner = runner
        self.name = name
        self.command = command
        self.restart = restart
        self.ready_check = ready
        self.ready_timeout = ready_timeout
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        #: The remote host its processes run on (``Supervisor.start(host=...)``), or None.
        self.host = host
        #: How many times the process was started again.
        self.restarts = 0
        #: The exit status of the last process, once one has exited.
        self.status: ExitStatus | None = None
        #: True if the last process was still running when the supervisor stopped it.
        self.stopped = False
        #: Why the service gave up, if it did.
        self.failure: ServiceFailed | None = None

    @property
    def child(self) -> Child | None:
        """The current process, while one runs (a restart makes a new one).

        Its piped stdin, if any, is the user's: the supervisor's own waits leave it open.
        """
        run = self._runner.current
        return None if run is None or run.closed.is_set() else run.child

    @property
    def pid(self) -> int | None:
        """The current process's pid (``child.pid``); for a service on a remote host, the
        local ``ssh`` session's, its pid on the host being ``child.remote_pid``."""
        child = self.child
        return None if child is None else child.pid

    @property
    def ended(self) -> bool:
        """True once the service will not run again."""
        return self._runner.ended.is_set()

    async def wait(self) -> ExitStatus:
        """Wait until the service has ended for good (exited and not restarted, gave up, or
        was stopped) and return the status of its last process.

        Raises its :class:`ServiceFailed` if it ended without any process having run.

        **Cancellation:** safe; it only waits, and can be called again.
        """
        await self._runner.ended.wait()
        if self.status is None:
            assert self.failure is not None
            raise self.failure
        return self.status

    def __repr__(self) -> str:
        if self.ended:
            state = f"ended ({self.status})"
        elif self.child is not None:
            state = f"running pid={self.child.pid}"
        else:
            state = "waiting"
        return f"<Service {self.name!r} {state} restarts={self.restarts}>"


class ServiceRunner:
    """The task of one service, and what the Supervisor steers it by."""

    def __init__(
        self,
        host: ServiceHost,
        name: str,
        command: Command,
        *,
        restart: RestartPolicy,
        ready: ReadyCheck | None,
        ready_timeout: float | None,
        backoff: Backoff,
        max_restarts: int,
        restart_window: float,
        merge_stderr: bool,
        remote: Host | None = None,
    ) -> None:
        self.host = host
        self.merge_stderr = merge_stderr
        self.service = Service(
            self,
            name,
            command,
            restart=restart,
            ready=ready,
            ready_timeout=ready_timeout,
            backoff=backoff,
            max_restarts=max_restarts,
            restart_window=restart_window,
            host=remote,
        )
        self.budget = RestartBudget(
            name,
            restart,
            backoff,
            limit=max_restarts,
            window=restart_window,
            clock=host.clock,
            rng=host.rng,
        )
        #: The process of the current (or last) run.
        self.current: ProcessRun | None = None
        #: Set once the service was ready for the first time: start() has its answer.
        self.started = False
        #: Set once start() has returned the service to its caller: from then on it is in
        #: the supervisor's list and the ordered shutdown will stop it.
        self.handed_over = False
        self.ended = anyio.Event()

    async def main(self, *, task_status: TaskStatus[Service] = TASK_STATUS_IGNORED) -> None:
        """The service's task: run it until it ends for good; report a failure."""
        failure: ServiceFailed | None = None
        try:
            async with anyio.create_task_group() as tg:
                # Caught inside the task group, which would wrap it in an ExceptionGroup.
                try:
                    await self._supervise(tg, task_status)
                except ServiceFailed as exc:
                    failure = exc
            if failure is not None:
                self.service.failure = failure
                self.host.event(ServiceEvent(self.service.name, "failed", message=str(failure)))
                if not self.started:
                    raise failure  # to the caller of start(), who is waiting for readiness
                self.host.fail(failure)
        finally:
            self.ended.set()

    async def _supervise(self, tg: TaskGroup, task_status: TaskStatus[Service]) -> None:
        """Run, watch and restart the process until it ends for good."""
        service, host = self.service, self.host
        deadline = None
        if service.ready_timeout is not None:
            deadline = anyio.current_time() + service.ready_timeout
        while True:
            run = await self._spawn(tg)
            try:
                # Fired here, not in _spawn(): from now on _end_run() stops this process
                # whatever happens, so nothing the event leads to can leave it to nobody.
                host.event(ServiceEvent(service.name, "spawned", pid=run.child.pid))
                if not self.started and await run.wait_ready(deadline, service.ready_timeout):
                    self.started = True
                    task_status.started(service)
                # Not a plain wait(): that closes our end of the child's stdin, which is the
                # user's to close (a piped stdin would see end-of-file at once).
                await run.child.wait(close_stdin=False)
            finally:
                await self._end_run(run)
            if not await self._restart_after(run, task_status):
                return

    async def _restart_after(self, run: ProcessRun, task_status: TaskStatus[Service]) -> bool:
        """Whether to run the process again, once the restart delay has passed."""
        service, host = self.service, self.host
        status = service.status
        assert status is not None
        if not self.started and run.ready.is_set():
            # The line that made it ready was read after the exit was seen.
            self.started = True
            host.event(ServiceEvent(service.name, "ready"))
            task_status.started(service)
        if host.closing:
            return False
        delay = self.budget.delay_after(status)
        if delay is None:
            if not self.started:
                raise ServiceFailed(service.name, "exited before it was ready", status)
            return False
        host.event(ServiceEvent(service.name, "restarting", delay=delay))
        await host.sleep(delay)
        if host.closing:
            return False
        service.restarts += 1
        return True

    async def _spawn(self, tg: TaskGroup) -> ProcessRun:
        service = self.service
        check = service.ready_check
        capture = self.host.captures_output or isinstance(check, ReadyLine)
        remote = service.host
        try:
            child, streams = await spawn_captured(
                service.command, capture=capture, merge_stderr=self.merge_stderr, host=remote
            )
        except OSError as exc:  # SSHError too: the host unreachable, the connection lost
            raise ServiceFailed(service.name, f"could not be started: {exc}") from exc
        except RuntimeError as exc:
            if remote is None:
                raise
            # The host's block has ended (the caller's nesting of the blocks is wrong, or
            # it was closed under the service): a failure of the service, not a crash of
            # its task (which the task group would wrap up with the others).
            raise ServiceFailed(
                service.name, f"could not be started on {remote.destination!r}: {exc}"
            ) from exc
        # No checkpoint from the spawn to here: the child is always recorded.
        run = ProcessRun(
            child,
            streams,
            name=service.name,
            host=self.host,
            ready_check=check,
            on_exit=self._record_exit,
        )
        self.current = run
        run.start_tasks(tg, poll_port=not self.started)
        return run

    def _record_exit(self, status: ExitStatus, stopped: bool) -> None:
        self.service.status = status
        self.service.stopped = stopped

    async def _end_run(self, run: ProcessRun) -> None:
        """Close the run's process and drain its output; shielded, bounded in time."""
        with anyio.CancelScope(shield=True):
            if self.handed_over and run.child.returncode is None and not run.closing:
                # Cancelled while running: the supervisor stops services one by one in
                # reverse start order; this one's turn comes after those started later.
                # Not before start() has returned it, though: a start() cancelled just as
                # the service became ready waits for this task (anyio's TaskGroup.start), and
                # drops the service from the list, so that turn would never come.
                await run.closed.wait()
            await run.close()
            await run.drain()
