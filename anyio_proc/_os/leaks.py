"""Linux: what a test leaves behind, for the pytest plugin (``pytest_plugin.py``).

Read from ``/proc``: this process's children with their states (zombies included), and
the pipes, pidfds and terminals it holds. Hooks on the calls that create processes
(``subprocess.Popen``, through which asyncio and trio start theirs, ``os.posix_spawn``,
``os.fork``, ``os.forkpty``) note where each one was started. And a child left behind is
killed and reaped. Elsewhere :data:`SUPPORTED` is false and the plugin checks nothing.

The hooks are Python functions around C calls, which reopens the window that
``launch_records.py`` closes: an exception from a signal handler can land in the hook after
the call returned, before the caller has the pid. So the hooks on ``posix_spawn`` and
``fork`` do what anyio_proc's launch does when interrupted: find the child this thread just
made (``lost_child``) and kill and reap it, as nobody else can. ``Popen`` keeps the pid on
the object before its hook runs, so anyio_proc's ``Popen`` path finds it there as before.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from .launch_records import lost_child, thread_children, undo_launches

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "SUPPORTED",
    "Kid",
    "children",
    "cmdline",
    "comm",
    "install_spawn_hooks",
    "kill_and_reap",
    "open_fds",
    "reported",
    "uninstall_spawn_hooks",
]

SUPPORTED = sys.platform == "linux" and os.path.isdir("/proc/self/fd")

#: The fds worth reporting, by what ``/proc/self/fd`` says they are. Sockets, files and an
#: event loop's epoll are left out: loops and libraries keep those for good.
_REPORTED = ("pipe:", "anon_inode:[pidfd]", "pidfd:", "/dev/ptmx", "/dev/pts/")


class Kid(NamedTuple):
    """One child: its state letter (``Z``: an unreaped zombie) and start time, which with
    the pid names one process (pids are reused)."""

    state: str
    start: int


_INHERITED = object()  # an attribute that the class had from its base, not its own
# (owner, attribute, original, hook) while the hooks are installed
_hooks: list[tuple[Any, str, Any, Any]] = []
_users = 0  # configurations that asked for the hooks (pytester nests them)

if sys.platform == "linux":
    import signal

    from .procfs import proc_list, proc_read, read_stat

    _has_children_files: bool | None = None

    def children() -> dict[int, Kid]:
        """Every child of this process, running or an unreaped zombie."""
        global _has_children_files
        if _has_children_files is None:
            _has_children_files = os.path.exists("/proc/thread-self/children")
        me = os.getpid()
        if _has_children_files:
            # A child is listed under the thread that made it (or, once that thread has
            # ended, another of ours): a few microseconds a thread.
            candidates: set[bytes] = set()
            for tid in proc_list("/proc/self/task") or ():
                candidates.update((proc_read(f"/proc/self/task/{tid}/children") or b"").split())
            pids = [int(pid) for pid in candidates]
        else:  # a kernel without CONFIG_PROC_CHILDREN: every process, milliseconds
            pids = [int(name) for name in proc_list("/proc") or () if name.isdigit()]
        found = {}
        for pid in pids:
            try:
                stat = read_stat(pid)
            except OSError:
                continue
            if stat is not None and stat.ppid == me:
                found[pid] = Kid(stat.state, stat.start)
        return found

    def open_fds() -> dict[int, tuple[int, int]]:
        """Our fds, each with what it is open on (device and inode): an ``fstat`` each is
        a tenth of the cost of reading the link in ``/proc/self/fd``."""
        found = {}
        for name in proc_list("/proc/self/fd") or ():
            try:
                st = os.fstat(int(name))
            except OSError:
                continue  # the listing's own fd, closed by now
            found[int(name)] = (st.st_dev, st.st_ino)
        return found

    def reported(fd: int) -> str | None:
        """What fd ``fd`` is (``pipe:[inode]``, ``anon_inode:[pidfd]``...) if it is one of
        those a test should not leave open: a pipe, a pidfd, a terminal."""
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return target if target.startswith(_REPORTED) else None

    def cmdline(pid: int) -> list[str] | None:
        """``pid``'s argv, or None when it has none to show (a zombie) or is gone."""
        try:
            data = proc_read(f"/proc/{pid}/cmdline")
        except OSError:
            return None
        if not data:
            return None
        return [os.fsdecode(arg) for arg in data.rstrip(b"\0").split(b"\0")]

    def comm(pid: int) -> str | None:
        """The name the kernel keeps for ``pid`` (zombies keep it too)."""
        try:
            data = proc_read(f"/proc/{pid}/stat")
        except OSError:
            return None
        if not data:
            return None
        return os.fsdecode(data[data.find(b"(") + 1 : data.rfind(b")")])

    def kill_and_reap(pid: int, kid: Kid, timeout: float = 5.0) -> None:
        """SIGKILL our child ``pid`` and reap it, unless it is not that process any more
        (reaped by somebody else, and the number reused), or cannot be killed."""
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            pidfd = None  # no pidfds here: the start time guards against reuse
        try:
            stat = read_stat(pid)
            if stat is None or stat.ppid != os.getpid() or stat.start != kid.start:
                return  # somebody reaped it (an event loop's watcher) since it was listed
            try:
                if pidfd is None:
                    os.kill(pid, signal.SIGKILL)
                else:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # reaped meanwhile
            except PermissionError:
                return  # a setuid program: we can neither kill it nor wait for it here
            if pidfd is not None:
                # Readable once it has exited: bounded, as a process in an uninterruptible
                # sleep dies only when that ends.
                select.select([pidfd], [], [], timeout)
            try:
                os.waitpid(pid, 0 if pidfd is None else os.WNOHANG)
            except ChildProcessError:
                pass  # an event loop's watcher thread reaped it first
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def install_spawn_hooks(
        site: Callable[[], Any], spawned: Callable[[str, int, Any, Any], None]
    ) -> None:
        """Put the hooks in place (once per process; counted, for nested pytest runs).

        Each hook calls ``site()`` before the process is made, and then ``spawned(how,
        pid, argv, site)``: how it was made, its pid, its argv (None for a fork).
        """
        global _users
        _users += 1
        if _hooks:
            return
        hooks: list[tuple[Any, str, Any]] = [
            (subprocess.Popen, "_execute_child", _popen_hook(site, spawned)),
            (os, "posix_spawn", _spawn_hook(os.posix_spawn, "os.posix_spawn", site, spawned)),
            (os, "posix_spawnp", _spawn_hook(os.posix_spawnp, "os.posix_spawnp", site, spawned)),
            (os, "fork", _fork_hook(os.fork, "os.fork", site, spawned)),
            (os, "forkpty", _fork_hook(os.forkpty, "os.forkpty", site, spawned)),
        ]
        # uvloop starts processes in C (libuv), not through Popen: its loop's methods are
        # the last Python code on the way (its Loop is a Python subclass of the C one).
        loop_class = getattr(sys.modules.get("uvloop"), "Loop", None)
        if loop_class is not None:
            hooks.extend(
                (loop_class, name, _loop_hook(getattr(loop_class, name), name, site, spawned))
                for name in ("subprocess_exec", "subprocess_shell")
            )
        for owner, name, hook in hooks:
            _hooks.append((owner, name, owner.__dict__.get(name, _INHERITED), hook))
            setattr(owner, name, hook)

    def _spawn_hook(
        real: Callable[..., int],
        how: str,
        site: Callable[[], Any],
        spawned: Callable[[str, int, Any, Any], None],
    ) -> Callable[..., int]:
        def posix_spawn(path: Any, argv: Any, env: Any, *args: Any, **kwargs: Any) -> int:
            where = site()
            before = thread_children()
            try:
                pid = real(path, argv, env, *args, **kwargs)
                spawned(how, pid, argv, where)
                return pid
            except BaseException:
                _undo_lost(before)
                raise

        posix_spawn.__wrapped__ = real  # type: ignore[attr-defined]
        return posix_spawn

    def _fork_hook(
        real: Callable[[], Any],
        how: str,
        site: Callable[[], Any],
        spawned: Callable[[str, int, Any, Any], None],
    ) -> Callable[[], Any]:
        def fork() -> Any:
            where = site()
            parent = os.getpid()
            before = thread_children()
            try:
                made = real()  # os.fork: the pid; os.forkpty: (pid, fd)
                pid = made if isinstance(made, int) else made[0]
                if pid:
                    spawned(how, pid, None, where)
                return made
            except BaseException:
                if os.getpid() == parent:  # not in the new child, which has no children
                    _undo_lost(before)
                raise

        fork.__wrapped__ = real  # type: ignore[attr-defined]
        return fork

    def _loop_hook(
        real: Callable[..., Any],
        name: str,
        site: Callable[[], Any],
        spawned: Callable[[str, int, Any, Any], None],
    ) -> Callable[..., Any]:
        async def subprocess_start(self: Any, factory: Any, *args: Any, **kwargs: Any) -> Any:
            where = site()
            transport, protocol = await real(self, factory, *args, **kwargs)
            # exec: the program and its arguments; shell: the command line.
            spawned(f"uvloop's {name}", transport.get_pid(), args, where)
            return transport, protocol

        subprocess_start.__wrapped__ = real  # type: ignore[attr-defined]
        return subprocess_start

    def _undo_lost(before: bytes) -> None:
        lost = lost_child(before)
        if lost is not None:
            undo_launches([lost])

    def _popen_hook(
        site: Callable[[], Any], spawned: Callable[[str, int, Any, Any], None]
    ) -> Callable[..., None]:
        real = subprocess.Popen._execute_child  # type: ignore[attr-defined]

        # *args: the signature differs between Python versions; args[0] is Popen's args.
        def _execute_child(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
            where = site()
            real(self, *args, **kwargs)
            # Popen's own call to os.posix_spawn was noted too; this one has its argv as
            # the caller gave it (a shell command line, say).
            spawned("subprocess.Popen", self.pid, args[0] if args else None, where)

        _execute_child.__wrapped__ = real  # type: ignore[attr-defined]
        return _execute_child

else:

    def children() -> dict[int, Kid]:
        raise NotImplementedError  # SUPPORTED is false here

    def open_fds() -> dict[int, tuple[int, int]]:
        raise NotImplementedError

    def reported(fd: int) -> str | None:
        raise NotImplementedError

    def cmdline(pid: int) -> list[str] | None:
        raise NotImplementedError

    def comm(pid: int) -> str | None:
        raise NotImplementedError

    def kill_and_reap(pid: int, kid: Kid, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def install_spawn_hooks(
        site: Callable[[], Any], spawned: Callable[[str, int, Any, Any], None]
    ) -> None:
        raise NotImplementedError


def uninstall_spawn_hooks() -> None:
    """Undo :func:`install_spawn_hooks` once every configuration that asked is done; a hook
    that somebody has since replaced with their own is left to them."""
    global _users
    _users = max(0, _users - 1)
    if _users:
        return
    while _hooks:
        owner, name, original, hook = _hooks.pop()
        if owner.__dict__.get(name) is not hook:
            continue  # somebody else's by now
        if original is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
