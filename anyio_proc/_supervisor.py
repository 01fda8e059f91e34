"""``Supervisor``: named, restartable services with readiness and one ordered shutdown.

The supervisor is an async context manager around a task group, so its services live inside
the caller's task and can never outlive the block::

    async with Supervisor(on_output=print) as sup:
        await sup.start("db", Command("postgres", ...), ready=ReadyPort(5432))
        await sup.start("web", Command("gunicorn", ...), restart="on-failure")
        await sup.wait()

``start()`` returns once the service is ready, so what is started after it can rely on it.
Leaving the block, a cancellation, or a service that gives up restarting stops every service
with its exit policy (:meth:`Child.aclose`: shutdown signal, grace period, SIGKILL), one at a
time in reverse start order, as dependants must stop before what they depend on.
"""

from __future__ import annotations

import enum
import math
import os
import random as _random
import re
import sys
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import anyio
from anyio import TASK_STATUS_IGNORED

from ._os.pipes import set_blocking
from ._streams import PipeReceiveStream

if sys.version_info < (3, 11):
    # A dependency on 3.10 only, so it may be missing where the type checker runs.
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from anyio.abc import TaskGroup, TaskStatus

    from ._child import Child
    from ._command import Command
    from ._status import ExitStatus

__all__ = [
    "Backoff",
    "OutputLine",
    "ReadyLine",
    "ReadyPort",
    "Restart",
    "Service",
    "ServiceEvent",
    "ServiceFailed",
    "Supervisor",
]

# Polling a port: there is no event for "someone listens now". Start fast, since servers
# usually bind within milliseconds, and back off to a light load.
_PORT_POLL_FIRST = 0.01
_PORT_POLL_MAX = 0.25


class Restart(str, enum.Enum):
    """When a service whose process exited is started again."""

    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number ``n`` (counted within the restart window, from 0):
    ``initial * factor**n``, at most ``max``, then scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` (and capped at ``max`` again), so that services failing
    together do not restart in lockstep."""

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        # Written so that NaN, which fails every comparison, fails each check too.
        if not (0 <= self.initial <= self.max < math.inf):
            raise ValueError("Backoff needs 0 <= initial <= max < inf")
        if not self.factor >= 1:
            raise ValueError("Backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: _random.Random) -> float:
        try:
            base = min(self.max, self.initial * self.factor**attempt)
        except OverflowError:
            base = self.max
        spread = 1 + self.jitter * (2 * rng.random() - 1) if self.jitter else 1.0
        return min(self.max, base * spread)


@dataclass(frozen=True)
class ReadyLine:
    """Ready once a line of output matches ``pattern`` (``re.search``); ``stream`` limits
    the search to ``"stdout"`` or ``"stderr"``."""

    pattern: str | re.Pattern[str]
    stream: Literal["stdout", "stderr"] | None = None

    def __post_init__(self) -> None:
        if self.stream not in (None, "stdout", "stderr"):
            raise ValueError(
                f"ReadyLine stream must be 'stdout', 'stderr' or None, not {self.stream!r}"
            )
        try:
            self.compiled()  # a bad regular expression fails here, not in start()
        except re.error as exc:
            raise ValueError(f"ReadyLine: bad regular expression {self.pattern!r}: {exc}") from exc

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern) if isinstance(self.pattern, str) else self.pattern


@dataclass(frozen=True)
class ReadyPort:
    """Ready once a TCP connection to ``host:port`` succeeds.

    Anything listening there counts, so pick a port the service owns.
    """

    port: int
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        # Checked here: a bad port would otherwise fail inside the supervisor's polling task
        # (OverflowError from the socket layer), not where the mistake is.
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"ReadyPort port must be an int, not {type(self.port).__name__}")
        if not 0 < self.port < 65536:
            raise ValueError(f"ReadyPort port {self.port} is out of range (1-65535)")


ReadyCheck = ReadyLine | ReadyPort


class OutputLine(NamedTuple):
    """One line of a service's output, without its line ending."""

    service: str
    stream: Literal["stdout", "stderr"]
    line: str


EventKind = Literal["spawned", "ready", "exited", "restarting", "stopping", "failed"]


@dataclass(frozen=True)
class ServiceEvent:
    """Something that happened to a service, for logs and progress displays.

    ``exited`` carries the ``status``, whether the supervisor ``stopped`` it, and whether
    its exit policy ``escalated`` to SIGKILL (the process, or something left in its process
    group or tree, outlived the shutdown signal's grace period; the status alone does not
    tell, as the leader of a group may have obeyed the signal while a member did not);
    ``restarting`` the ``delay`` before the next start; ``spawned`` the ``pid``.
    """

    service: str
    kind: EventKind
    pid: int | None = None
    status: ExitStatus | None = None
    stopped: bool = False
    delay: float | None = None
    message: str = ""
    escalated: bool = False

    def __str__(self) -> str:
        if self.kind == "spawned":
            return f"started with pid {self.pid}"
        if self.kind == "exited":
            text = f"{'stopped' if self.stopped else 'exited'}: {self.status}"
            if self.escalated:
                text += "; escalated to SIGKILL after the grace period"
            return text
        if self.kind == "restarting" and self.delay is not None:
            # Past a day, %g: a huge backoff is a number, not a line of digits.
            delay = f"{self.delay:.2f}" if self.delay < 86400 else f"{self.delay:.3g}"
            return f"restarting in {delay} s"
        return self.message or self.kind


class ServiceFailed(Exception):
    """Raised when a service cannot be kept running: it exited before it was ready and is
    not restarted, was not ready within its ``ready_timeout``, could not be started, or
    needed more restarts than its limit allows within the window.

    ``service`` is its name, ``status`` the exit status of its last run (``None`` if no
    process ran).
    """

    def __init__(self, service: str, reason: str, status: ExitStatus | None = None) -> None:
        self.service = service
        self.reason = reason
        self.status = status
        tail = f" (last run: {status})" if status is not None else ""
        super().__init__(f"service {service!r} {reason}{tail}")


class _Run:
    """One process of a service: the child, its output pumps and readiness."""

    __slots__ = (
        "check_scope",
        "child",
        "closed",
        "closing",
        "pump_scopes",
        "pumps_done",
        "pumps_left",
        "ready",
    )

    def __init__(self, child: Child, pumps: int) -> None:
        self.child = child
        self.ready = anyio.Event()
        self.closing = False
        self.closed = anyio.Event()
        # Created up front so they can be cancelled even before their task runs.
        self.pump_scopes = [anyio.CancelScope(shield=True) for _ in range(pumps)]
        self.pumps_left = pumps
        self.pumps_done = anyio.Event()
        if not pumps:
            self.pumps_done.set()
        self.check_scope = anyio.CancelScope()


class Service:
    """A named service of a :class:`Supervisor`; :meth:`Supervisor.start` returns it."""

    def __init__(
        self,
        supervisor: Supervisor,
        name: str,
        command: Command,
        *,
        restart: Restart,
        ready: ReadyCheck | None,
        ready_timeout: float | None,
        backoff: Backoff,
        max_restarts: int,
        restart_window: float,
        merge_stderr: bool,
    ) -> None:
        self._sup = supervisor
        self.name = name
        self.command = command
        self.restart = restart
        self.ready_check = ready
        self.ready_timeout = ready_timeout
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self._merge_stderr = merge_stderr
        self._regex = ready.compiled() if isinstance(ready, ReadyLine) else None
        #: How many times the process was started again.
        self.restarts = 0
        #: The exit status of the last process, once one has exited.
        self.status: ExitStatus | None = None
        #: True if the last process was still running when the supervisor stopped it.
        self.stopped = False
        #: Why the service gave up, if it did.
        self.failure: ServiceFailed | None = None
        self._run: _Run | None = None
        self._started = False
        # Set once start() has returned the service to its caller: from then on it is in
        # the supervisor's list and the ordered shutdown will stop it.
        self._handed_over = False
        self._ended = anyio.Event()

    @property
    def child(self) -> Child | None:
        """The current process, while one runs (a restart makes a new one).

        Its piped stdin, if any, is the user's: the supervisor's own waits leave it open.
        """
        run = self._run
        return None if run is None or run.closed.is_set() else run.child

    @property
    def pid(self) -> int | None:
        child = self.child
        return None if child is None else child.pid

    @property
    def ended(self) -> bool:
        """True once the service will not run again."""
        return self._ended.is_set()

    async def wait(self) -> ExitStatus:
        """Wait until the service has ended for good (exited and not restarted, gave up, or
        was stopped) and return the status of its last process.

        Raises its :class:`ServiceFailed` if it ended without any process having run.

        **Cancellation:** safe; it only waits, and can be called again.
        """
        await self._ended.wait()
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

    # -- the service task ---------------------------------------------------------------

    async def _main(self, *, task_status: TaskStatus[Service] = TASK_STATUS_IGNORED) -> None:
        failure: ServiceFailed | None = None
        try:
            async with anyio.create_task_group() as tg:
                # Caught inside the task group, which would wrap it in an ExceptionGroup.
                try:
                    await self._supervise(tg, task_status)
                except ServiceFailed as exc:
                    failure = exc
            if failure is not None:
                self.failure = failure
                self._sup._event(ServiceEvent(self.name, "failed", message=str(failure)))
                if not self._started:
                    raise failure  # to the caller of start(), who is waiting for readiness
                self._sup._fail(failure)
        finally:
            self._ended.set()

    async def _supervise(self, tg: TaskGroup, task_status: TaskStatus[Service]) -> None:
        """Run, watch and restart the process until it ends for good."""
        sup = self._sup
        recent: deque[float] = deque()  # clock times of the restarts within the window
        deadline = None
        if self.ready_timeout is not None:
            deadline = anyio.current_time() + self.ready_timeout
        while True:
            run = await self._spawn(tg)
            try:
                # Fired here, not in _spawn(): from now on _end_run() stops this process
                # whatever happens, so nothing the event leads to can leave it to nobody.
                sup._event(ServiceEvent(self.name, "spawned", pid=run.child.pid))
                if not self._started and await self._wait_ready(run, deadline):
                    self._started = True
                    task_status.started(self)
                # Not a plain wait(): that closes our end of the child's stdin, which is the
                # user's to close (a piped stdin would see end-of-file at once).
                await run.child.wait(close_stdin=False)
            finally:
                await self._end_run(run)
            status = self.status
            assert status is not None
            if not self._started and run.ready.is_set():
                # The line that made it ready was read after the exit was seen.
                self._started = True
                sup._event(ServiceEvent(self.name, "ready"))
                task_status.started(self)
            if sup._closing:
                return
            delay = self._restart_delay(status, recent)
            if delay is None:
                if not self._started:
                    raise ServiceFailed(self.name, "exited before it was ready", status)
                return
            sup._event(ServiceEvent(self.name, "restarting", delay=delay))
            await sup._sleep(delay)
            if sup._closing:
                return
            self.restarts += 1

    async def _spawn(self, tg: TaskGroup) -> _Run:
        sup = self._sup
        cmd = self.command
        # Our own pipes rather than the Child's: aclose() closes the Child's pipes once the
        # process is reaped, which would drop whatever it wrote just before exiting. These
        # are read to end-of-file whenever the process ends.
        pipes: list[tuple[Literal["stdout", "stderr"], int, int]] = []
        try:
            if sup._on_output is not None or self._regex is not None:
                streams: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")
                for which in streams[: 1 if self._merge_stderr else 2]:
                    read_fd, write_fd = os.pipe()
                    pipes.append((which, read_fd, write_fd))
                    # Non-blocking for PipeReceiveStream, which reads until EAGAIN and then
                    # waits; set before the spawn so that nothing can fail after it.
                    set_blocking(read_fd, False)
                cmd = cmd.stdout(pipes[0][2]).stderr(pipes[-1][2])
            child = await cmd.spawn()
        except BaseException as exc:
            for _, read_fd, write_fd in pipes:
                os.close(read_fd)
                os.close(write_fd)
            if isinstance(exc, OSError):
                raise ServiceFailed(self.name, f"could not be started: {exc}") from exc
            raise
        # No checkpoint from the spawn to here: the child is always recorded.
        run = _Run(child, len(pipes))
        self._run = run
        for (which, read_fd, write_fd), scope in zip(pipes, run.pump_scopes, strict=True):
            os.close(write_fd)  # the child has its copy; ours would keep end-of-file away
            tg.start_soon(self._pump, run, which, PipeReceiveStream(read_fd), scope)
        if self.ready_check is None:
            run.ready.set()
        elif isinstance(self.ready_check, ReadyPort) and not self._started:
            tg.start_soon(self._check_port, run, self.ready_check)
        return run

    async def _pump(
        self,
        run: _Run,
        which: Literal["stdout", "stderr"],
        stream: PipeReceiveStream,
        scope: anyio.CancelScope,
    ) -> None:
        # Shielded: during a shutdown the output (a server's goodbye) keeps flowing until
        # end-of-file; _end_run cancels it if a grandchild holds the pipe open too long.
        check = self.ready_check
        regex = self._regex
        if isinstance(check, ReadyLine) and check.stream not in (None, which):
            regex = None
        try:
            with scope:
                async for line in stream.lines(errors="replace"):
                    if regex is not None and not run.ready.is_set() and regex.search(line):
                        run.ready.set()
                    self._sup._output(OutputLine(self.name, which, line))
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            run.pumps_left -= 1
            if not run.pumps_left:
                run.pumps_done.set()

    async def _check_port(self, run: _Run, check: ReadyPort) -> None:
        delay = _PORT_POLL_FIRST
        with run.check_scope:
            while True:
                try:
                    conn = await anyio.connect_tcp(check.host, check.port)
                except OSError:
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _PORT_POLL_MAX)
                    continue
                await conn.aclose()
                run.ready.set()
                return

    async def _wait_ready(self, run: _Run, deadline: float | None) -> bool:
        """True once ready, False if the process exited first; ServiceFailed on timeout."""
        if run.ready.is_set():
            return True
        timeout = math.inf if deadline is None else deadline - anyio.current_time()
        with anyio.move_on_after(timeout) as timer:
            async with anyio.create_task_group() as race:

                async def exited() -> None:
                    await run.child.wait(close_stdin=False)  # stdin is the user's
                    race.cancel_scope.cancel()

                race.start_soon(exited)
                await run.ready.wait()
                race.cancel_scope.cancel()
        if run.ready.is_set():
            self._sup._event(ServiceEvent(self.name, "ready"))
            return True
        if timer.cancelled_caught:
            raise ServiceFailed(self.name, f"was not ready within {self.ready_timeout:g} s")
        return False

    async def _end_run(self, run: _Run) -> None:
        """Close the run's process and drain its output; shielded, bounded in time."""
        with anyio.CancelScope(shield=True):
            if self._handed_over and run.child.returncode is None and not run.closing:
                # Cancelled while running: the supervisor stops services one by one in
                # reverse start order; this one's turn comes after those started later.
                # Not before start() has returned it, though: a start() cancelled just as
                # the service became ready waits for this task (anyio's TaskGroup.start), and
                # drops the service from the list, so that turn would never come.
                await run.closed.wait()
            await self._close_run(run)
            run.check_scope.cancel()
            with anyio.move_on_after(self._sup._drain_timeout):
                await run.pumps_done.wait()
            for scope in run.pump_scopes:
                scope.cancel()

    async def _close_run(self, run: _Run) -> None:
        """Apply the exit policy to the run's process (once) and record how it ended."""
        if run.closing:
            await run.closed.wait()
            return
        run.closing = True
        stopped = False
        try:
            with anyio.CancelScope(shield=True):
                stopped = run.child.returncode is None
                if stopped:
                    self._sup._event(ServiceEvent(self.name, "stopping", pid=run.child.pid))
                await run.child.aclose()
                await run.child.wait(close_stdin=False)
        finally:
            # Even when something got through the shield (a Ctrl-C on trio, a native
            # asyncio cancel): aclose() has then killed and reaped the process. The
            # service's task, which waits for `closed`, reads the status recorded here, and
            # the exit is reported all the same (_event() never raises).
            status = run.child.try_wait()
            if status is not None:
                self.status = status
                self.stopped = stopped
            run.closed.set()
            if status is not None:
                self._sup._event(
                    ServiceEvent(
                        self.name,
                        "exited",
                        status=status,
                        stopped=stopped,
                        escalated=run.child.escalated,
                    )
                )

    def _restart_delay(self, status: ExitStatus, recent: deque[float]) -> float | None:
        """The delay before restarting, ``None`` for no restart; ServiceFailed past the limit."""
        if self.restart is Restart.NEVER or (self.restart is Restart.ON_FAILURE and status.success):
            return None
        now = self._sup._clock()
        while recent and recent[0] <= now - self.restart_window:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            raise ServiceFailed(
                self.name,
                f"gave up after {len(recent)} restart(s) within {self.restart_window:g} s",
                status,
            )
        delay = self.backoff.delay(len(recent), self._sup._rng)
        recent.append(now)
        return delay


class Supervisor:
    """Run named services, restart them by policy, and stop them all together.

    ``on_output`` receives every line the services print, as :class:`OutputLine` records
    (service, stream, line); when it is given, the services' stdout and stderr are pipes to
    us. Without it, a service's output goes where its ``Command`` says (inherited by
    default), except for services with a :class:`ReadyLine` check, whose lines are read and
    copied to our own stdout/stderr. ``on_event`` receives :class:`ServiceEvent` records
    (spawned, ready, exited, restarting, stopping, failed). Callbacks run in the event loop,
    so they must not block. Whatever one raises stops every service and is raised out of
    the block: an :class:`Exception`, and a ``BaseException`` too (``SystemExit`` from
    ``sys.exit()``, ``KeyboardInterrupt`` from a Ctrl-C that lands in a callback, as it does
    on trio, or a second one on asyncio while the first waits for a blocking callback).

    ``drain_timeout`` bounds how long output is still read after a process ended (a
    grandchild may keep the pipe open). ``clock``, ``sleep`` and ``rng`` are what the
    restart logic uses for the window, the backoff delay and the jitter; tests replace them.

    **Errors out of the block**, after every service has been stopped: what the body
    raised comes out as it was raised (``ServiceFailed`` from :meth:`start`, ``ValueError``,
    ``KeyboardInterrupt``, a cancellation...). A service that gives up (or a callback that
    raises) cancels the body and comes out bare too: its :class:`ServiceFailed` (or the
    callback's exception); when several do, the first one, except that a callback's
    ``SystemExit``, ``KeyboardInterrupt`` or other ``BaseException`` outranks an earlier
    :class:`Exception` (a request to end the program is not dropped for an error; each
    service keeps its own failure in ``failure``). Only when the body raised
    something other than a cancellation *and* a service gave up (or a callback raised) as
    well do the two come out together, in a :class:`BaseExceptionGroup` (an
    :class:`ExceptionGroup` when both are :class:`Exception`), the body's first; an
    ``except* ServiceFailed`` catches a ServiceFailed in every case.

    **Cancellation:** leaving the block by cancellation, like any other way, stops every
    service (shielded, bounded by their shutdown timeouts) before the exception propagates.
    A service that gave up in the meantime is not dropped for it: its ServiceFailed comes
    out instead of the cancellation, as an error from a task does out of a task group.
    What gets through the shield during that shutdown (a Ctrl-C on trio, a native asyncio
    ``Task.cancel()``) cuts short the exit policy of the service being stopped (killed and
    reaped at once, see :meth:`Child.aclose`); the others are still stopped, in order,
    before it propagates.
    """

    def __init__(
        self,
        *,
        on_output: Callable[[OutputLine], object] | None = None,
        on_event: Callable[[ServiceEvent], object] | None = None,
        drain_timeout: float = 1.0,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        rng: _random.Random | None = None,
    ) -> None:
        if not drain_timeout >= 0:  # NaN included
            raise ValueError(f"drain_timeout must be >= 0, not {drain_timeout}")
        self._on_output = on_output
        self._on_event = on_event
        self._drain_timeout = drain_timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else _random.Random()
        self._services: list[Service] = []
        self._tg: TaskGroup | None = None
        self._closing = False
        self._failure: BaseException | None = None

    @property
    def services(self) -> list[Service]:
        """The services in start order."""
        return list(self._services)

    def __getitem__(self, name: str) -> Service:
        for service in self._services:
            if service.name == name:
                return service
        raise KeyError(name)

    async def __aenter__(self) -> Supervisor:
        if self._tg is not None:
            raise RuntimeError("a Supervisor can be entered only once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        self._closing = True
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_all()
        finally:
            # Wakes services sleeping before a restart or polling a port; those with a
            # process have been stopped above, so this cancels nothing that runs.
            tg.cancel_scope.cancel()
            cancelled = anyio.get_cancelled_exc_class()
            suppress: bool | None = False
            if isinstance(exc, cancelled):
                # Only the task group tells its own cancellation (a service gave up: it is
                # swallowed) from an outer scope's (propagated).
                try:
                    suppress = await tg.__aexit__(exc_type, exc, tb)
                except cancelled:
                    if self._failure is None:
                        raise
                    # An error is not dropped for a cancellation (nor is it by anyio's
                    # task groups): the failure is raised below instead.
            else:
                # What else the body raised is not handed to the task group, which would
                # wrap it in an ExceptionGroup: it comes out as raised (the rule is in the
                # class docstring). The task group exits at its own nesting level (no
                # shield can wrap it), so an outer cancellation may land here, once every
                # task has ended: it gives way to the body's exception, or to a failure.
                try:
                    await tg.__aexit__(None, None, None)
                except cancelled:
                    if exc is None and self._failure is None:
                        raise
        failure = self._failure
        if failure is None:
            return suppress
        if exc is None or isinstance(exc, cancelled):
            raise failure
        # Two independent errors: the body's and a service's (or a callback's).
        group = BaseExceptionGroup(
            "the body and a service of the Supervisor failed", [exc, failure]
        )
        raise group from None  # the body's exception is in it: no "during handling" repeat

    async def _stop_all(self) -> None:
        # One at a time, latest first, re-reading the list each time: a service may have
        # spawned a process while an earlier one was being stopped.
        error: BaseException | None = None
        while (turn := self._next_to_stop()) is not None:
            service, run = turn
            try:
                await service._close_run(run)
            except BaseException as exc:
                # Something got through the shield (a Ctrl-C on trio, a native asyncio
                # cancel); that process is reaped all the same. The others are stopped
                # before it propagates: each service's task waits for its turn here, and
                # one left out would hang the block.
                if error is None:
                    error = exc
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no reference cycle through the traceback

    def _next_to_stop(self) -> tuple[Service, _Run] | None:
        for service in reversed(self._services):
            run = service._run
            if service._started and run is not None and not run.closing:
                return service, run
        return None

    async def start(
        self,
        name: str,
        command: Command,
        *,
        restart: Restart | str = Restart.NEVER,
        ready: ReadyCheck | None = None,
        ready_timeout: float | None = None,
        backoff: Backoff | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        merge_stderr: bool = False,
    ) -> Service:
        """Start a service and return it once it is ready.

        ``restart``: ``"never"``, ``"on-failure"`` (a status other than 0) or ``"always"``,
        with ``backoff`` between restarts; more than ``max_restarts`` restarts within
        ``restart_window`` seconds make it give up, which stops every service and raises
        :class:`ServiceFailed` out of the ``async with`` block.

        ``ready``: a :class:`ReadyLine` or :class:`ReadyPort` check; without one the service
        is ready as soon as its process exists. ``merge_stderr`` sends stderr into the
        stdout pipe, keeping the order of lines between the two.

        Raises :class:`ServiceFailed` if the service exits before it is ready (and is not
        restarted), is not ready within ``ready_timeout`` seconds, or cannot be started;
        its process is stopped first.

        **Cancellation:** while waiting for readiness, stops the process being started; a
        service already started is stopped with all the others when the block is left.
        """
        if self._tg is None or self._closing:
            raise RuntimeError("Supervisor.start() needs an open 'async with Supervisor()' block")
        if not name:
            raise ValueError("a service needs a name")
        if any(s.name == name for s in self._services):
            raise ValueError(f"a service named {name!r} already exists")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
            raise TypeError(f"max_restarts must be an int, not {type(max_restarts).__name__}")
        # Written so that NaN, which fails every comparison, fails each check too.
        if max_restarts < 0 or not restart_window > 0:
            raise ValueError("max_restarts must be >= 0 and restart_window > 0")
        if ready_timeout is not None and not ready_timeout >= 0:
            raise ValueError(f"ready_timeout must be None or >= 0, not {ready_timeout}")
        service = Service(
            self,
            name,
            command,
            restart=Restart(restart),
            ready=ready,
            ready_timeout=ready_timeout,
            backoff=backoff if backoff is not None else Backoff(),
            max_restarts=max_restarts,
            restart_window=restart_window,
            merge_stderr=merge_stderr,
        )
        self._services.append(service)
        try:
            await self._tg.start(service._main)
        except BaseException:
            self._services.remove(service)
            raise
        service._handed_over = True  # no checkpoint since start() returned: see _end_run
        return service

    async def wait(self) -> None:
        """Wait until every service started so far has ended for good.

        **Cancellation:** safe; it only waits.
        """
        for service in list(self._services):
            await service._ended.wait()

    # -- what services report -------------------------------------------------------------

    def _output(self, record: OutputLine) -> None:
        try:
            if self._on_output is None:
                out = sys.stdout if record.stream == "stdout" else sys.stderr
                print(record.line, file=out, flush=True)
            else:
                self._on_output(record)
        except BaseException as exc:
            # Our own copy to stdout fails like a callback (a closed stdout, a full disk):
            # raised from the reading task, it would come out wrapped in task groups.
            self._fail(exc)

    def _event(self, event: ServiceEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop everything and raise ``exc`` out of the block (the first such error wins,
        except that a ``SystemExit``, ``KeyboardInterrupt``... outranks an ``Exception``).

        Whatever a callback raises comes here rather than up through the code that called
        it, BaseExceptions included (``sys.exit()`` in a callback, a Ctrl-C landing in one
        on trio): raised there, it would leave that service's process to nobody, or leave
        the ordered shutdown half done with the other services' tasks waiting for it.
        """
        if self._failure is None or (
            isinstance(self._failure, Exception)
            and not isinstance(exc, (Exception, anyio.get_cancelled_exc_class()))
        ):
            # A request to end the program is not dropped for an earlier error (which the
            # service that failed keeps in its .failure); an error is not dropped for a
            # cancellation, though, should a callback raise one.
            self._failure = exc
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
