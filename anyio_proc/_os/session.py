"""The other members of a session that a child of ours leads, for its exit policy.

A child on a pseudo-terminal (and one started with ``new_session``) leads a session. Most
of what it starts stays in its process group, which the exit policy signals as a whole;
but a shell with job control (an interactive ``bash``, ``set -m``) gives every job a
process group of its own in the same session, so ``sleep 77 &`` typed at the shell is out
of the group's reach. :class:`Session` finds such processes by their session id, signals
them and waits for them to be gone.

**Pid reuse.** A session id is the pid of its leader, and that number cannot be given to
a new process while any process, a zombie included, still uses it as its pid, process
group or session id. The caller keeps the leader's zombie (it does so for the group
already) and calls in here only while it has not reaped it: then every process whose
session id is that number belongs to our child's session, whatever its parent is now. A
member is not our child, though: between reading its ``stat`` and signalling it, it could
exit and its pid be reused by a stranger. So each one is opened as a pidfd first, its
``stat`` is read again through the same pid, and the signal goes through the pidfd: it
reaches the process whose session we checked, or nothing. Without pidfds (Linux < 5.3,
fds exhausted) the pid is checked by its start time just before ``kill``; with the fd
table full, ``/proc`` is still read, through the fd held in reserve for that
(``procfs.py``).

**What escapes:** a process that left the session (``setsid``, a daemon), which
``Command.kill_tree`` covers while it is still a descendant. And since the members are
signalled one by one (a process group is signalled at once by the kernel, which makes a
concurrent ``fork`` either see the signal or fail), a member forking at the very moment
the shutdown signal is sent can give a child that misses it; that child gets SIGKILL at
the end of the grace period. During the SIGKILL phase every look at the session kills
what it finds, so forks cannot outrun it.

Linux only (``/proc``); elsewhere the session cannot be listed and nothing here acts.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import TYPE_CHECKING

from anyio.lowlevel import checkpoint

from .._status import signal_name

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Session"]

logger = logging.getLogger("anyio_proc")


if sys.platform == "linux":
    import signal
    import time

    import anyio

    from .._polling import POLL_FIRST, POLL_MOST
    from .census import Census, Member, census_after, last_census, take_census
    from .pidfds import pidfd_or_none
    from .procfs import Stat, read_stat

    _SIGKILL = int(signal.SIGKILL)
    _SIGCONT = int(signal.SIGCONT)

    def _stat(pid: int) -> Stat | None:
        """The ``stat`` of a process, or None if it is gone or cannot be read (no fd even
        with the reserve's: missed, as if it had exited)."""
        try:
            return read_stat(pid)
        except OSError:
            return None

    def _send(member: Member, sid: int, signals: tuple[int, ...]) -> bool:
        """Send ``signals``, in order, to ``member`` if it is still that process and still
        in session ``sid``; True if they were sent."""
        try:
            fd = pidfd_or_none(member.pid)
        except ProcessLookupError:
            return False
        try:
            # Read after the pidfd is open: if the process it names is still there, this
            # is its stat, so the checks below are about the process we will signal.
            stat = _stat(member.pid)
            if stat is None or stat.sid != sid or stat.start != member.start:
                return False
            for sig in signals:
                if fd is not None:
                    signal.pidfd_send_signal(fd, sig)
                else:
                    os.kill(member.pid, sig)
        except OSError as exc:
            # ESRCH: it exited meanwhile. EPERM: it ran a set-user-ID program and belongs
            # to another user now; out of reach, like anything it starts.
            if exc.errno != errno.ESRCH:
                logger.debug("cannot signal pid %d of session %d: %s", member.pid, sid, exc)
            return False
        finally:
            if fd is not None:
                os.close(fd)
        return True

    class Session:
        """The processes of the session that our child ``sid`` leads, other than the child.

        Call it only while the child (the session leader) is unreaped, so that the
        session id cannot name another session (see the module's docstring). The members
        are found in a census of ``/proc`` (``census.py``): the exit policy's methods
        share one, taken off the event loop's thread, with every other session and group
        it is stopping.
        """

        def __init__(self, sid: int) -> None:
            self._sid = sid
            # After SIGKILL, every later look kills what it finds (forks cannot outrun it).
            self._killing = False
            self._killed: set[tuple[int, int]] = set()  # (pid, start) of members killed

        def _members(self, census: Census) -> list[Member] | None:
            """The live members but the leader; None if ``/proc`` could not be listed."""
            if census.sessions is None:
                return None
            return [m for m in census.sessions.get(self._sid, ()) if m.pid != self._sid]

        def signal(self, sig: int) -> None:
            """Send ``sig`` to every member outside the leader's process group, as found by
            listing ``/proc`` now.

            The leader's group is left to the caller, whose ``killpg`` reaches it in one
            step (so nothing there gets the signal twice). A stopped member (a job
            suspended with Ctrl-Z, or stopped for reading the terminal in the
            background) is continued after the signal, as a shell does for ``kill``, so
            that it can act on it rather than hold the shutdown for the whole grace period.
            """
            self._signal(sig, self._members(take_census()))

        async def signal_shared(self, sig: int, still_led: Callable[[], bool]) -> None:
            """As :meth:`signal`, from a census begun now and shared; nothing is sent if
            ``still_led()`` says the leader no longer pins the session id by then.

            **Cancellation:** safe; nothing is sent if cancelled.
            """
            census = await census_after(time.monotonic())
            if still_led():
                self._signal(sig, self._members(census))

        def _signal(self, sig: int, members: list[Member] | None) -> None:
            if not members:
                return
            kill = sig == _SIGKILL
            self._killing = self._killing or kill
            hit = []
            for member in members:
                if member.pgid == self._sid:
                    continue
                signals = (sig, _SIGCONT) if member.stopped and not kill else (sig,)
                if _send(member, self._sid, signals):
                    hit.append(member.pid)
                    if kill:
                        self._killed.add((member.pid, member.start))
            if hit and logger.isEnabledFor(logging.DEBUG):
                logger.debug("sent %s to session %d members: %s", signal_name(sig), self._sid, hit)

        def alive_seen(self, since: float) -> bool | None:
            """True while a process of the session other than the leader may be running
            (zombies do not count): as the last census says if it was begun after
            ``since``, else True. None when that cannot be known (no ``/proc``). Never
            lists ``/proc``."""
            census = last_census()
            if census.taken <= since:
                return True
            members = self._members(census)
            return None if members is None else bool(members)

        async def wait_gone(self) -> None:
            """Return once no process of the session other than the leader is running
            (at once if that cannot be known), as shared censuses say, at growing
            intervals. After SIGKILL was sent, each look also kills any member (outside
            the leader's group) not killed yet: one forked while the signal was being sent.

            **Cancellation:** safe; it can be called again.
            """
            # Members are not our children: nothing tells us of their exit, so we look.
            delay = POLL_FIRST
            since = time.monotonic()
            while not self._gone(await census_after(since)):
                since = time.monotonic()
                await anyio.sleep(delay)
                delay = min(delay * 2, POLL_MOST)

        def _gone(self, census: Census) -> bool:
            """No member is left; in the SIGKILL phase, kill any member found unkilled."""
            members = self._members(census)
            if not members:
                return True
            if self._killing:
                for member in members:
                    key = (member.pid, member.start)
                    if member.pgid == self._sid or key in self._killed:
                        continue
                    if _send(member, self._sid, (_SIGKILL,)):
                        self._killed.add(key)
                        logger.debug("sent SIGKILL to pid %d of session %d", member.pid, self._sid)
            return False

else:

    class Session:
        """Without ``/proc`` a session's members cannot be listed: the exit policy reaches
        the child's process group only."""

        def __init__(self, sid: int) -> None:
            self._sid = sid

        def signal(self, sig: int) -> None:
            pass

        async def signal_shared(self, sig: int, still_led: Callable[[], bool]) -> None:
            await checkpoint()

        def alive_seen(self, since: float) -> bool | None:
            return None

        async def wait_gone(self) -> None:
            await checkpoint()
