"""The two exit policies: what leaving a child's block does to a child still running.

:class:`Shutdown` is ``spawn()``'s (and ``Command.shutdown()`` tunes it): close stdin,
send the shutdown signal to the child and all it reaches, wait the grace period, SIGKILL
what is left, reap. :class:`WaitThenKill` is anyio's, for ``open_process()``: close the
pipes and wait for a natural exit; kill only if that wait is interrupted.

A policy is chosen when the ``Child`` is made and never changes. It only drives a
:class:`~anyio_proc._process.ProcessHandle`; who runs it, once, and what happens when an
exception escapes it, is ``_child.py``'s business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

from ._os.signals import SIGKILL
from ._pacing import paced

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._process import ProcessHandle

__all__ = ["ExitPolicy", "Shutdown", "WaitThenKill"]


class ExitPolicy(ABC):
    """How a child still running is stopped when its block ends."""

    #: Whether a group leader's zombie is kept until its group is dealt with.
    keeps_zombie: bool

    @abstractmethod
    async def apply(
        self,
        process: ProcessHandle,
        close_stdin: Callable[[], None],
        close_pipes: Callable[[], None],
    ) -> bool:
        """Stop and reap the child; True if it had to be SIGKILLed."""

    @abstractmethod
    async def await_other(self, process: ProcessHandle, done: anyio.Event) -> None:
        """Another task is applying the policy: return once it has (``done`` is set)."""


class Shutdown(ExitPolicy):
    """Shutdown signal, grace period, SIGKILL: shielded from cancellation throughout."""

    keeps_zombie = True

    def __init__(self, signal: int, timeout: float) -> None:
        self.signal = signal
        self.timeout = timeout

    def begin(self, process: ProcessHandle, close_stdin: Callable[[], None]) -> float | None:
        """Close stdin and signal; the end of the grace period, or None when nothing was
        left running (the child is then reaped)."""
        close_stdin()
        if not process.still_running():
            process.reap_zombie()
            return None
        # The rest of the session, if the child leads one, after this turn (apply()).
        process.send(self.signal, everything=True, session=False)
        return anyio.current_time() + self.timeout

    async def _begin_with_tree(
        self, process: ProcessHandle, close_stdin: Callable[[], None]
    ) -> float | None:
        """:meth:`begin`, with the tree's walk waiting for stops with the loop running."""
        close_stdin()
        if not await paced(process.still_running):
            process.reap_zombie()
            return None
        await process.send_everything(self.signal)
        return anyio.current_time() + self.timeout

    async def finish(self, process: ProcessHandle, deadline: float | None) -> bool:
        """Wait out the grace period begun by :meth:`begin`; SIGKILL what is left."""
        if deadline is None:
            return False
        return await process.wait_all_gone_or_kill(deadline)

    async def apply(
        self,
        process: ProcessHandle,
        close_stdin: Callable[[], None],
        close_pipes: Callable[[], None],
    ) -> bool:
        with anyio.CancelScope(shield=True):
            if process.tree is None:
                # In turns: a thousand children whose blocks end at once must not signal
                # all of them in one turn of the event loop.
                deadline = await paced(partial(self.begin, process, close_stdin))
                if deadline is not None:
                    await process.signal_session(self.signal)
            else:
                deadline = await self._begin_with_tree(process, close_stdin)
            escalated = await self.finish(process, deadline)
        # Returned out here: a scope may swallow what it cancels, so a type checker takes a
        # return inside it for a path that can fall through.
        return escalated  # noqa: RET504

    async def await_other(self, process: ProcessHandle, done: anyio.Event) -> None:
        with anyio.CancelScope(shield=True):
            await done.wait()


class WaitThenKill(ExitPolicy):
    """anyio's ``open_process`` policy: close the pipes, wait; kill if interrupted."""

    #: Its callers expect the child reaped as soon as it is seen to exit.
    keeps_zombie = False

    async def apply(
        self,
        process: ProcessHandle,
        close_stdin: Callable[[], None],
        close_pipes: Callable[[], None],
    ) -> bool:
        close_pipes()
        try:
            await process.wait_exited()
            await checkpoint()
        except BaseException:
            # anyio's order: kill, then wait for the death without blocking the loop; an
            # interrupt of that wait is left to the caller's blocking last resort.
            with anyio.CancelScope(shield=True):
                process.send(SIGKILL, everything=True)
                await process.wait_exited()
            raise
        return False

    async def await_other(self, process: ProcessHandle, done: anyio.Event) -> None:
        # The natural exit may never come: an interrupted wait kills, here as in the first
        # closer, which then sees the death and reaps.
        try:
            await done.wait()
        except BaseException:
            process.send(SIGKILL, everything=True)
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
