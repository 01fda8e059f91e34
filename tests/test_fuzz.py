"""Cancellation fuzzing: random programs driven by random action sequences.

Each example spawns one program (exits at once, sleeps, echoes stdin, floods stdout, ignores
SIGTERM, forks a grandchild, in its own process group or not) and runs a random sequence of
actions on it (send, receive, lines, wait, try_wait, signals, closing stdin, sleeping, a
cancellation armed to land after a random delay, leaving the block early, raising), some of
them in background tasks so they race each other. The block's scope may also be cancelled
before spawning, or a random delay after it, wherever the block then is (in an action,
between actions, in the exit policy). Blocking actions are bounded by a random budget,
which cancels them at random points too.

After every example: the block was left within the exit policy's bound (a short
``Command.shutdown`` timeout), the child is reaped, every pipe is closed, no fd is left, no
waiter thread runs, a process group the child led is empty, and only the documented
exceptions were seen. Every example runs on asyncio, uvloop and trio and under each exit
waiter (RELIABILITY B1-B4, C1, C4, D4-D6).

Examples are derandomized and use no database, so a CI run is reproducible; the ``slow``
variant explores many more (not derandomized: hypothesis prints a reproduction blob).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyio_proc import Child, Command, OutputLimitExceeded, Stdio, spawn
from anyio_proc._os.waiters import available_waiters

from .helpers import children, group_members, join_our_threads, open_fds, proc_state

BACKENDS = {
    "asyncio": ("asyncio", {"debug": True}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}

#: The exit policy's grace period for every fuzzed command: short, so escalations are cheap.
SHUTDOWN_TIMEOUT = 0.25
#: Allowance on top of it for SIGKILL to land and a loaded 2-core machine to schedule us.
EXIT_MARGIN = 3.0

_marks = itertools.count()


def _marker() -> str:
    """A unique ``sleep`` argument, so a grandchild can be found in /proc by its argv."""
    return f"30.{os.getpid()}{next(_marks):06d}"


# Programs by name; those in FORKS get a marker argument for their grandchild `sleep`.
PROGRAMS: dict[str, list[str]] = {
    "exit": ["sh", "-c", "exit 3"],
    "sleep": ["sleep", "30"],
    "echo": ["cat"],
    "flood": ["yes", "flood"],
    "ignore_term": ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 30'],
    "grandchild": ["sh", "-c", 'sleep "$1" & echo started; wait', "sh"],
    "grandchild_ignore_term": ["sh", "-c", 'trap "" TERM; sleep "$1" & echo started; wait', "sh"],
}
FORKS = {"grandchild", "grandchild_ignore_term"}

SIGNALS = [
    signal.SIGTERM,
    signal.SIGKILL,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGSTOP,
    signal.SIGCONT,
    signal.SIGHUP,
]

BUDGETS = st.sampled_from([0.0, 0.001, 0.01, 0.05])


class FuzzError(Exception):
    """Raised by the ``raise`` action; must come out of the block unchanged."""


@dataclass(frozen=True)
class Action:
    kind: str
    arg: Any = None
    budget: float = 0.0
    background: bool = False


NO_ARG = st.none()


def _action(kind: str, arg: st.SearchStrategy[Any] = NO_ARG) -> st.SearchStrategy[Action]:
    return st.builds(Action, st.just(kind), arg, BUDGETS, st.booleans())


ACTIONS = st.one_of(
    _action("send", st.sampled_from([1, 100, 70_000])),
    _action("receive", st.sampled_from([1, 4096, 65536])),
    _action("lines", st.integers(1, 5)),
    _action("read_all", st.sampled_from([10, 100_000])),
    _action("wait"),
    _action("try_wait"),
    _action("signal", st.sampled_from(SIGNALS)),
    _action("kill"),
    _action("terminate"),
    _action("close_stdin"),
    _action("sleep", st.sampled_from([0.0, 0.005, 0.02])),
    _action("cancel_in", st.sampled_from([0.0, 0.002, 0.02, 0.1])),
    st.builds(Action, st.just("leave")),
    st.builds(Action, st.just("raise")),
)


@dataclass(frozen=True)
class Scenario:
    program: str
    group: bool
    stdout_piped: bool
    cancel_before_spawn: bool
    #: Seconds after spawning at which the block's scope is cancelled, wherever it is then
    #: (in an action, between actions, in the exit policy); None: never.
    cancel_after: float | None
    actions: list[Action]


SCENARIOS = st.builds(
    Scenario,
    program=st.sampled_from(sorted(PROGRAMS)),
    group=st.booleans(),
    stdout_piped=st.booleans(),
    cancel_before_spawn=st.sampled_from([False] * 7 + [True]),
    cancel_after=st.one_of(st.none(), st.sampled_from([0.0, 0.001, 0.005, 0.02, 0.05])),
    actions=st.lists(ACTIONS, min_size=1, max_size=8),
)


@dataclass
class State:
    child: Child
    scope: anyio.CancelScope
    background: bool
    user_closed_stdin: bool = False
    leave: bool = False
    lines: Any = None
    seen: list[str] = field(default_factory=list)


async def run_action(state: State, action: Action) -> None:
    child = state.child
    kind = action.kind
    try:
        if kind == "send":
            assert child.stdin is not None
            with anyio.move_on_after(action.budget):
                await child.stdin.send(b"x" * (action.arg - 1) + b"\n")
        elif kind == "receive":
            if child.stdout is not None:
                with anyio.move_on_after(action.budget):
                    data = await child.stdout.receive(action.arg)
                    assert 0 < len(data) <= action.arg
        elif kind == "lines":
            if child.stdout is not None:
                if state.lines is None:
                    state.lines = child.stdout.lines()
                with anyio.move_on_after(action.budget):
                    for _ in range(action.arg):
                        line = await anext(state.lines)
                        assert "\n" not in line
        elif kind == "read_all":
            if child.stdout is not None:
                with anyio.move_on_after(action.budget):
                    await child.stdout.read_all(max_bytes=action.arg)
        elif kind == "wait":
            with anyio.move_on_after(action.budget):
                status = await child.wait()
                assert child.returncode == int(status)
                assert child.try_wait() is status
        elif kind == "try_wait":
            polled = child.try_wait()
            if polled is not None:
                assert child.returncode == int(polled)
        elif kind == "signal":
            child.send_signal(action.arg)
        elif kind == "kill":
            child.kill()
        elif kind == "terminate":
            child.terminate()
        elif kind == "close_stdin":
            assert child.stdin is not None
            state.user_closed_stdin = True
            await child.stdin.aclose()
        elif kind == "sleep":
            await anyio.sleep(action.arg)
        elif kind == "cancel_in":
            state.scope.deadline = min(state.scope.deadline, anyio.current_time() + action.arg)
        elif kind == "leave":
            state.leave = True
        elif kind == "raise":
            raise FuzzError
        else:  # pragma: no cover
            raise AssertionError(kind)
    except (anyio.EndOfStream, StopAsyncIteration):
        pass  # the child (and any grandchild) closed stdout
    except anyio.BrokenResourceError:
        assert kind == "send", kind  # the child stopped reading, or wait() closed stdin
    except anyio.ClosedResourceError:
        # Reserved for streams the user or the block closed: only stdin, by close_stdin.
        assert kind == "send", kind
        assert state.user_closed_stdin
    except anyio.BusyResourceError:
        assert state.background, "busy without concurrent tasks"
    except OutputLimitExceeded:
        assert kind in ("read_all", "lines"), kind
    state.seen.append(kind)


def find_by_argv(marker: str) -> list[int]:
    """Pids of live processes whose argv is ``sleep <marker>``."""
    wanted = b"sleep\0" + marker.encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() == wanted and proc_state(int(name)) not in (None, "Z"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def build_command(scenario: Scenario, marker: str) -> Command:
    argv = PROGRAMS[scenario.program]
    if scenario.program in FORKS:
        argv = [*argv, marker]
    cmd = (
        Command(*argv)
        .stdin_piped()
        .stdout(Stdio.PIPE if scenario.stdout_piped else Stdio.NULL)
        .stderr(Stdio.NULL)
        .shutdown(timeout=SHUTDOWN_TIMEOUT)
    )
    return cmd.process_group(0) if scenario.group else cmd


def budget_of(scenario: Scenario) -> float:
    """The longest the body can take: every blocking action's budget and sleep, in series."""
    total = 0.0
    for action in scenario.actions:
        if action.kind == "sleep":
            total += action.arg
        total += action.budget
    return total


async def run_scenario(scenario: Scenario) -> None:
    fds = open_fds()
    kids = children()
    marker = _marker()
    cmd = build_command(scenario, marker)
    spawned: list[Child] = []
    raised: BaseException | None = None
    left_at: list[float] = []
    background = any(a.background for a in scenario.actions)
    # Whatever happens, the example ends within its actions' budgets plus the exit bound.
    limit = budget_of(scenario) + SHUTDOWN_TIMEOUT + EXIT_MARGIN + 2.0

    async def body(child: Child, scope: anyio.CancelScope) -> None:
        state = State(child, scope, background)
        try:
            if not background:
                for action in scenario.actions:
                    await run_action(state, action)
                    if state.leave:
                        break
                return
            async with anyio.create_task_group() as tg:
                for action in scenario.actions:
                    if action.background:
                        tg.start_soon(run_action, state, action)
                    else:
                        await run_action(state, action)
                    if state.leave:
                        break
        finally:
            left_at.append(time.monotonic())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with anyio.fail_after(limit), anyio.CancelScope() as scope:
                if scenario.cancel_before_spawn:
                    scope.cancel()
                async with spawn(cmd) as child:
                    spawned.append(child)
                    if scenario.cancel_after is not None:
                        scope.deadline = anyio.current_time() + scenario.cancel_after
                    await body(child, scope)
        except BaseException as exc:  # checked below, or re-raised
            raised = exc
        exited_at = time.monotonic()

    try:
        # -- the exceptions are the documented ones, unchanged ---------------------------
        if raised is not None:
            leaves = _leaves(raised)
            if not all(isinstance(e, FuzzError) for e in leaves):
                raise raised
            assert any(a.kind == "raise" for a in scenario.actions)
            if not background:
                assert type(raised) is FuzzError, "the body's exception was wrapped"
        # -- only the escalation warning, and only when SIGKILL was needed --------------
        for w in caught:
            assert issubclass(w.category, RuntimeWarning), w
            assert "SIGKILL" in str(w.message), w
        if not spawned:
            assert scenario.cancel_before_spawn
        for child in spawned:
            # -- left within the exit policy's bound --------------------------------------
            assert left_at, "the body never ran"
            assert exited_at - left_at[0] <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, (
                f"the block took {exited_at - left_at[0]:.2f} s to exit"
            )
            # -- reaped, pipes closed ------------------------------------------------------
            status = child.returncode
            assert status is not None
            assert child.try_wait() is not None
            assert proc_state(child.pid) is None, "the child is still in the process table"
            for stream in (child.stdin, child.stdout, child.stderr):
                assert stream is None or stream.closed
            if scenario.group:
                assert group_members(child.pid) == [], "the group outlived the block"
                assert find_by_argv(marker) == [], "a grandchild in the group survived"
        assert {p: s for p, s in children().items() if p not in kids} == {}
        assert join_our_threads(timeout=5) == []
        assert open_fds() == fds
    finally:
        # A grandchild outside the child's group is documented to survive: clean it up.
        for pid in find_by_argv(marker):
            os.kill(pid, signal.SIGKILL)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups; ``[exc]`` for a plain one."""
    inner: object = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple):  # a BaseExceptionGroup (builtin from 3.11)
        return [leaf for sub in inner for leaf in _leaves(sub)]
    return [exc]


def _run_examples(backend_id: str, max_examples: int, derandomize: bool) -> None:
    backend, options = BACKENDS[backend_id]

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(SCENARIOS)
    def example(scenario: Scenario) -> None:
        anyio.run(run_scenario, scenario, backend=backend, backend_options=options)

    example()


WAITERS = available_waiters()


@pytest.mark.parametrize("waiter", WAITERS, indirect=True)
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_random_programs_and_actions(backend_id: str, waiter: str) -> None:
    del waiter  # in force through ANYIO_PROC_WAITER
    _run_examples(backend_id, max_examples=20, derandomize=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("waiter", WAITERS, indirect=True)
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_random_programs_and_actions_many(backend_id: str, waiter: str) -> None:
    del waiter
    _run_examples(backend_id, max_examples=200, derandomize=False)
