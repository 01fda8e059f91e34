"""Test matrix and leak checks.

Every async test runs on asyncio, asyncio + uvloop and trio, and under every exit waiter
this machine supports (pidfd and the thread fallback on Linux): one ``pytest`` run covers
them all. After every test, an autouse fixture fails it if a child of the test process is
left running or unreaped, if an fd it opened is still open, or if a waiter thread is left.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import TYPE_CHECKING, Any

import anyio
import hypothesis  # noqa: F401  (imported before gc.freeze(): its start-up checks use gc)
import pytest

from anyio_proc._os.waiters import ENV_VAR, available_waiters

from .helpers import children, join_our_threads, kill_and_reap, open_fds

if TYPE_CHECKING:
    from collections.abc import Iterator

BACKENDS: list[Any] = [
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def pytest_configure(config: pytest.Config) -> None:
    # Started as a background job of a non-interactive shell (a CI script's `cmd &`), the
    # suite inherits SIGINT ignored, and so would every child: a REPL on a terminal would
    # shrug off Ctrl-C. A handled signal is reset to the default at exec, so restoring
    # Python's own handler here gives the children the disposition the tests assume.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Async tests (the anyio plugin gives them the anyio_backend fixture) run once per
    # waiter; sync tests run once, with the automatic choice.
    if "anyio_backend" in metafunc.fixturenames and "waiter" in metafunc.fixturenames:
        metafunc.parametrize("waiter", available_waiters(), indirect=True)


@pytest.fixture(autouse=True)
def waiter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The exit waiter in force for this test (through ``ANYIO_PROC_WAITER``)."""
    name: str = getattr(request, "param", None) or available_waiters()[0]
    monkeypatch.setenv(ENV_VAR, name)
    return name


@pytest.fixture(autouse=True, scope="session")
def _warm_up_backends() -> None:
    """Start each event loop once, so one-time global resources are not counted as leaks
    (libuv makes a process-wide signal pipe the first time a uvloop loop is created)."""

    async def nothing() -> None:
        pass

    for param in BACKENDS:
        name, options = param.values[0]
        anyio.run(nothing, backend=name, backend_options=options)
    # Every test module is imported by now: move what exists to the permanent generation,
    # so the full collection the leak check runs after each test only looks at what tests
    # made (50 ms -> under 1 ms; 2000 tests).
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_leaks(_warm_up_backends: None, request: pytest.FixtureRequest) -> Iterator[None]:
    fds_before = open_fds()
    kids_before = children()
    yield
    problems = []
    threads = join_our_threads(timeout=10)
    if threads:
        problems.append(f"waiter threads still running: {[t.name for t in threads]}")
    leftover = {pid: st for pid, st in children().items() if pid not in kids_before}
    if leftover:
        kill_and_reap(leftover)
        problems.append(f"children left behind (pid: state, Z = unreaped): {leftover}")
    fds_after = open_fds()
    leaked = {fd: what for fd, what in fds_after.items() if fds_before.get(fd) != what}
    if leaked:
        for fd in leaked:
            try:
                os.close(fd)
            except OSError:
                pass
        problems.append(f"fds left open: {leaked}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
