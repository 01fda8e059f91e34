"""What the pytest plugin (``pytest_plugin.py``) checks around a test, and what it says.

A :class:`Check` lists this process's children and its pipes, pidfds and terminals before
the test and again after it; what is new was left behind. Where each process was started
comes from the spawn hooks of ``_os/leaks.py``: the frames of the tests' own code (not the
standard library's, an installed package's or anyio_proc's) on the stack at that moment.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import site
import sys
import sysconfig
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import _pytest
import pytest

from ._os.leaks import (
    Kid,
    children,
    cmdline,
    comm,
    install_spawn_hooks,
    kill_and_reap,
    open_fds,
    reported,
    uninstall_spawn_hooks,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from types import FrameType

__all__ = ["Check", "Checker", "hooks_off", "hooks_on"]

#: A frame: file, line, function.
Frame = tuple[str, int, str]

# The frames of the tests' code shown for a spawn, innermost first, and how far up the
# stack to look for them (an async test's stack is 30-60 frames deep).
_SHOWN = 3
_DEPTH = 200
# Sites kept per test before those of reaped children are dropped (a stress test).
_KEPT = 4096

_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible sleep",
    "T": "stopped",
    "t": "stopped by a tracer",
    "Z": "zombie, unreaped",
    "X": "dead, unreaped",
    "I": "idle",
}


class Site(NamedTuple):
    """Where a process was started."""

    how: str
    argv: tuple[str, ...] | None
    #: The tests' frames, innermost first; else the innermost frames there were.
    frames: tuple[Frame, ...]
    ours: bool  # whether ``frames`` are the tests' code
    thread: str | None  # the thread, when not the main one


#: The checks running, innermost last (pytester runs pytest inside a test).
_armed: list[Check] = []
_library: tuple[str, ...] | None = None
_is_tests_code: dict[str, bool] = {}
_warmed_up = False


def hooks_on() -> None:
    """Note where processes are started from now on (until :func:`hooks_off`)."""
    global _warmed_up
    if not _warmed_up:
        _warmed_up = True
        _warm_up_uvloop()
    install_spawn_hooks(_where, _spawned)


def hooks_off() -> None:
    uninstall_spawn_hooks()


def _warm_up_uvloop() -> None:
    # libuv makes a process-wide pipe with the first uvloop loop and keeps it for good:
    # made during a test, it would look left behind by that test.
    try:
        if importlib.util.find_spec("uvloop") is None:
            return
        import uvloop

        uvloop.new_event_loop().close()
    except Exception:
        pass  # not usable here: then no test starts a uvloop loop either


class Check:
    """What one test started with; :meth:`finish` says what it left."""

    def __init__(self, rootdir: str) -> None:
        self._root = rootdir.rstrip(os.sep) + os.sep
        # Children by start time: the pid of one that exits may be reused by a new one.
        self._kids = {pid: kid.start for pid, kid in children().items()}
        self._fds = open_fds()
        self._sites: dict[int, Site] = {}
        _armed.append(self)

    def note(self, pid: int, where: Site) -> None:
        self._sites[pid] = where
        if len(self._sites) > _KEPT:
            kids = children()
            self._sites = {pid: s for pid, s in self._sites.items() if pid in kids}

    @contextmanager
    def exempt(self) -> Iterator[None]:
        """What appears in the block (a wider fixture's setup) is not the test's."""
        kids, fds = children(), open_fds()
        try:
            yield
        finally:
            self._kids.update(
                (pid, kid.start) for pid, kid in children().items() if kids.get(pid) != kid
            )
            self._fds.update((fd, on) for fd, on in open_fds().items() if fds.get(fd) != on)

    def abandon(self) -> None:
        """Stop noting spawns for this check, which will not finish."""
        if self in _armed:
            _armed.remove(self)

    def finish(self) -> str | None:
        """What the test left behind, said in a message (None if nothing); the children
        it left are killed and reaped."""
        self.abandon()
        kids, fds = self._left()
        if kids or fds:
            # An object in a reference cycle may hold the pipe or reap the child once
            # collected: collect before blaming the test (only then: it can take 50 ms).
            gc.collect()
            kids, fds = self._left()
        if not kids and not fds:
            return None
        left = [_count(things, what) for things, what in ((kids, "child process"), (fds, "fd"))]
        lines = [f"anyio_proc: the test left {' and '.join(filter(None, left))} behind:"]
        lines.extend(self._describe(pid, kid) for pid, kid in sorted(kids.items()))
        lines.extend(f"  fd {fd}: {what}" for fd, what in sorted(fds.items()))
        if kids:
            lines.append("(the processes were killed and reaped; fds are left to their owners)")
        else:
            lines.append("(fds are left to their owners)")
        for pid, kid in kids.items():
            kill_and_reap(pid, kid)
        return "\n".join(lines)

    def _left(self) -> tuple[dict[int, Kid], dict[int, str]]:
        helpers, helper_fds = _helpers()
        kids = {
            pid: kid
            for pid, kid in children().items()
            if self._kids.get(pid) != kid.start and pid not in helpers
        }
        fds = {}
        for fd, on in open_fds().items():
            if self._fds.get(fd) != on and fd not in helper_fds:
                what = reported(fd)
                if what is not None:
                    fds[fd] = what
        return kids, fds

    def _describe(self, pid: int, kid: Kid) -> str:
        where = self._sites.get(pid)
        argv: Any = cmdline(pid)
        if argv is None:  # a zombie keeps no argv: the one it was started with
            argv = list(where.argv) if where and where.argv else f"[{comm(pid) or '?'}]"
        shown = repr(argv)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        state = _STATES.get(kid.state, kid.state)
        return f"  pid {pid} ({state}) {shown}\n    {self._site(where)}"

    def _site(self, where: Site | None) -> str:
        if where is None:
            return "spawned by unknown code (not subprocess, os.posix_spawn, os.fork or uvloop)"
        said = f"spawned by {where.how}"
        if where.thread is not None:
            said += f" in thread {where.thread!r}"
        if not where.ours:
            said += ", with no frame of the tests' code on that thread"
        frames = [f"{self._path(file)}:{line} in {name}" for file, line, name in where.frames]
        if frames:
            said += (" at " if where.ours else "; innermost: ") + frames[0]
        if len(frames) > 1:
            said += ", called from " + " <- ".join(frames[1:])
        return said

    def _path(self, file: str) -> str:
        return file[len(self._root) :] if file.startswith(self._root) else file


class Checker:
    """The plugin's hooks around each test that ``wanted(item)`` says is checked;
    registered once some test asks for the check."""

    def __init__(self, rootdir: str, wanted: Callable[[pytest.Item], bool]) -> None:
        self._root = rootdir
        self._wanted = wanted
        self._hooks = False
        self._current: tuple[pytest.Item, Check] | None = None

    def checking(self, item: pytest.Item) -> bool:
        return self._current is not None and self._current[0] is item

    def start(self, item: pytest.Item) -> None:
        if not self._hooks:
            hooks_on()
            self._hooks = True
        self._current = item, Check(self._root)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        if self._wanted(item):
            self.start(item)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object]
    ) -> Generator[None, object, object]:
        # A class, module or session fixture set up for this test outlives it: whatever it
        # starts here is its own (a server for the whole session), not the test's.
        if self._current is None or fixturedef.scope == "function":
            return (yield)
        with self._current[1].exempt():
            return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        if not self.checking(item):
            return (yield)
        try:
            yield
        except BaseException:
            # The teardown failed already (maybe why something was left): its error is
            # the one raised, with what was left beside it.
            message = self._finish()
            if message:
                item.add_report_section("teardown", "anyio_proc leaks", message)
            raise
        message = self._finish()
        if message:
            pytest.fail(message, pytrace=False)

    def _finish(self) -> str | None:
        assert self._current is not None
        check = self._current[1]
        self._current = None
        return check.finish()

    def pytest_unconfigure(self) -> None:
        if self._current is not None:  # interrupted (Ctrl-C) during a test
            self._current[1].abandon()
            self._current = None
        if self._hooks:
            hooks_off()
            self._hooks = False


def _count(things: dict[int, Any], what: str) -> str:
    if not things:
        return ""
    if len(things) == 1:
        return f"1 {what}"
    return f"{len(things)} {what}es" if what.endswith("s") else f"{len(things)} {what}s"


def _helpers() -> tuple[set[int], set[int]]:
    """multiprocessing's process-wide helpers (resource tracker, fork server): started by
    the first test that needs one, and kept for the others."""
    pids: set[int] = set()
    fds: set[int] = set()
    tracker = getattr(
        sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker", None
    )
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    for helper, pid_name, fd_name in (
        (tracker, "_pid", "_fd"),
        (server, "_forkserver_pid", "_forkserver_alive_fd"),
    ):
        pid, fd = getattr(helper, pid_name, None), getattr(helper, fd_name, None)
        if isinstance(pid, int):
            pids.add(pid)
        if isinstance(fd, int):
            fds.add(fd)
    return pids, fds


# --- where a process was started (called by the spawn hooks) ---


def _where() -> tuple[tuple[Frame, ...], bool, str | None] | None:
    if not _armed:
        return None  # no test is being checked: nothing to note
    try:
        return _find_where()
    except Exception:
        return None  # never the reason a spawn fails: "unknown" is the worst of it


def _find_where() -> tuple[tuple[Frame, ...], bool, str | None]:
    thread = threading.current_thread()
    name = None if thread is threading.main_thread() else thread.name
    frames = _walk(sys._getframe(2), ours=True)
    if frames:
        return tuple(frames), True, name
    if name is not None:
        frames = _trio_task_frames()
        if frames:  # the task's frames say it all; the worker thread's name would not
            return tuple(frames), True, None
    return tuple(_walk(sys._getframe(2), ours=False)), False, name


def _spawned(how: str, pid: int, argv: Any, where: Any) -> None:
    if where is None:
        return
    frames, ours, thread = where
    try:
        noted = Site(how, _argv(argv), frames, ours, thread)
        for check in tuple(_armed):  # other threads spawn too
            check.note(pid, noted)
    except Exception:
        pass  # the process exists: an error here would lose it for its caller


def _argv(argv: Any) -> tuple[str, ...] | None:
    try:
        if argv is None:
            return None
        if isinstance(argv, (str, bytes, os.PathLike)):
            return (os.fsdecode(argv),)  # a shell command line
        return tuple(os.fsdecode(arg) for arg in argv)
    except (TypeError, ValueError):
        return (repr(argv),)


def _walk(frame: FrameType | None, *, ours: bool) -> list[Frame]:
    """Frames from ``frame`` outwards: the tests' code if ``ours``, else any but this
    package's."""
    found: list[Frame] = []
    depth = 0
    while frame is not None and len(found) < _SHOWN and depth < _DEPTH:
        code = frame.f_code
        if found and code.co_filename.startswith(_RUNNER):
            break  # past the test function: what calls it is pytest (under pytester, twice)
        if _tests_code(code.co_filename) if ours else not _machinery(code.co_filename):
            found.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
        depth += 1
    return found


def _trio_task_frames() -> list[Frame]:
    """In a trio worker thread (``trio.run_process`` starts ``Popen`` in one): the frames
    of the task waiting for it, from trio's record of that task, if it is there."""
    threads = sys.modules.get("trio._threads")
    register = getattr(getattr(threads, "PARENT_TASK_DATA", None), "task_register", None)
    try:
        task = register[0] if register else None
        if task is None:
            return []
        chain = [
            (f.f_code.co_filename, line, f.f_code.co_name) for f, line in task.iter_await_frames()
        ]
    except Exception:
        return []  # not the trio we know: no frames rather than an error in a spawn
    return [frame for frame in reversed(chain) if _tests_code(frame[0])][:_SHOWN]


_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep
_RUNNER = os.path.dirname(os.path.abspath(_pytest.__file__)) + os.sep


def _machinery(file: str) -> bool:
    """Code that only passes a spawn along: this package's, and ``subprocess``'s."""
    return file.startswith(_OURS) or file == getattr(sys.modules.get("subprocess"), "__file__", "")


def _tests_code(file: str) -> bool:
    known = _is_tests_code.get(file)
    if known is None:
        if file.startswith("<"):
            known = not file.startswith("<frozen")  # exec'd code ("<string>") is the tests'
        else:
            known = not file.startswith(_library_dirs())
        _is_tests_code[file] = known
    return known


def _library_dirs() -> tuple[str, ...]:
    """The standard library, the installed packages, and this package and the test tools
    wherever they are (an editable install is outside site-packages)."""
    global _library
    if _library is None:
        dirs = {_OURS}
        paths = sysconfig.get_paths()
        dirs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
        dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
        for name in ("anyio", "trio", "pytest", "_pytest", "pluggy", "uvloop", "sniffio"):
            file = getattr(sys.modules.get(name), "__file__", None)
            if file:
                dirs.add(os.path.dirname(file))
        both = dirs | {os.path.realpath(d) for d in dirs}
        _library = tuple(d.rstrip(os.sep) + os.sep for d in both if d)
    return _library
