"""``Child``: a running process, its exit status and the exit policy of its block."""

from __future__ import annotations

import atexit
import logging
import os
import signal as _signal
import sys
import threading
import time
import warnings
import weakref
from typing import TYPE_CHECKING

import anyio
from anyio.abc import Process
from anyio.lowlevel import checkpoint

from ._os.groups import group_has_members, signal_group
from ._os.session import Session
from ._os.signals import SIGKILL as _SIGKILL
from ._os.tree import Descendants
from ._status import ExitStatus, Output
from ._streams import communicate

if TYPE_CHECKING:
    import re
    from collections.abc import Sequence
    from typing import AnyStr

    from ._os.waiters import ExitWaiter
    from ._pty import PtyStream
    from ._streams import PipeReceiveStream, PipeSendStream

__all__ = ["Child", "shut_down_all", "user_stacklevel"]

logger = logging.getLogger("anyio_proc")

# Polling a group whose members are not our children (there is no event for that): start
# fast, since members usually die with the leader, and back off to a light load.
_GROUP_POLL_FIRST = 0.001
_GROUP_POLL_MAX = 0.05
# A SIGKILLed process can only linger in uninterruptible sleep; do not hang on that forever.
_GROUP_KILL_GRACE = 5.0


# kill_on_drop children still running when the interpreter exits: their Child objects may
# never be collected, so they are killed (and reaped) by an exit hook instead.
_kill_at_exit: weakref.WeakSet[Child] = weakref.WeakSet()
# Bound now: __del__ may run so late in interpreter shutdown that module lookups fail.
_is_finalizing = sys.is_finalizing


@atexit.register
def _kill_remaining() -> None:
    me = os.getpid()
    for child in list(_kill_at_exit):
        # A forked copy of the program inherits the set: its parent's children are not its
        # own to kill, but the ones it spawned itself (a forked worker's) are.
        if child._owner_pid == me:
            child._kill_now_and_reap()


#: This package's folder: frames under it are skipped when a warning names the user's line.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside anyio_proc."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def _signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return str(sig)


class Child(Process):
    """A child process started by :func:`spawn`.

    It implements :class:`anyio.abc.Process`. Leaving ``async with spawn(...)`` (or
    ``async with child``, or ``await child.aclose()``) applies the exit policy: close stdin,
    signal the child if it still runs, wait the grace period, SIGKILL, reap, close pipes.
    """

    def __init__(
        self,
        *,
        waiter: ExitWaiter,
        args: tuple[str, ...],
        stdin: PipeSendStream | None,
        stdout: PipeReceiveStream | None,
        stderr: PipeReceiveStream | None,
        pty: PtyStream | None = None,
        shutdown_signal: int,
        shutdown_timeout: float,
        kill_on_drop: bool,
        leads_group: bool,
        leads_session: bool = False,
        wait_policy: bool = False,
        kill_tree: bool = False,
    ) -> None:
        self._waiter: ExitWaiter | None = waiter
        self._pid = waiter.pid
        self._args = args
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._pty = pty
        self._shutdown_signal = shutdown_signal
        self._shutdown_timeout = shutdown_timeout
        self._kill_on_drop = kill_on_drop
        self._leads_group = leads_group
        # The open_process() policy: on close, wait for a natural exit; kill only when that
        # wait is interrupted (anyio's semantics). Its callers expect an immediate reap.
        self._wait_policy = wait_policy
        # A group leader's zombie pins its pgid: until it is reaped the number cannot be
        # reused, so signalling the group cannot hit strangers.
        self._keep_zombie = leads_group and not wait_policy
        # A session leader (on a pseudo-terminal, or new_session): jobs of a shell with job
        # control sit in other groups of its session. Its zombie pins the session id too.
        self._session = Session(self._pid) if leads_session and self._keep_zombie else None
        # Command.kill_tree: the descendants found (and held) by the walks of _deliver().
        self._tree = Descendants(self._pid) if kill_tree else None
        self._status: ExitStatus | None = None
        self._reaped = False
        self._killed = False
        self._waiting = 0
        # The exit policy has started (or the child was disposed of without one).
        self._closed = False
        # Set once the policy has finished: a second aclose() waits for it.
        self._close_done: anyio.Event | None = None
        self._escalated = False
        self._started = time.monotonic()
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()
        if kill_on_drop:
            _kill_at_exit.add(self)

    # -- anyio.abc.Process -------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def args(self) -> tuple[str, ...]:
        """The program and arguments, as strings."""
        return self._args

    @property
    def stdin(self) -> PipeSendStream | None:
        return self._stdin

    @property
    def stdout(self) -> PipeReceiveStream | None:
        return self._stdout

    @property
    def stderr(self) -> PipeReceiveStream | None:
        return self._stderr

    def take_stdout(self) -> PipeReceiveStream:
        """Take the stdout pipe over: from now on it is yours to read and to close.

        The exit policy closes the pipes it owns once the child is reaped, dropping whatever
        the child wrote last and nobody had read yet (a server's goodbye). A stream taken
        over stays open through the policy, so a reader can go on to end-of-file after the
        block; close it (``async with`` or ``aclose()``) when done. Afterwards
        :attr:`stdout` is ``None``.

        Raises :exc:`RuntimeError` if stdout is not piped or was already taken.
        """
        stream, self._stdout = self._take(self._stdout, "stdout"), None
        return stream

    def take_stderr(self) -> PipeReceiveStream:
        """Take the stderr pipe over, as :meth:`take_stdout` does stdout."""
        stream, self._stderr = self._take(self._stderr, "stderr"), None
        return stream

    def _take(self, stream: PipeReceiveStream | None, which: str) -> PipeReceiveStream:
        if stream is None:
            raise RuntimeError(f"{which} is not piped, or was taken already")
        return stream

    @property
    def returncode(self) -> int | None:
        """``None`` while running, else as ``subprocess``: negative for a signal.

        Reading it polls the process, like :meth:`try_wait`. A plain ``int``, as code written
        for ``subprocess`` and anyio formats it; :meth:`wait` gives the :class:`ExitStatus`.
        """
        status = self.try_wait()
        return None if status is None else int(status)

    # -- waiting -----------------------------------------------------------------------

    def try_wait(self) -> ExitStatus | None:
        """The exit status if the child has exited (and reap it), else ``None``.

        Never blocks. Once known, the status is cached and no further system call is made.
        """
        status = self._status
        if status is not None:
            return status
        # Another thread may poll too (returncode read from a worker thread): without the
        # lock, the loser of the reap would take the winner's reap for a foreign one, or
        # find the pidfd already closed.
        with self._lock:
            if self._status is not None:
                return self._status
            waiter = self._waiter
            if waiter is None:  # pragma: no cover - released only after a status is known
                return None
            reap = not self._keep_zombie
            try:
                returncode = waiter.poll(reap=reap)
            except ChildProcessError:
                # Someone else reaped it (SIGCHLD set to SIG_IGN, a foreign waitpid(-1)).
                self._record(ExitStatus.unknown(args=self._args), reaped=True)
            else:
                if returncode is None:
                    return None
                self._record(ExitStatus(returncode, args=self._args), reaped=reap)
            return self._status

    def _record(self, status: ExitStatus, *, reaped: bool) -> None:
        self._status = status
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "pid %d exited: %s after %.3f s",
                self._pid,
                status,
                time.monotonic() - self._started,
            )
        if reaped:
            self._set_reaped()

    def _set_reaped(self) -> None:
        self._reaped = True
        if self._waiting == 0:
            self._release_waiter()

    def _release_waiter(self) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.close()

    def _reap_zombie(self) -> None:
        """Reap a zombie kept to pin the group number, once the group is dealt with."""
        with self._lock:
            waiter = self._waiter
            if self._reaped or waiter is None:
                return
            try:
                waiter.poll(reap=True)
            except ChildProcessError:
                pass
            self._set_reaped()

    async def wait(self, *, close_stdin: bool = True) -> ExitStatus:
        """Close our end of stdin, wait for the child to exit, reap it; return its status.

        The child sees end-of-file on stdin first, so a child that reads stdin to the end
        cannot deadlock the wait; a later ``stdin.send()`` raises
        :class:`anyio.BrokenResourceError`. With ``close_stdin=False`` stdin is left open,
        for a watcher task that waits while another task still talks to the child. It does
        not wait for stdout/stderr to reach end-of-file: a grandchild may hold them open.

        **Cancellation:** safe. Cancelling does nothing to the process; ``wait()`` can be
        called again, and from several tasks at once.
        """
        stdin = self._stdin
        if close_stdin and stdin is not None and not stdin.closed:
            stdin._close(broken=True)
        status = self.try_wait()
        if status is None:
            status = await self._wait_exited(polled=True)
        else:
            await checkpoint()
        return status

    async def _wait_exited(self, *, polled: bool = False) -> ExitStatus:
        """Wait for exit without touching stdin; not a checkpoint if it has exited.

        ``polled``: the caller has just seen ``try_wait()`` return ``None``, so the first
        look (a system call) is skipped.
        """
        self._waiting += 1
        try:
            status = None if polled else self.try_wait()
            while status is None:
                waiter = self._waiter
                assert waiter is not None
                await waiter.wait()
                status = self.try_wait()
            return status
        finally:
            self._waiting -= 1
            if self._reaped and self._waiting == 0:
                self._release_waiter()

    async def wait_with_output(self, input: bytes | None = None) -> Output:
        """Feed ``input`` to stdin, read stdout and stderr to end-of-file, wait.

        Both pipes are drained concurrently, so a child filling one while we read the other
        cannot deadlock. stdin is closed once ``input`` is written (at once when it is
        ``None``); a child that exits without reading all of it is not an error. Streams
        that are not piped give ``b""``.

        **Cancellation:** the child is left running (the enclosing block's exit policy
        stops it); the output read so far is lost.
        """
        stdin = self._stdin
        if input is not None and stdin is None:
            raise ValueError("input was given but the child's stdin is not piped")
        out, err = await communicate(stdin, self._stdout, self._stderr, input)
        return Output(await self.wait(), out, err)

    # -- pseudo-terminal ---------------------------------------------------------------

    @property
    def pty(self) -> PtyStream | None:
        """Our side of the child's pseudo-terminal (:meth:`Command.pty`), else ``None``.

        One bidirectional byte stream: ``send`` types at the terminal, ``receive`` reads
        what the program wrote there; see :class:`PtyStream`.
        """
        return self._pty

    def _terminal(self) -> PtyStream:
        if self._pty is None:
            raise RuntimeError(f"{self!r} has no pseudo-terminal; start it with Command.pty()")
        return self._pty

    def resize(self, rows: int, cols: int) -> None:
        """Set the size of the child's terminal; its foreground programs get SIGWINCH."""
        self._terminal().resize(rows, cols)

    async def expect(
        self,
        pattern: AnyStr | re.Pattern[AnyStr],
        *,
        timeout: float | None = None,
        encoding: str = "utf-8",
    ) -> re.Match[AnyStr]:
        """Wait until the terminal output matches ``pattern``; see :meth:`PtyStream.expect`."""
        return await self._terminal().expect(pattern, timeout=timeout, encoding=encoding)

    # -- signals -----------------------------------------------------------------------

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the child now; does nothing once it has exited.

        A reaped child's pid may already belong to another process, so it is never
        signalled (on Linux the signal goes through a pidfd, which cannot be misdirected).
        """
        self._signal_child(int(signal))

    def terminate(self) -> None:
        """Send SIGTERM (``TerminateProcess`` on Windows)."""
        self._signal_child(int(getattr(_signal, "SIGTERM", 15)))

    def kill(self) -> None:
        """Send SIGKILL; to the whole process group when the child leads one, and to every
        descendant with :meth:`Command.kill_tree`."""
        self._killed = True
        self._deliver(_SIGKILL)

    def _signal_child(self, sig: int) -> None:
        if self._status is not None or self._reaped or not self._ours():
            return
        with self._lock:
            waiter = self._waiter
            if waiter is None:  # pragma: no cover
                return
            try:
                waiter.send_signal(sig)
            except ProcessLookupError:
                return  # it exited (or was reaped elsewhere) since we last looked
        logger.debug("sent %s to pid %d", _signal_name(sig), self._pid)

    def _group_signallable(self) -> bool:
        """True while the group number is still pinned by our unreaped leader."""
        if not self._leads_group or self._reaped:
            return False
        # A foreign reaper (a SIGCHLD handler calling waitpid(-1)) may have taken the
        # leader, freeing the group number for reuse: look again (without reaping, so an
        # unobserved exit still leaves the group pinned) before trusting it.
        if self._waiter is not None:
            try:
                self._waiter.poll(reap=False)
            except ChildProcessError:
                if self._status is None:
                    self._record(ExitStatus.unknown(args=self._args), reaped=True)
                else:
                    self._set_reaped()
        return not self._reaped

    def _signal_group(self, sig: int) -> None:
        try:
            signal_group(self._pid, sig)
        except ProcessLookupError:
            return
        logger.debug("sent %s to process group %d", _signal_name(sig), self._pid)

    # -- the exit policy ---------------------------------------------------------------

    @property
    def escalated(self) -> bool:
        """True once the exit policy had to send SIGKILL: to the child, to a member of its
        process group or to a descendant (with :meth:`Command.kill_tree`) that outlived the
        grace period, or to everything because the policy itself was interrupted."""
        return self._escalated

    async def aclose(self) -> None:
        """Apply the exit policy and release everything.

        Close stdin; if the child (or, when it leads a process group, anything left in the
        group) still runs, send the shutdown signal, wait up to the shutdown timeout, then
        SIGKILL; reap; close stdout and stderr. A :class:`RuntimeWarning` reports an
        escalation to SIGKILL (see also :attr:`escalated`). When several tasks call it, each
        returns once the child is stopped and reaped; calling it again after that does
        nothing.

        A child from :func:`open_process` follows anyio's policy instead: close the pipes
        and wait for the child to exit by itself; only if that wait is cancelled (or
        otherwise interrupted) is it killed and reaped before the exception propagates.

        **Cancellation:** shielded from anyio cancellation: it completes, within the timeout
        plus the time SIGKILL takes, and the cancellation propagates afterwards. Anything that
        gets through the shield anyway (``KeyboardInterrupt``, ``SystemExit`` from a signal
        handler, a native ``asyncio`` ``Task.cancel()``) cuts the grace period short: the
        child, its group and its tree are killed with SIGKILL and the child is reaped, with
        the event loop blocked for that moment, before the exception propagates.
        """
        escalated = await self._apply_policy()
        if escalated:
            self._warn_escalated(self, user_stacklevel())

    def _warn_escalated(self, what: object, stacklevel: int) -> None:
        warnings.warn(
            f"{what!r} was still running {self._shutdown_timeout:g} s after "
            f"{_signal_name(self._shutdown_signal)}, so it was killed with SIGKILL; make it "
            "exit on that signal, or give it longer with Command.shutdown(timeout=...)",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )

    async def _apply_policy(self) -> bool:
        """The exit policy, once whoever calls it; True if it escalated to SIGKILL.

        The one place where an exception escaping the policy is handled: whatever it is,
        everything is killed and the child reaped before it propagates.
        """
        if not self._closed and self._reaped and self._tree is None and not self._leads_group:
            # Nothing is left to stop (the usual end of a block after wait()); what the
            # shielded shutdown below would do comes down to closing our pipes.
            self._closed = True
            self._close_streams()
            return False
        done: anyio.Event | None = None
        # Everything inside the try: trio raises KeyboardInterrupt at any bytecode of code
        # that is not protected, the claim included.
        try:
            done = self._claim_policy()
            if done is None:
                await self._wait_for_policy()
                return False
            if self._wait_policy:
                await self._close_and_wait()
                return False
            with anyio.CancelScope(shield=True):
                deadline = self._begin_shutdown()
                if deadline is not None:
                    self._escalated = await self._finish_shutdown(deadline)
            return self._escalated
        except BaseException:
            self._kill_and_reap_now()
            if done is None:
                self._close_streams()
            raise
        finally:
            if done is not None:
                self._release_policy(done)

    def _claim_policy(self) -> anyio.Event | None:
        """Make the caller the one who applies the policy: the event to set when it is done,
        or None when another caller has it (or had it)."""
        if self._closed or self._close_done is not None:
            return None
        self._closed = True
        done = self._close_done = anyio.Event()
        return done

    def _release_policy(self, done: anyio.Event) -> None:
        self._close_streams()
        if self._tree is not None:
            self._tree.close()
        done.set()

    async def _wait_for_policy(self) -> None:
        """aclose() by a second caller: return once the first has stopped the child."""
        done = self._close_done
        if done is not None and not done.is_set():
            await self._wait_for_other_closer(done)
        else:
            await checkpoint()

    async def _wait_for_other_closer(self, done: anyio.Event) -> None:
        """Another task is applying the policy: aclose() promises the child is gone when it
        returns, so wait for that task to finish."""
        if not self._wait_policy:
            with anyio.CancelScope(shield=True):
                await done.wait()
            return
        # anyio's policy waits for a natural exit, which may never come: an interrupted
        # wait kills, here as in the first closer, which then sees the death and reaps.
        try:
            await done.wait()
        except BaseException:
            self._deliver(_SIGKILL)
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise

    def _close_streams(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr, self._pty):
            if stream is not None:
                stream._close()

    async def _close_and_wait(self) -> None:
        """The open_process() exit policy: close the pipes, wait; kill if interrupted."""
        self._close_streams()
        try:
            await self._wait_exited()
            await checkpoint()
        except BaseException:
            # anyio's order: kill, then wait for the death without blocking the loop; an
            # interrupt of that wait is left to _apply_policy's blocking last resort.
            with anyio.CancelScope(shield=True):
                self._deliver(_SIGKILL)
                await self._wait_exited()
            raise

    def _kill_and_reap_now(self) -> None:
        """Last resort when the policy is interrupted: SIGKILL everything, reap the child.

        Blocking, but briefly: SIGKILL cannot be caught, so the wait is the time the kernel
        takes to tear the child down. Members of its group and its tree are not ours to reap;
        they die of the signal and are reaped by their own parents (or init). A second
        interrupt meanwhile (Ctrl-C pressed twice) does not stop the job half done: the
        first is already on its way out, and the steps are safe to repeat.
        """
        if self._reaped:
            return
        self._escalated = True
        deadline = time.monotonic() + _GROUP_KILL_GRACE
        while True:
            try:
                self._deliver(_SIGKILL)
                self._reap_blocking()
                return
            except Exception:
                raise
            except BaseException:
                # Raised by a signal handler; give up only on a child that will not die.
                if time.monotonic() >= deadline:
                    raise

    def _reap_blocking(self) -> None:
        """Reap the child, which has been sent SIGKILL, blocking until it is gone."""
        waiter = self._waiter
        if self._reaped or waiter is None:
            return
        try:
            waiter.poll(reap=False)  # the waiter knows whether the pid is still ours
            _, raw = os.waitpid(self._pid, 0)
        except ChildProcessError:
            raw = None
        if self._status is None:
            status = (
                ExitStatus.unknown(args=self._args)
                if raw is None
                else ExitStatus(os.waitstatus_to_exitcode(raw), args=self._args)
            )
            self._record(status, reaped=True)
        else:
            self._set_reaped()

    def _begin_shutdown(self) -> float | None:
        """Close stdin and send the shutdown signal; return the end of the grace period,
        or None when nothing is left running (the child is then reaped)."""
        if self._stdin is not None:
            self._stdin._close()
        if not self._still_running():
            self._reap_zombie()
            return None
        self._deliver(self._shutdown_signal)
        return anyio.current_time() + self._shutdown_timeout

    async def _finish_shutdown(self, deadline: float) -> bool:
        """Wait until ``deadline`` for everything to be gone, then SIGKILL what is left;
        reap. True if SIGKILL was needed."""
        with anyio.CancelScope(deadline=deadline) as scope:
            await self._wait_all_gone()
        escalated = scope.cancelled_caught
        if escalated:
            self._deliver(_SIGKILL)
            with anyio.move_on_after(_GROUP_KILL_GRACE):
                await self._wait_all_gone()
        elif self._leads_group and group_has_members(self._pid, self._pid) is None:
            # Members cannot be listed here: the shutdown signal was their chance.
            self._signal_group(_SIGKILL)
        await self._wait_exited()  # the direct child, at least, always dies of SIGKILL
        self._reap_zombie()
        return escalated

    def _still_running(self) -> bool:
        if self.try_wait() is None:
            return True
        if self._tree is not None and self._tree.any_alive():
            return True
        if not self._group_signallable():
            return False
        # None means /proc could not be listed (fd exhaustion): members may be there, so
        # they get the signal and the grace period rather than being assumed gone.
        if group_has_members(self._pid, self._pid) is not False:
            return True
        return self._session is not None and self._session.alive() is not False

    def _ours(self) -> bool:
        """False in a forked copy of the program: an inherited pidfd still names the
        parent's child, and the copy must never signal it."""
        return os.getpid() == self._owner_pid

    def _deliver(self, sig: int) -> None:
        if not self._ours():
            return
        tree = self._tree
        if tree is None:
            self._deliver_direct(sig)
            return
        # Walk the tree before anything dies (a dead process's children are re-parented
        # out of reach), frozen so nothing forks meanwhile; _tree.py says why.
        try:
            tree.freeze(self._signal_root)
            self._deliver_direct(sig)
            tree.signal(sig)
        finally:
            tree.thaw(self._signal_root)

    def _deliver_direct(self, sig: int) -> None:
        if self._group_signallable():
            self._signal_group(sig)
            if self._session is not None:
                self._session.signal(sig)  # the rest of the session: other groups (jobs)
        else:
            self._signal_child(sig)

    def _signal_root(self, sig: int) -> bool:
        """Signal the child for the tree walk; True if delivered, so its pid is its own."""
        waiter = self._waiter
        if self._status is not None or self._reaped or waiter is None:
            return False
        try:
            waiter.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    async def _wait_all_gone(self) -> None:
        await self._wait_exited()
        if self._group_signallable():
            delay = _GROUP_POLL_FIRST
            while group_has_members(self._pid, self._pid):
                await anyio.sleep(delay)
                delay = min(delay * 2, _GROUP_POLL_MAX)
            if self._session is not None:
                await self._session.wait_gone()
        if self._tree is not None:
            await self._tree.wait_gone()

    async def __aenter__(self) -> Child:
        return self

    # -- state -------------------------------------------------------------------------

    def __repr__(self) -> str:
        status = self._status
        state = "running" if status is None else f"exited ({status})"
        return f"<Child pid={self._pid} {state} {list(self._args)!r}>"

    def _kill_now_and_reap(self) -> None:
        """At interpreter exit: SIGKILL a kill_on_drop child still running, and reap it."""
        waiter, self._waiter = self._waiter, None
        if waiter is None or self._reaped:
            return
        try:
            if waiter.poll(reap=True) is None:
                waiter.send_signal(_SIGKILL)
                os.waitpid(self._pid, 0)  # blocking is fine: we are exiting, it is dying
        except (ChildProcessError, ProcessLookupError):
            pass
        self._reaped = True
        waiter.close()

    def __del__(self) -> None:
        tree = getattr(self, "_tree", None)
        if tree is not None:
            tree.close()  # only our pidfds: descendants are left to kill_on_drop's rules
        waiter = getattr(self, "_waiter", None)
        if waiter is None:
            return
        self._waiter = None
        if getattr(self, "_owner_pid", None) != os.getpid():
            # Collected in a forked copy of the program: the process is not our child, and
            # the copy must neither kill nor reap it. Or __init__ was interrupted (Ctrl-C):
            # start_child has killed and reaped it. Just drop our descriptors.
            waiter.close()
            return
        try:
            running = self._reaped is False and waiter.poll(reap=True) is None
        except ChildProcessError:
            running = False
        if not running:
            waiter.close()
            return
        if self._kill_on_drop and not self._killed:
            try:
                waiter.send_signal(_SIGKILL)
            except ProcessLookupError:
                pass
        waiter.abandon()
        # Last: under -W error the warning raises, and the child must be handled by then.
        try:
            warnings.warn(
                f"{self!r} was garbage-collected while running; use 'async with spawn(...)' "
                "or 'await child.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
        except Exception:
            if not _is_finalizing():
                raise
            # At interpreter shutdown a warning filter or formatter may need a module that
            # is already torn down; a traceback there would only be noise.


async def shut_down_all(children: Sequence[Child]) -> list[Child]:
    """The exit policy of several children at once (a pipeline's stages), in this task.

    Each is signalled first, then each is waited for until its own grace period ends, so
    the whole takes the longest timeout, not their sum. It runs in the caller's task, not in
    a task group, so an interrupt reaches it directly: then every child is SIGKILLed and
    reaped before the exception propagates. Returns the children it had to SIGKILL.

    **Cancellation:** shielded, as :meth:`Child.aclose`.
    """
    claimed = [(child, done) for child in children if (done := child._claim_policy()) is not None]
    escalated: list[Child] = []
    try:
        with anyio.CancelScope(shield=True):
            deadlines = [(child, child._begin_shutdown()) for child, _ in claimed]
            for child, deadline in deadlines:
                if deadline is not None:
                    child._escalated = await child._finish_shutdown(deadline)
                    if child._escalated:
                        escalated.append(child)
            ours = {id(child) for child, _ in claimed}
            for child in children:
                if id(child) not in ours:
                    await child._wait_for_policy()  # another task is closing it
    except BaseException:
        for child in children:
            child._kill_and_reap_now()
        raise
    finally:
        for child, done in claimed:
            child._release_policy(done)
    return escalated
