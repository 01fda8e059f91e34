"""Linux: ``Command.die_with_parent``, the child's SIGKILL when this process dies.

The child asks for it itself, between fork and exec, with ``prctl(PR_SET_PDEATHSIG)``
(:func:`parent_death_pre_exec`); elsewhere :data:`SUPPORTED` is false and the builder
refuses the option (:func:`check_supported`). The setting belongs to the *thread* that
forked the child, not to the process, so a child is forked on a thread that lives at least
as long as it does (:func:`on_long_lived_thread`).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SUPPORTED", "check_supported", "on_long_lived_thread", "parent_death_pre_exec"]

#: Whether ``die_with_parent`` can work here (read at each call: the tests turn it off).
SUPPORTED = sys.platform == "linux"


def check_supported() -> None:
    """Raise :class:`ValueError` (at the builder) where ``die_with_parent`` cannot work."""
    if not SUPPORTED:
        raise ValueError(
            f"die_with_parent() needs Linux (prctl PR_SET_PDEATHSIG), not {sys.platform}"
        )


if sys.platform == "linux":
    import ctypes
    import select
    import signal

    _SIGKILL = int(signal.SIGKILL)
    _PR_SET_PDEATHSIG = 1
    _prctl: Any = None
    _parent_pid = os.getpid  # what the child compares getppid() with (a seam for the tests)

    def parent_death_pre_exec(then: Callable[[], Any] | None = None) -> Callable[[], None]:
        """The pre-exec step of ``die_with_parent``: run ``then`` (the user's pre_exec), then
        ask for SIGKILL on the death of the parent, then make sure the parent is still ours.

        Armed last because the setting is cleared by any change of the effective or
        filesystem uid or gid, which ``then`` might make. ``prctl`` is looked up here, in
        the parent: the child of a threaded program must not ``dlopen``/``dlsym``.
        """
        global _prctl
        if _prctl is None:
            libc = ctypes.CDLL(None, use_errno=True)
            prctl = libc.prctl
            prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
            prctl.restype = ctypes.c_int
            _prctl = prctl
        prctl = _prctl
        parent = _parent_pid()

        def arm() -> None:
            if then is not None:
                then()
            if prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"prctl(PR_SET_PDEATHSIG): {os.strerror(code)}")
            # The parent may have died between fork and prctl; we would then belong to
            # init (or a subreaper) already and the signal would never come: do what it
            # would have done, before running anything.
            if os.getppid() != parent:
                os.kill(os.getpid(), _SIGKILL)

        return arm

    class _Forker:
        """A thread that outlives the children it creates, for spawns from other threads.

        PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process
        (Go issue 27505): a child forked from a worker thread (``anyio.to_thread``, an event
        loop run in a thread that then ends) would be killed with that thread. The main
        thread lives as long as the process, so it forks directly; any other thread hands
        the fork to this one, which keeps running while a child it created is alive (it
        watches them through pidfds) and ends when none is left, so it costs nothing when
        unused and no thread outlives the children.
        """

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._requests: list[_Request] = []
            self._thread: threading.Thread | None = None
            self._wake_w = -1

        def call(self, fn: Callable[[], int]) -> int:
            request = _Request(fn)
            with self._lock:
                if self._thread is None:
                    wake_r, wake_w = os.pipe()
                    os.set_blocking(wake_w, False)
                    thread = threading.Thread(
                        target=self._run, args=(wake_r,), name="anyio_proc forker", daemon=True
                    )
                    try:
                        thread.start()  # it waits for our lock before looking for requests
                    except BaseException:
                        os.close(wake_r)
                        os.close(wake_w)
                        raise
                    self._thread, self._wake_w = thread, wake_w
                    self._requests.append(request)
                else:
                    self._requests.append(request)
                    try:
                        os.write(self._wake_w, b"\0")
                    except BlockingIOError:
                        pass  # full of wake-ups it has not read yet: it will look anyway
            request.done.wait()
            if request.error is not None:
                raise request.error
            return request.pid

        def _run(self, wake_r: int) -> None:
            poller = select.poll()
            poller.register(wake_r, select.POLLIN)
            watched: set[int] = set()  # pidfds of live children
            unwatched: list[int] = []  # pids of live children, without pidfds
            while True:
                with self._lock:
                    requests, self._requests = self._requests, []
                    if not requests and not watched and not unwatched:
                        # Decided under the lock, so a later request starts a new thread.
                        self._thread = None
                        os.close(self._wake_w)
                        os.close(wake_r)
                        return
                for request in requests:
                    try:
                        request.pid = request.fn()
                    except BaseException as exc:
                        request.error = exc
                    else:
                        try:
                            fd = os.pidfd_open(request.pid)
                        except OSError:
                            unwatched.append(request.pid)
                        else:
                            watched.add(fd)
                            poller.register(fd, select.POLLIN)
                    finally:
                        request.done.set()
                # Without a pidfd the exit is checked by polling, without reaping.
                unwatched = [pid for pid in unwatched if not _exited(pid)]
                if not watched and not unwatched:
                    continue
                for fd, _ in poller.poll(100 if unwatched else None):
                    if fd == wake_r:
                        os.read(wake_r, 512)
                    else:  # that child has exited: we need not outlive it any more
                        poller.unregister(fd)
                        watched.discard(fd)
                        os.close(fd)

        def after_fork_in_child(self) -> None:
            # The thread does not exist in a forked copy of the program; its children are
            # not that copy's children either.
            self._lock = threading.Lock()
            self._requests = []
            self._thread = None
            self._wake_w = -1

    class _Request:
        __slots__ = ("done", "error", "fn", "pid")

        def __init__(self, fn: Callable[[], int]) -> None:
            self.fn = fn
            self.done = threading.Event()
            self.error: BaseException | None = None
            self.pid = 0

    def _exited(pid: int) -> bool:
        try:
            result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return result is not None and result.si_pid != 0

    _forker = _Forker()
    os.register_at_fork(after_in_child=_forker.after_fork_in_child)

    def on_long_lived_thread(fn: Callable[[], int]) -> int:
        """Run ``fn`` (which creates a process and returns its pid) on a thread that lives at
        least as long as that process: this one if it is the main thread, else the forker."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        return _forker.call(fn)

else:

    def parent_death_pre_exec(then: Callable[[], Any] | None = None) -> Callable[[], None]:
        raise NotImplementedError("PR_SET_PDEATHSIG is Linux-only")

    def on_long_lived_thread(fn: Callable[[], int]) -> int:
        return fn()
