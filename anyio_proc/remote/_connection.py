"""One master ``ssh`` connection to a host, with its agent.

The master runs the agent (``_scripts.AGENT``) as its own session, so one process gives
the multiplexing socket, the agent's orders (its stdin, a pipe only this program holds)
and the reports (its stdout). When this program ends in any way, even by SIGKILL, the
kernel closes that pipe: the agent reads end-of-file and stops every group this
connection started. The commands' own sessions (``session_argv``) go over the master.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from contextlib import suppress
from typing import TYPE_CHECKING

import anyio

from .. import Command, spawn
from .._os.pipes import set_blocking
from ._errors import ConnectionLost, SSHError, classify
from ._scripts import agent_command
from ._session import Session

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .. import Child
    from ._target import Target

__all__ = ["Connection"]

logger = logging.getLogger("anyio_proc")

#: How long the master may take to exit once the agent has done its cleanup.
_MASTER_EXIT_MARGIN = 5.0


class Connection:
    """A master connection: up to ``capacity`` command sessions at once."""

    def __init__(self, target: Target, workdir: str, index: int, capacity: int) -> None:
        self.target = target
        self.index = index
        self.capacity = capacity
        #: Sessions holding a slot (from the spawn until their ssh has exited).
        self.active = 0
        self.control_path = os.path.join(workdir, f"c{index}")
        self._workdir = workdir
        self.ready = anyio.Event()
        self.error: BaseException | None = None
        self.lost = False
        self.remote_dir = ""
        self._sessions: dict[int, Session] = {}
        self._tokens = itertools.count(1)
        self._master: Child | None = None
        self._orders = -1  # our end of the agent's stdin
        self._pending = bytearray()  # orders the pipe could not take at once
        self._flushing = False
        self._start_service: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        self._longest_grace = 0.0

    @property
    def host(self) -> str:
        return self.target.destination

    def log_path(self, name: str) -> str:
        return os.path.join(self._workdir, f"{name}.log")

    def ssh_said(self, name: str) -> str:
        """What ssh logged (``-E``) for the process called ``name``."""
        try:
            with open(self.log_path(name), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- opening -------------------------------------------------------------------------

    async def open(self, start_service: Callable[[Callable[[], Awaitable[None]]], None]) -> None:
        """Start the master and its agent; raise :class:`SSHError` if they do not start.

        ``start_service`` runs the connection's background tasks (the reader, the order
        flusher): the host runs them shielded from the cancellations of the code around it.

        **Cancellation:** the master is stopped and reaped before the cancellation
        propagates.
        """
        self._start_service = start_service
        name = f"master{self.index}"
        argv = self.target.master_argv(self.log_path(name), self.control_path, agent_command())
        read_end, self._orders = os.pipe()
        try:
            # The agent's own stderr (ssh's goes to its -E log): a file, nobody must read it.
            stderr = os.open(
                os.path.join(self._workdir, f"{name}.stderr"), os.O_WRONLY | os.O_CREAT, 0o600
            )
            try:
                # stdin is the pipe only we hold: when we are gone, the agent sees its end.
                cmd = Command(*argv).stdin(read_end).stdout_piped().stderr(stderr)
                self._master = await spawn(cmd.kill_on_drop().shutdown(timeout=2.0))
            finally:
                os.close(stderr)
        except BaseException:
            os.close(self._orders)
            self._orders = -1
            raise
        finally:
            os.close(read_end)
        set_blocking(self._orders, False)
        master = self._master
        assert master.stdout is not None
        lines = master.stdout.lines(errors="replace")
        first: str | None = None
        try:
            with anyio.move_on_after(self.target.connect_timeout):
                first = await lines.__anext__()
        except StopAsyncIteration:
            pass
        except BaseException:
            await self._abort()
            raise
        if first is None or not first.startswith("ready "):
            await self._abort()
            status = master.try_wait()
            detail = self.ssh_said(name)
            if status is None and not detail:
                detail = f"no answer within {self.target.connect_timeout:g} s"
            error = classify(self.host, detail, None if status is None else int(status))
            if first is not None:
                error = SSHError(self.host, f"unexpected answer {first!r}", detail)
            raise error
        self.remote_dir = first[len("ready ") :]
        logger.debug("connected to %s (master pid %d)", self.host, master.pid)
        start_service(lambda: self._read_reports(lines))
        self.ready.set()

    async def _abort(self) -> None:
        """Undo a master that did not come up: close its orders, stop it, reap it."""
        self.lost = True
        self._close_orders()
        if self._master is not None:
            await self._master.aclose()

    # -- reports -------------------------------------------------------------------------

    async def _read_reports(self, lines: AsyncIterator[str]) -> None:
        try:
            async for line in lines:
                self._dispatch(line)
        except anyio.ClosedResourceError:
            pass  # closed by close(), after the master ended
        finally:
            self._mark_lost()

    def _dispatch(self, line: str) -> None:
        op, *fields = line.split()
        if not fields or not fields[0].isdigit():
            return
        session = self._sessions.get(int(fields[0]))
        if session is None:
            return
        if op == "p" and len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            session.on_started(int(fields[1]), int(fields[2]))
        elif op == "e" and len(fields) in (2, 3):
            group = fields[2] if len(fields) == 3 else ""
            session.on_failed(fields[1], int(group) if group.isdigit() else None)
        elif op == "x" and len(fields) == 3:
            session.on_exited(fields[1], fields[2])
        elif op == "g":
            session.group_gone.set()
        elif op == "y":
            session.synced.set()

    def _mark_lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        logger.debug("connection %d to %s is gone", self.index, self.host)
        for session in self._sessions.values():
            session.on_lost()

    # -- sessions ------------------------------------------------------------------------

    def new_session(self, args: tuple[str, ...], timeout: float) -> Session:
        if self.lost:
            raise ConnectionLost(self.host, "the connection was lost")
        session = Session(next(self._tokens), args, timeout)
        self._sessions[session.token] = session
        self._longest_grace = max(self._longest_grace, timeout)
        return session

    async def barrier(self) -> None:
        """Return once the agent has answered an order sent now: what the master sent the
        server before (the close of a session that just ended) has been processed there.

        **Cancellation:** safe; nothing is left waiting.
        """
        session = self.new_session((), 0.0)
        try:
            if self.post(f"y {session.token}"):
                await session.synced.wait()
        finally:
            self._sessions.pop(session.token, None)

    def session_log(self, session: Session) -> str:
        """The name of the ``-E`` log of ``session``'s ssh (see :meth:`ssh_said`)."""
        return f"s{self.index}.{session.token}"

    def forget(self, session: Session) -> None:
        """The session is over: its group, if any, is no longer the agent's to stop, and
        what its ssh logged has been read if it was needed."""
        if self._sessions.pop(session.token, None) is not None and session.group is not None:
            self.post(f"r {session.group}")
        with suppress(OSError):
            os.unlink(self.log_path(self.session_log(session)))

    async def watch(self, session: Session, local: Child) -> None:
        """Wait for the local ssh of ``session`` to end, then settle what was not reported.

        The barrier (``y``) goes through the same FIFO as the wrapper's reports, so once
        it is back, a report the wrapper wrote before its session ended is in.
        """
        try:
            status = await local.wait(close_stdin=False)
            # Reports may still be on their way (even the start, for a quick command).
            if not session.reported.is_set() and self.post(f"y {session.token}"):
                await session.synced.wait()
            session.settle(int(status))
        finally:
            self.active -= 1

    # -- orders to the agent -----------------------------------------------------------

    def post(self, order: str) -> bool:
        """Send one order to the agent without blocking; False if the agent is gone."""
        if self.lost or self._orders < 0:
            return False
        data = order.encode() + b"\n"
        if self._pending:
            self._pending += data
            return True
        try:
            written = os.write(self._orders, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise
            self._mark_lost()
            return False
        if written < len(data):
            self._pending += data[written:]
            if not self._flushing and self._start_service is not None:
                self._flushing = True
                self._start_service(self._flush)
        return True

    async def _flush(self) -> None:
        try:
            while self._pending and self._orders >= 0:
                try:
                    await anyio.wait_writable(self._orders)
                except anyio.ClosedResourceError:
                    return  # close() ended the orders: the agent stops everything anyway
                try:
                    written = os.write(self._orders, self._pending)
                except BlockingIOError:
                    continue
                except OSError:
                    self._mark_lost()
                    return
                del self._pending[:written]
        finally:
            self._flushing = False

    def _close_orders(self) -> None:
        fd, self._orders = self._orders, -1
        if fd >= 0:
            with suppress(RuntimeError):
                anyio.notify_closing(fd)
            os.close(fd)

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """End the agent's orders (it stops whatever is left), wait for the master to
        exit, reap it.

        **Cancellation:** shielded; bounded by the longest grace period of the commands
        started here, plus a margin.
        """
        with anyio.CancelScope(shield=True):
            self._close_orders()
            master = self._master
            if master is None:
                return
            with anyio.move_on_after(self._longest_grace + _MASTER_EXIT_MARGIN):
                await master.wait()
            await master.aclose()
            self._mark_lost()
