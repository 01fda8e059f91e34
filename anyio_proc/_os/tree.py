"""Process trees: a child's descendants, for ``Command.kill_tree``.

Linux only: the tree is read from ``/proc``; elsewhere (and where ``/proc`` is not
mounted) :class:`Descendants` finds nothing and the exit policy falls back to what it does
without it: signal the child, or its process group when it leads one.

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

**What can still escape**, and is documented for users (docs/process-trees.md):

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
from collections.abc import Callable, Iterator
from functools import partial

from .._pacing import paced
from .._polling import poll_until
from .._status import signal_name
from .waiters.base import close_watched_fd

__all__ = ["Descendants", "SignalRoot"]

logger = logging.getLogger("anyio_proc")

#: A signal-sending function for the root (the ``Child`` itself, which signals through its
#: waiter): True if the signal was delivered, False once the child is gone.
SignalRoot = Callable[[int], bool]

# Stopping is normally a matter of microseconds; a process in uninterruptible sleep or in a
# vfork() stops only when that ends. Past this bound (per walk) the walk reads such a
# process's children anyway. The exit policy's walks wait for it with the event loop
# running (freeze_async); a walk from kill() or send_signal(), which are synchronous,
# blocks the loop for it.
_STOP_BOUND = 0.2
# freeze_async's first sleep while a level is slow to stop (it doubles from there).
_STOP_FIRST_PAUSE = 0.0005


if sys.platform == "linux":
    import signal

    import anyio
    from anyio.lowlevel import checkpoint

    from .pidfds import has_exited, pidfd_or_none
    from .procfs import Stat, proc_list, proc_read, read_stat

    _SIGSTOP = int(signal.SIGSTOP)
    _SIGCONT = int(signal.SIGCONT)

    _PROC = os.path.isdir("/proc/self/task")
    # CONFIG_PROC_CHILDREN; without it, children are found by a scan of every /proc/<pid>/stat.
    _CHILDREN_FILE = _PROC and os.path.exists(
        f"/proc/self/task/{threading.get_native_id()}/children"
    )

    # A /proc read or listing that fails (the process is gone, /proc hides it, or no fd is
    # free even with the reserve's) finds nothing: the walk misses that process, as it
    # would one that exited.

    def _read(path: str) -> bytes:
        try:
            return proc_read(path) or b""
        except OSError:
            return b""

    def _list(path: str) -> list[str]:
        try:
            return proc_list(path) or []
        except OSError:
            return []

    def _stat(pid: int, tid: int | None = None) -> Stat | None:
        try:
            return read_stat(pid, tid)
        except OSError:
            return None

    def _stopped(pid: int) -> bool:
        """True when no thread of ``pid`` can run (stopped, traced, exited) or it is gone."""
        for tid in _list(f"/proc/{pid}/task"):  # none when gone: it cannot run
            stat = _stat(pid, int(tid))
            if stat is not None and not (stat.stopped or stat.exited):
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

    async def _await_stopped(pids: list[int], deadline: float) -> None:
        # Not a moment of spinning here: hundreds of trees may be walked at once, and a
        # stop needs the target scheduled. A first look after the others had their turn,
        # then growing sleeps.
        pause = 0.0
        while True:
            pids = [pid for pid in pids if not _stopped(pid)]
            if not pids or time.monotonic() >= deadline:
                return
            if pause:
                await anyio.sleep(pause)
            else:
                await checkpoint()
            pause = min(pause * 2 or _STOP_FIRST_PAUSE, 0.01)

    def _children(parents: list[int]) -> list[tuple[int, int]]:
        """``(parent, child)`` for every child of ``parents``, read from /proc."""
        pairs: list[tuple[int, int]] = []
        if not _PROC:
            return pairs
        if _CHILDREN_FILE:
            for parent in parents:
                # A child is listed under the thread that created it: read every thread.
                for tid in _list(f"/proc/{parent}/task"):
                    data = _read(f"/proc/{parent}/task/{tid}/children")
                    pairs.extend((parent, int(kid)) for kid in data.split())
            return pairs
        wanted = set(parents)
        for name in _list("/proc"):
            if name.isdigit():
                stat = _stat(int(name))
                if stat is not None and stat.ppid in wanted:
                    pairs.append((stat.ppid, int(name)))
        return pairs

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
                stat = _stat(self.pid)
                if stat is None or stat.start != self.start:
                    return False
                os.kill(self.pid, sig)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    logger.debug("cannot signal descendant %d: %s", self.pid, exc)
                return False
            return True

        def alive(self) -> bool:
            if self.fd is not None:
                return not has_exited(self.fd)
            stat = _stat(self.pid)
            return stat is not None and stat.start == self.start and not stat.exited

        def gone(self) -> bool:
            return not self.alive()

        async def wait_gone(self) -> None:
            if self.fd is None:
                # Not our child, no pidfd: nothing tells us of its exit, so poll.
                await poll_until(self.gone)
                return
            while self.alive():
                await anyio.wait_readable(self.fd)

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
        stat = _stat(pid)
        if stat is None or stat.ppid != parent:
            if fd is not None:
                os.close(fd)
            return None
        return _Proc(pid, stat.start, fd)

    class Descendants:
        """The processes below one child, found by walking ``/proc`` with the tree frozen.

        What one walk finds is kept (and held by pidfds) until :meth:`close`, so a later
        walk, a signal or a wait still reaches a descendant whose parent has died since.
        """

        def __init__(self, root: int) -> None:
            self._root = root
            # Read while the root is surely our unreaped child: from then on, its start
            # time tells whether /proc/<root> is still it.
            stat = _stat(root) if _PROC else None
            self._root_start = None if stat is None else stat.start
            self._procs: dict[int, _Proc] = {}
            self._retired: list[_Proc] = []  # gone, but a wait may still watch the fd
            self._stopped: list[_Proc] = []
            self._root_stopped = False
            self._walking = False  # a freeze_async lets other tasks run (and kill) meanwhile

        @property
        def walking(self) -> bool:
            """A :meth:`freeze_async` is under way (it lets other tasks run meanwhile)."""
            return self._walking

        def freeze(self, signal_root: SignalRoot | None) -> None:
            """Stop the root (through ``signal_root``; None once it cannot be signalled) and
            every descendant reachable from it or from what earlier walks found; remember
            each one. Call :meth:`thaw` afterwards, whatever happens in between. Not while
            :attr:`walking`."""
            deadline = time.monotonic() + _STOP_BOUND
            for level in self._walk(signal_root):
                _wait_stopped(level, deadline)

        async def freeze_async(self, signal_root: SignalRoot | None) -> None:
            """As :meth:`freeze`, but a level slow to stop is waited for with the event
            loop running, and each level's reads and signals take their turn (see
            ``_pacing.py``): hundreds of trees may be walked at once.

            **Cancellation:** as any exception: what it stopped so far is stopped, and
            :meth:`thaw` continues it.
            """
            deadline = time.monotonic() + _STOP_BOUND
            self._walking = True
            try:
                walk = self._walk(signal_root)
                while (level := await paced(partial(next, walk, None))) is not None:
                    await _await_stopped(level, deadline)
            finally:
                self._walking = False

        def _walk(self, signal_root: SignalRoot | None) -> Iterator[list[int]]:
            """Stop and remember the tree, level by level; yields each level just stopped,
            for the caller to wait until it shows stopped before its children are read."""
            if self._root_start is None:
                return
            frontier: list[int] = []
            if signal_root is not None and signal_root(_SIGSTOP):
                self._root_stopped = True
                stat = _stat(self._root)
                if stat is not None and stat.start == self._root_start:
                    frontier.append(self._root)
            for proc in self._procs.values():
                if proc.send(_SIGSTOP):
                    self._stopped.append(proc)
                    frontier.append(proc.pid)
            seen = set(frontier)
            while frontier:
                yield frontier
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
                logger.debug(
                    "sent %s to descendants of pid %d: %s", signal_name(sig), self._root, hit
                )

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
                await proc.wait_gone()

        def close(self) -> None:
            """Release the pidfds; the processes themselves are left as they are."""
            procs = [*self._procs.values(), *self._retired]
            self._procs.clear()
            self._retired.clear()
            self._stopped.clear()
            for proc in procs:
                proc.close()


else:

    class Descendants:
        """Without /proc, descendants cannot be listed: kill_tree degrades to what the exit
        policy does without it (the child, or its process group when it leads one)."""

        def __init__(self, root: int) -> None:
            self._root = root

        walking = False

        def freeze(self, signal_root: SignalRoot | None) -> None:
            pass

        async def freeze_async(self, signal_root: SignalRoot | None) -> None:
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
