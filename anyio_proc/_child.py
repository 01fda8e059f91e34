"""``Child``: a running process, its exit status and the exit policy of its block."""

from __future__ import annotations

import atexit
import os
import signal as _signal
import sys
import warnings
import weakref
from typing import TYPE_CHECKING

import anyio
from anyio.abc import Process
from anyio.lowlevel import checkpoint

from ._communicate import communicate
from ._os.session import Session
from ._os.signals import SIGKILL as _SIGKILL
from ._os.tree import Descendants
from ._policies import Shutdown, WaitThenKill
from ._process import ProcessHandle
from ._status import Output, signal_name
from ._streams import close_now

if TYPE_CHECKING:
    import re
    from collections.abc import Sequence
    from typing import AnyStr

    from ._os.waiters import ExitWaiter
    from ._policies import ExitPolicy
    from ._pty import PtyStream
    from ._status import ExitStatus
    from ._streams import PipeReceiveStream, PipeSendStream

__all__ = [
    "Child",
    "discard",
    "kill_and_reap_now",
    "owns_process",
    "shut_down_all",
    "user_stacklevel",
    "wait_exited",
    "warn_escalated",
]

# kill_on_drop children still running when the interpreter exits: their Child objects may
# never be collected, so they are killed (and reaped) by an exit hook instead.
_kill_at_exit: weakref.WeakSet[Child] = weakref.WeakSet()
# Bound now: __del__ may run so late in interpreter shutdown that module lookups fail.
_is_finalizing = sys.is_finalizing


@atexit.register
def _kill_remaining() -> None:
    for child in list(_kill_at_exit):
        # A forked copy of the program inherits the set: its parent's children are not its
        # own to kill, but the ones it spawned itself (a forked worker's) are.
        if child._process.ours():
            child._process.kill_and_reap_now(everything=False)


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


class Child(Process):
    """A child process started by :func:`spawn`.

    It implements :class:`anyio.abc.Process`. Leaving ``async with spawn(...)`` (or
    ``async with child``, or ``await child.aclose()``) applies the exit policy: close stdin,
    signal the child if it still runs, wait the grace period, SIGKILL, reap, close pipes.
    """

    def __init__(
        self,
        *,
        waiter: ExitWaiter | None,
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
        process: ProcessHandle | None = None,
    ) -> None:
        keep_zombie = leads_group and not wait_policy  # see ExitPolicy.keeps_zombie
        # A process that is not a local child (anyio_proc.remote) comes with its own handle,
        # a ProcessHandle subclass; then there is no waiter.
        if process is not None:
            self._process = process
        else:
            assert waiter is not None
            self._process = self._local_process(
                waiter, args, leads_group, keep_zombie, leads_session, kill_tree
            )
        # Chosen once: open_process() wants anyio's policy, everything else ours.
        self._policy: ExitPolicy = (
            WaitThenKill() if wait_policy else Shutdown(shutdown_signal, shutdown_timeout)
        )
        assert self._policy.keeps_zombie == (not wait_policy)
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._pty = pty
        self._kill_on_drop = kill_on_drop
        # Set once the policy has finished: a second aclose() waits for it.
        self._close_done: anyio.Event | None = None
        self._escalated = False
        if kill_on_drop:
            _kill_at_exit.add(self)

    @staticmethod
    def _local_process(
        waiter: ExitWaiter,
        args: tuple[str, ...],
        leads_group: bool,
        keep_zombie: bool,
        leads_session: bool,
        kill_tree: bool,
    ) -> ProcessHandle:
        # First: from here on the waiter is ours to close (start_child checks for it).
        return ProcessHandle(
            waiter,
            args,
            leads_group=leads_group,
            keep_zombie=keep_zombie,
            # A session leader (on a pseudo-terminal, or new_session): the jobs of a shell
            # with job control sit in other groups of its session, pinned by its zombie.
            session=Session(waiter.pid) if leads_session and keep_zombie else None,
            # Command.kill_tree: the descendants found (and held) by the signal walks.
            tree=Descendants(waiter.pid) if kill_tree else None,
        )

    # -- anyio.abc.Process -------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def args(self) -> tuple[str, ...]:
        """The program and arguments, as strings."""
        return self._process.args

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
        return self._process.poll()

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
            close_now(stdin, broken=True)
        status = self._process.poll()
        if status is None:
            status = await self._process.wait_exited(polled=True)
        else:
            await checkpoint()
        return status

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
        """Wait until the terminal output matches ``pattern``; see :meth:`PtyStream.expect`.

        **Cancellation:** safe, as :meth:`PtyStream.expect`; nothing received is lost.
        """
        return await self._terminal().expect(pattern, timeout=timeout, encoding=encoding)

    # -- signals -----------------------------------------------------------------------

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the child now; does nothing once it has exited.

        A reaped child's pid may already belong to another process, so it is never
        signalled (on Linux the signal goes through a pidfd, which cannot be misdirected).
        """
        self._process.send(int(signal), everything=False)

    def terminate(self) -> None:
        """Send SIGTERM (``TerminateProcess`` on Windows)."""
        self._process.send(int(getattr(_signal, "SIGTERM", 15)), everything=False)

    def kill(self) -> None:
        """Send SIGKILL; to the whole process group when the child leads one, and to every
        descendant with :meth:`Command.kill_tree`."""
        self._process.send(_SIGKILL, everything=True)

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
        if await self._apply_policy():
            warn_escalated(self, self, user_stacklevel())

    async def _apply_policy(self) -> bool:
        """The exit policy, once whoever calls it; True if it escalated to SIGKILL.

        The one place where an exception escaping a policy is handled: whatever it is,
        everything is killed and the child reaped before it propagates.
        """
        process = self._process
        # Nothing is left to stop (the usual end of a block after wait()): what the policy
        # would do comes down to closing our pipes.
        nothing_left = process.state.reaped and process.tree is None and not process.leads_group
        if nothing_left and process.state.close_quietly():
            self._close_pipes()
            return False
        done: anyio.Event | None = None
        # Everything inside the try: trio raises KeyboardInterrupt at any bytecode of code
        # that is not protected, the claim included.
        try:
            done = self._claim()
            if done is None:
                await self._await_other_closer()
                return False
            policy = self._policy
            self._escalated = await policy.apply(process, self._close_stdin, self._close_pipes)
            return self._escalated
        except BaseException:
            self._escalated |= not process.state.reaped
            process.kill_and_reap_now()
            if done is None:
                self._close_pipes()
            raise
        finally:
            if done is not None:
                self._release(done)

    def _claim(self) -> anyio.Event | None:
        """The event to set when the policy is done, or None when another caller has it."""
        if not self._process.state.claim():
            return None
        done = self._close_done = anyio.Event()
        return done

    def _release(self, done: anyio.Event) -> None:
        self._close_pipes()
        self._process.close()
        self._process.state.finish()
        done.set()

    async def _await_other_closer(self) -> None:
        """aclose() by a second caller: return once the first has stopped the child."""
        done = self._close_done
        if done is not None and not done.is_set():
            await self._policy.await_other(self._process, done)
        else:
            await checkpoint()

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            close_now(self._stdin)

    def _close_pipes(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr, self._pty):
            if stream is not None:
                close_now(stream)

    async def __aenter__(self) -> Child:
        return self

    # -- state -------------------------------------------------------------------------

    def __repr__(self) -> str:
        status = self._process.status
        state = "running" if status is None else f"exited ({status})"
        return f"<Child pid={self._process.pid} {state} {list(self._process.args)!r}>"

    def __del__(self) -> None:
        process: ProcessHandle | None = getattr(self, "_process", None)
        if process is None:
            return  # __init__ was interrupted: start_child has killed and reaped it
        # The start of __init__ may be all there is of it (an interrupt): kill by default.
        if not process.abandon(kill=getattr(self, "_kill_on_drop", True)):
            return
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


# -- what other modules of the package do with a Child ------------------------------------


def owns_process(child: Child | None) -> bool:
    """True once ``child``'s __init__ has taken its waiter (and closes it when collected)."""
    return getattr(child, "_process", None) is not None


def warn_escalated(child: Child, what: object, stacklevel: int) -> None:
    """Report that ``child``'s policy had to SIGKILL, naming ``what`` (it, or its pipeline)."""
    policy = child._policy
    assert isinstance(policy, Shutdown)
    after = f"{policy.timeout:g} s after {signal_name(policy.signal)}"
    if child._process.others_outlived:
        head = (
            f"{what!r} had exited, but what it started (in its process group, session or "
            f"tree) was still running {after}, so it was killed with SIGKILL; make that "
        )
    else:
        head = f"{what!r} was still running {after}, so it was killed with SIGKILL; make it "
    warnings.warn(
        head + "exit on that signal, or give it longer with Command.shutdown(timeout=...)",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


async def wait_exited(child: Child) -> ExitStatus:
    """Wait for the exit without touching stdin; not a checkpoint if it has exited."""
    return await child._process.wait_exited()


def kill_and_reap_now(child: Child) -> None:
    """The last resort, blocking: SIGKILL everything the child reaches, reap it."""
    child._escalated |= not child._process.state.reaped
    child._process.kill_and_reap_now()


def discard(child: Child) -> None:
    """Undo a child that must not be handed out (a pipeline's stage whose neighbour could
    not start): kill it and all it reaches, reap it, close its pipes; no policy, no warning."""
    child._process.kill_and_reap_now()
    child._process.state.close_quietly()
    child._process.close()
    child._close_pipes()


async def shut_down_all(children: Sequence[Child]) -> list[Child]:
    """The exit policy of several children at once (a pipeline's stages), in this task.

    Each is signalled first, then each is waited for until its own grace period ends, so
    the whole takes the longest timeout, not their sum. It runs in the caller's task, not in
    a task group, so an interrupt reaches it directly: then every child is SIGKILLed and
    reaped before the exception propagates. Returns the children it had to SIGKILL.

    **Cancellation:** shielded, as :meth:`Child.aclose`.
    """
    claimed = [(child, done) for child in children if (done := child._claim()) is not None]
    escalated: list[Child] = []
    try:
        with anyio.CancelScope(shield=True):
            deadlines = [(child, _begin(child)) for child, _ in claimed]
            for child, deadline in deadlines:
                if await _finish(child, deadline):
                    escalated.append(child)
            ours = {id(child) for child, _ in claimed}
            for child in children:
                if id(child) not in ours:
                    await child._await_other_closer()  # another task is closing it
    except BaseException:
        for child in children:
            kill_and_reap_now(child)
        raise
    finally:
        for child, done in claimed:
            child._release(done)
    return escalated


def _begin(child: Child) -> float | None:
    policy = child._policy
    assert isinstance(policy, Shutdown)  # pipelines are built by spawn(), never open_process()
    return policy.begin(child._process, child._close_stdin)


async def _finish(child: Child, deadline: float | None) -> bool:
    policy = child._policy
    assert isinstance(policy, Shutdown)
    child._escalated = await policy.finish(child._process, deadline)
    return child._escalated
