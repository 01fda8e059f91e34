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

import random as _random
import sys
from typing import TYPE_CHECKING

import anyio

from ._host import ServiceHost
from ._policy import Backoff, RestartPolicy
from ._ready import check_remote_ready
from ._service import ServiceRunner

if sys.version_info < (3, 11):
    # A dependency on 3.10 only, so it may be missing where the type checker runs.
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from anyio.abc import TaskGroup

    from anyio_proc import Command
    from anyio_proc.remote import Host

    from ._events import OutputLine, ServiceEvent
    from ._ready import ReadyCheck
    from ._run import ProcessRun
    from ._service import Service

__all__ = ["Supervisor"]


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
    reaped at once, see :meth:`anyio_proc.Child.aclose`); the others are still stopped, in order,
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
        self._host = ServiceHost(
            on_output=on_output,
            on_event=on_event,
            drain_timeout=drain_timeout,
            clock=clock,
            sleep=sleep,
            rng=rng if rng is not None else _random.Random(),
        )
        self._runners: list[ServiceRunner] = []
        self._tg: TaskGroup | None = None

    @property
    def services(self) -> list[Service]:
        """The services in start order."""
        return [runner.service for runner in self._runners]

    def __getitem__(self, name: str) -> Service:
        for runner in self._runners:
            if runner.service.name == name:
                return runner.service
        raise KeyError(name)

    async def __aenter__(self) -> Supervisor:
        if self._tg is not None:
            raise RuntimeError("a Supervisor can be entered only once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._host.cancel_scope = self._tg.cancel_scope
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        self._host.closing = True
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_all()
        finally:
            # Wakes services sleeping before a restart or polling a port; those with a
            # process have been stopped above, so this cancels nothing that runs.
            tg.cancel_scope.cancel()
            suppress = await self._exit_task_group(tg, exc_type, exc, tb)
        failure = self._host.failure
        if failure is None:
            return suppress
        if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
            raise failure
        # Two independent errors: the body's and a service's (or a callback's).
        group = BaseExceptionGroup(
            "the body and a service of the Supervisor failed", [exc, failure]
        )
        raise group from None  # the body's exception is in it: no "during handling" repeat

    async def _exit_task_group(
        self,
        tg: TaskGroup,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Leave the task group; what it raises gives way to a failure (see the class)."""
        cancelled = anyio.get_cancelled_exc_class()
        if isinstance(exc, cancelled):
            # Only the task group tells its own cancellation (a service gave up: it is
            # swallowed) from an outer scope's (propagated).
            try:
                return await tg.__aexit__(exc_type, exc, tb)
            except cancelled:
                if self._host.failure is None:
                    raise
                # An error is not dropped for a cancellation (nor is it by anyio's task
                # groups): the failure is raised instead.
                return False
        # What else the body raised is not handed to the task group, which would wrap it
        # in an ExceptionGroup: it comes out as raised (the rule is in the class
        # docstring). The task group exits at its own nesting level (no shield can wrap
        # it), so an outer cancellation may land here, once every task has ended: it gives
        # way to the body's exception, or to a failure.
        try:
            await tg.__aexit__(None, None, None)
        except cancelled:
            if exc is None and self._host.failure is None:
                raise
        return False

    async def _stop_all(self) -> None:
        # One at a time, latest first, re-reading the list each time: a service may have
        # spawned a process while an earlier one was being stopped.
        error: BaseException | None = None
        while (run := self._next_to_stop()) is not None:
            try:
                await run.close()
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

    def _next_to_stop(self) -> ProcessRun | None:
        for runner in reversed(self._runners):
            run = runner.current
            if runner.started and run is not None and not run.closing:
                return run
        return None

    async def start(
        self,
        name: str,
        command: Command,
        *,
        restart: RestartPolicy | str = RestartPolicy.NEVER,
        ready: ReadyCheck | None = None,
        ready_timeout: float | None = None,
        backoff: Backoff | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        merge_stderr: bool = False,
        host: Host | None = None,
    ) -> Service:
        """Start a service and return it once it is ready.

        ``restart``: a :class:`RestartPolicy` or its value: ``"never"``, ``"on-failure"``
        (a status other than 0) or ``"always"``, with ``backoff`` between restarts; more
        than ``max_restarts`` restarts within ``restart_window`` seconds make it give up,
        which stops every service and raises :class:`ServiceFailed` out of the
        ``async with`` block.

        ``ready``: a :class:`ReadyLine` or :class:`ReadyPort` check; without one the service
        is ready as soon as its process exists. ``merge_stderr`` sends stderr into the
        stdout pipe, keeping the order of lines between the two.

        ``host``: an :class:`anyio_proc.remote.Host` (from ``async with ssh_host(...)``)
        to run the service's processes on, each one ``host.spawn(command)`` (a
        :class:`~anyio_proc.remote.RemoteChild`); restarts, readiness, events and the
        ordered shutdown are the same. The Supervisor does not own the host: the caller's
        ``async with ssh_host(...)`` block must enclose the Supervisor's block. A host
        closed under a running service stops its process (the service sees it exit), and a
        restart then fails with :class:`ServiceFailed` naming the host; nothing waits
        forever. A lost connection ends the process too (a failed status: what it was is
        not known here), and a restart opens a new one. The ``pid`` of its events and of
        :attr:`Service.pid` is the local ``ssh`` session's (``service.child.remote_pid`` is
        the pid on the host). A :class:`ReadyPort` is polled from this machine, so for a
        service on a host it must name an address of that host: one of loopback
        (``ReadyPort(port)``, whose host is ``127.0.0.1``), ``localhost`` or ``0.0.0.0``
        raises :class:`ValueError`, as does a ``Command`` option that has no meaning on a
        remote host, before anything is spawned (``TypeError`` for a ``host`` that is not
        a Host).

        Raises :class:`ServiceFailed` if the service exits before it is ready (and is not
        restarted), is not ready within ``ready_timeout`` seconds, or cannot be started;
        its process is stopped first.

        **Cancellation:** while waiting for readiness, stops the process being started; a
        service already started is stopped with all the others when the block is left.
        """
        if self._tg is None or self._host.closing:
            raise RuntimeError("Supervisor.start() needs an open 'async with Supervisor()' block")
        self._check_start(name, max_restarts, restart_window, ready_timeout)
        if host is not None:
            self._check_host(host, command, ready)
        runner = ServiceRunner(
            self._host,
            name,
            command,
            restart=RestartPolicy(restart),
            ready=ready,
            ready_timeout=ready_timeout,
            backoff=backoff if backoff is not None else Backoff(),
            max_restarts=max_restarts,
            restart_window=restart_window,
            merge_stderr=merge_stderr,
            remote=host,
        )
        self._runners.append(runner)
        try:
            await self._tg.start(runner.main)
        except BaseException:
            self._runners.remove(runner)
            raise
        runner.handed_over = True  # no checkpoint since start() returned: see _end_run
        return runner.service

    def _check_start(
        self, name: str, max_restarts: int, restart_window: float, ready_timeout: float | None
    ) -> None:
        if not name:
            raise ValueError("a service needs a name")
        if any(runner.service.name == name for runner in self._runners):
            raise ValueError(f"a service named {name!r} already exists")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
            raise TypeError(f"max_restarts must be an int, not {type(max_restarts).__name__}")
        # Written so that NaN, which fails every comparison, fails each check too.
        if max_restarts < 0 or not restart_window > 0:
            raise ValueError("max_restarts must be >= 0 and restart_window > 0")
        if ready_timeout is not None and not ready_timeout >= 0:
            raise ValueError(f"ready_timeout must be None or >= 0, not {ready_timeout}")

    @staticmethod
    def _check_host(host: Host, command: Command, ready: ReadyCheck | None) -> None:
        """Refuse, before anything is spawned, what cannot work on ``host``."""
        # Imported here: a program without remote services does not load the ssh layer.
        from anyio_proc.remote import Host

        if not isinstance(host, Host):
            raise TypeError(
                f"host must be an anyio_proc.remote.Host (from ssh_host()), "
                f"not {type(host).__name__}"
            )
        check_remote_ready(ready, host.destination)
        # Builds the spawn without starting it: a Command option without meaning on a
        # remote host (uid, pass_fds, pty...) raises ValueError here, not at each restart.
        host.spawn(command)

    async def wait(self) -> None:
        """Wait until every service started so far has ended for good.

        **Cancellation:** safe; it only waits.
        """
        for runner in list(self._runners):
            await runner.ended.wait()
