"""Process trees: a child's descendants for ``Command.kill_tree``, and the parent-death signal
of ``Command.die_with_parent``.

Both need Linux. ``kill_tree`` reads ``/proc``; elsewhere (and where ``/proc`` is not
mounted) :class:`Descendants` finds nothing and the exit policy falls back to what it does
without it: signal the child, or its process group when it leads one. ``die_with_parent``
needs ``prctl(PR_SET_PDEATHSIG)``; elsewhere :data:`PARENT_DEATH_SIGNAL` is false and the
builder refuses it.

**Why freeze before walking.** The only link from a child to a grandchild that left its
process group (``setsid``) is parenthood, and it lasts only while the parent lives: a dead
process's children are re-parented to init (or a subreaper) on the spot. So the tree is
read *before* anything is signalled, while every intermediate is alive. But a running
process can fork between the moment we list its children and the moment we signal it; if
the signal kills it, the new child is re-parented and escapes. Re-reading until two walks
agree narrows that window without closing it (a fork can follow the last read), and the
kernel itself documents ``/proc/<pid>/task/<tid>/children`` as reliable only for stopped or
frozen tasks. So each level is stopped first (SIGSTOP, then wait until every thread of it
shows ``T``): a stopped process cannot fork, so its list of children is final once read;
then the next level is stopped, down to the leaves. Only then is the signal sent, to every
process found at once, and the tree is continued (SIGCONT) so that a polite signal can be
handled. SIGKILL needs no SIGCONT but gets it harmlessly. The price: parents in the tree
see their children stop and continue (``SIGCHLD`` with ``CLD_STOPPED``/``CLD_CONTINUED``),
and a child that someone had stopped on purpose is continued at shutdown, as systemd does,
so that it can act on the shutdown signal.

**Pid reuse.** Descendants are not our children, so their pids are not pinned by us: one
could exit, be reaped by its parent and have its number reused. Each one is held by a pidfd,
opened and then checked (its parent is the stopped process we read it from, and the first
signal through the pidfd succeeds, so the pidfd names that very process), and every later
signal goes through it. Without pidfds (Linux < 5.3, or fds exhausted) the pid is paired with
its start time from ``/proc/<pid>/stat`` and checked again before each signal.

**A full fd table.** The walk's reads of ``/proc`` borrow the one fd held in reserve for
that (``procfs.py``), so a tree is still found and signalled when the program
has run out of fds; its descendants then go by pid and start time, since no pidfd can be
opened.

**What can still escape**, and is documented for users (docs/process_trees.md):

- a process re-parented before the walk: a double fork whose middle process has already
  exited (a daemon), a grandchild of a shell that has already exited. It is no longer our
  descendant, and nothing in ``/proc`` links it to us any more. ``PR_SET_CHILD_SUBREAPER``
  on this process would adopt such orphans (they would become our children, to be reaped
  by us), and a cgroup (``systemd-run --scope``, ``cgroup.kill``) contains a tree for good;
  neither is done here, since both change the whole program.
- a process that forks and exits in the grace period between the shutdown signal and
  SIGKILL: its new child is re-parented before the SIGKILL walk.
- a process stuck in uninterruptible sleep or a ``vfork()`` cannot be stopped; after a
  short bound the walk reads its children anyway.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from .waiters.base import close_watched_fd

__all__ = [
    "PARENT_DEATH_SIGNAL",
    "Descendants",
    "on_long_lived_thread",
    "parent_death_pre_exec",
    "pidfd_or_none",
]

logger = logging.getLogger("anyio_proc")

#: A signal-sending function for the root (the ``Child`` itself, which signals through its
#: waiter): True if the signal was delivered, False once the child is gone.
SignalRoot = Callable[[int], bool]

# Stopping is normally a matter of microseconds; a process in uninterruptible sleep or in a
# vfork() stops only when that ends. Past this bound (per walk; it blocks the event loop,
# since kill() is synchronous) the walk reads such a process's children anyway.
_STOP_BOUND = 0.2
# Waiting for descendants without pidfds (no exit event for non-children): poll, backing off.
_POLL_FIRST = 0.001
_POLL_MAX = 0.05


if sys.platform == "linux":
    import ctypes
    import select
    import signal

    from .procfs import proc_list, proc_read

    _SIGSTOP = int(signal.SIGSTOP)
    _SIGCONT = int(signal.SIGCONT)
    _SIGKILL = int(signal.SIGKILL)

    _PROC = os.path.isdir("/proc/self/task")
    # CONFIG_PROC_CHILDREN; without it, children are found by a scan of every /proc/<pid>/stat.
    _CHILDREN_FILE = _PROC and os.path.exists(
        f"/proc/self/task/{threading.get_native_id()}/children"
    )
    _use_pidfds = hasattr(os, "pidfd_open")

    def _read(path: str) -> bytes | None:
        """A /proc file, or None if it cannot be read: its process is gone, or no fd is
        free even with the reserve's (the walk then misses it, as it would a process that
        exited)."""
        try:
            return proc_read(path)
        except OSError:
            return None

    def _list(path: str) -> list[str]:
        """The names in a /proc directory; none if it cannot be read (as :func:`_read`)."""
        try:
            return proc_list(path) or []
        except OSError:
            return []

    def _stat(path: str) -> tuple[bytes, int, int] | None:
        """(state, ppid, start time) from a ``stat`` file, or None if it is gone."""
        data = _read(path)
        if not data:
            return None
        # The command name may hold spaces and parentheses: parse after its last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        return fields[0], int(fields[1]), int(fields[19])

    def _stopped(pid: int) -> bool:
        """True when no thread of ``pid`` can run (stopped, traced, exited) or it is gone."""
        for tid in _list(f"/proc/{pid}/task"):  # none when gone: it cannot run
            stat = _stat(f"/proc/{pid}/task/{tid}/stat")
            if stat is not None and stat[0] not in (b"T", b"t", b"Z", b"X"):
                return False
        return True

    def _wait_stopped(pids: list[int], deadline: float) -> None:
        pending = pids
        pause = 0.0
        while True:
            pending = [pid for pid in pending if not _stopped(pid)]
            if not pending or time.monotonic() >= deadline:
                return
            if pause:
                time.sleep(pause)
            else:
                os.sched_yield()  # on a busy machine the target may need our CPU to stop
            pause = min(pause * 2 or 0.00005, 0.002)

    def _children(parents: list[int]) -> list[tuple[int, int]]:
        """``(parent, child)`` for every child of ``parents``, read from /proc."""
        pairs: list[tuple[int, int]] = []
        if not _PROC:
            return pairs
        if _CHILDREN_FILE:
            for parent in parents:
                # A child is listed under the thread that created it: read every thread.
                for tid in _list(f"/proc/{parent}/task"):
                    data = _read(f"/proc/{parent}/task/{tid}/children") or b""
                    pairs.extend((parent, int(kid)) for kid in data.split())
            return pairs
        wanted = set(parents)
        for name in _list("/proc"):
            if name.isdigit():
                stat = _stat(f"/proc/{name}/stat")
                if stat is not None and stat[1] in wanted:
                    pairs.append((stat[1], int(name)))
        return pairs

    def pidfd_or_none(pid: int) -> int | None:
        """A pidfd for ``pid``, or None where there are none; ProcessLookupError if gone."""
        global _use_pidfds
        if not _use_pidfds:
            return None
        try:
            return os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise ProcessLookupError(pid) from None
            if exc.errno in (errno.ENOSYS, errno.EPERM):  # old kernel, seccomp filter
                _use_pidfds = False
            return None  # EMFILE and the like: this one goes by pid and start time

    def _readable(fd: int) -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    class _Proc:
        """One descendant, named so that a signal cannot reach a process that reused its pid."""

        __slots__ = ("fd", "pid", "start")

        def __init__(self, pid: int, start: int, fd: int | None) -> None:
            self.pid = pid
            self.start = start  # clock ticks after boot: with the pid, it names one process
            self.fd = fd

        def send(self, sig: int) -> bool:
            """Deliver ``sig``; False if the process is gone or not ours to signal.

            EPERM: a descendant that ran a set-user-ID program (``sudo``) now belongs to
            another user; it is out of reach, like anything it starts, and the walk skips it.
            """
            try:
                if self.fd is not None:
                    signal.pidfd_send_signal(self.fd, sig)
                    return True
                stat = _stat(f"/proc/{self.pid}/stat")
                if stat is None or stat[2] != self.start:
                    return False
                os.kill(self.pid, sig)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    logger.debug("cannot signal descendant %d: %s", self.pid, exc)
                return False
            return True

        def alive(self) -> bool:
            if self.fd is not None:
                # Readable once it has exited, whoever its parent is and whether or not
                # that parent has reaped it.
                return not _readable(self.fd)
            stat = _stat(f"/proc/{self.pid}/stat")
            return stat is not None and stat[2] == self.start and stat[0] not in (b"Z", b"X")

        def close(self) -> None:
            fd, self.fd = self.fd, None
            if fd is not None:
                close_watched_fd(fd)

    def _adopt(pid: int, parent: int) -> _Proc | None:
        """Hold ``pid``, just read from the children of the stopped ``parent``.

        The pidfd is opened first, then the parent checked: if the first signal through the
        pidfd then succeeds, that process was alive throughout, so it is the one whose
        ``stat`` we read, a child of ``parent`` and not a stranger that reused the number.
        """
        try:
            fd = pidfd_or_none(pid)
        except ProcessLookupError:
            return None
        stat = _stat(f"/proc/{pid}/stat")
        if stat is None or stat[1] != parent:
            if fd is not None:
                os.close(fd)
            return None
        return _Proc(pid, stat[2], fd)

    class Descendants:
        """The processes below one child, found by walking ``/proc`` with the tree frozen.

        What one walk finds is kept (and held by pidfds) until :meth:`close`, so a later
        walk, a signal or a wait still reaches a descendant whose parent has died since.
        """

        def __init__(self, root: int) -> None:
            self._root = root
            # Read while the root is surely our unreaped child: from then on, its start
            # time tells whether /proc/<root> is still it.
            stat = _stat(f"/proc/{root}/stat") if _PROC else None
            self._root_start = None if stat is None else stat[2]
            self._procs: dict[int, _Proc] = {}
            self._retired: list[_Proc] = []  # gone, but a wait may still watch the fd
            self._stopped: list[_Proc] = []
            self._root_stopped = False

        def freeze(self, signal_root: SignalRoot | None) -> None:
            """Stop the root (through ``signal_root``; None once it cannot be signalled) and
            every descendant reachable from it or from what earlier walks found; remember
            each one. Call :meth:`thaw` afterwards, whatever happens in between."""
            if self._root_start is None:
                return
            deadline = time.monotonic() + _STOP_BOUND
            frontier: list[int] = []
            if signal_root is not None and signal_root(_SIGSTOP):
                self._root_stopped = True
                stat = _stat(f"/proc/{self._root}/stat")
                if stat is not None and stat[2] == self._root_start:
                    frontier.append(self._root)
            for proc in self._procs.values():
                if proc.send(_SIGSTOP):
                    self._stopped.append(proc)
                    frontier.append(proc.pid)
            seen = set(frontier)
            while frontier:
                _wait_stopped(frontier, deadline)
                found: list[int] = []
                for parent, pid in _children(frontier):
                    if pid in seen:
                        continue
                    seen.add(pid)
                    kid = _adopt(pid, parent)
                    if kid is None:
                        continue
                    if not kid.send(_SIGSTOP):
                        kid.close()
                        continue
                    old = self._procs.get(pid)
                    if old is not None:  # that number belonged to a descendant now gone
                        self._retired.append(old)
                    self._procs[pid] = kid
                    self._stopped.append(kid)
                    found.append(pid)
                frontier = found

        def signal(self, sig: int) -> None:
            """Send ``sig`` to every descendant found so far that is still there."""
            hit = [proc.pid for proc in self._procs.values() if proc.send(sig)]
            if hit and logger.isEnabledFor(logging.DEBUG):
                try:
                    name = signal.Signals(sig).name
                except ValueError:
                    name = str(sig)
                logger.debug("sent %s to descendants of pid %d: %s", name, self._root, hit)

        def thaw(self, signal_root: SignalRoot | None) -> None:
            """Continue what :meth:`freeze` stopped."""
            stopped, self._stopped = self._stopped, []
            for proc in stopped:
                proc.send(_SIGCONT)
            if self._root_stopped:
                self._root_stopped = False
                if signal_root is not None:
                    signal_root(_SIGCONT)

        def any_alive(self) -> bool:
            return any(proc.alive() for proc in self._procs.values())

        async def wait_gone(self) -> None:
            """Return once every descendant found so far has exited.

            **Cancellation:** safe; nothing is changed, and it can be called again.
            """
            for proc in list(self._procs.values()):
                delay = _POLL_FIRST
                while proc.alive():
                    if proc.fd is not None:
                        await anyio.wait_readable(proc.fd)
                    else:
                        await anyio.sleep(delay)
                        delay = min(delay * 2, _POLL_MAX)

        def close(self) -> None:
            """Release the pidfds; the processes themselves are left as they are."""
            procs = [*self._procs.values(), *self._retired]
            self._procs.clear()
            self._retired.clear()
            self._stopped.clear()
            for proc in procs:
                proc.close()

    # -- die_with_parent ---------------------------------------------------------------------

    PARENT_DEATH_SIGNAL = True
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
    PARENT_DEATH_SIGNAL = False

    class Descendants:
        """Without /proc, descendants cannot be listed: kill_tree degrades to what the exit
        policy does without it (the child, or its process group when it leads one)."""

        def __init__(self, root: int) -> None:
            self._root = root

        def freeze(self, signal_root: SignalRoot | None) -> None:
            pass

        def signal(self, sig: int) -> None:
            pass

        def thaw(self, signal_root: SignalRoot | None) -> None:
            pass

        def any_alive(self) -> bool:
            return False

        async def wait_gone(self) -> None:
            pass

        def close(self) -> None:
            pass

    def parent_death_pre_exec(then: Callable[[], Any] | None = None) -> Callable[[], None]:
        raise NotImplementedError("PR_SET_PDEATHSIG is Linux-only")

    def on_long_lived_thread(fn: Callable[[], int]) -> int:
        return fn()
