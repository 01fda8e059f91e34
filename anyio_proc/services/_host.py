"""What a Supervisor shares with each of its services: settings, state, where to report.

The Supervisor makes one :class:`ServiceHost` and hands it to every service it starts; the
services read the settings and whether the supervisor is closing, and report their output,
their events and their failures through it. Neither side touches the other's internals.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from ._events import OutputLine, ServiceEvent

__all__ = ["ServiceHost"]


class ServiceHost:
    """The supervisor's side, as its services see it."""

    def __init__(
        self,
        *,
        on_output: Callable[[OutputLine], object] | None,
        on_event: Callable[[ServiceEvent], object] | None,
        drain_timeout: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
        rng: random.Random,
    ) -> None:
        self.on_output = on_output
        self.on_event = on_event
        #: How long output is still read once a process has ended.
        self.drain_timeout = drain_timeout
        #: What the restart logic uses for the window, the backoff delay and the jitter.
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        #: True once the supervisor's block is being left: nothing is restarted any more.
        self.closing = False
        #: The error to raise out of the block (see :meth:`fail`).
        self.failure: BaseException | None = None
        #: The scope of the supervisor's task group, cancelled by :meth:`fail`.
        self.cancel_scope: anyio.CancelScope | None = None

    @property
    def captures_output(self) -> bool:
        """True if every service's stdout and stderr are read (``on_output`` was given)."""
        return self.on_output is not None

    def output(self, record: OutputLine) -> None:
        try:
            if self.on_output is None:
                out = sys.stdout if record.stream == "stdout" else sys.stderr
                print(record.line, file=out, flush=True)
            else:
                self.on_output(record)
        except BaseException as exc:
            # Our own copy to stdout fails like a callback (a closed stdout, a full disk):
            # raised from the reading task, it would come out wrapped in task groups.
            self.fail(exc)

    def event(self, event: ServiceEvent) -> None:
        """Report ``event``; never raises (what the callback raises goes to :meth:`fail`)."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except BaseException as exc:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Stop everything and raise ``exc`` out of the block (the first such error wins,
        except that a ``SystemExit``, ``KeyboardInterrupt``... outranks an ``Exception``).

        Whatever a callback raises comes here rather than up through the code that called
        it, BaseExceptions included (``sys.exit()`` in a callback, a Ctrl-C landing in one
        on trio): raised there, it would leave that service's process to nobody, or leave
        the ordered shutdown half done with the other services' tasks waiting for it.
        """
        if self.failure is None or (
            isinstance(self.failure, Exception)
            and not isinstance(exc, (Exception, anyio.get_cancelled_exc_class()))
        ):
            # A request to end the program is not dropped for an earlier error (which the
            # service that failed keeps in its .failure); an error is not dropped for a
            # cancellation, though, should a callback raise one.
            self.failure = exc
        assert self.cancel_scope is not None
        self.cancel_scope.cancel()
