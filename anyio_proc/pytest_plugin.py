"""A pytest plugin that fails a test which leaves a child process or a pipe behind.

Installed with anyio_proc (the ``pytest11`` entry point ``anyio_proc``) and off until asked
for: ``pytest --anyio-proc-leaks`` checks every test; the marker
``@pytest.mark.anyio_proc_leaks`` or the fixture ``no_process_leaks`` checks one test (or a
module, a class); ``@pytest.mark.anyio_proc_leaks(False)`` leaves one test unchecked under
the flag.

A checked test fails (an error at its teardown) when, once its function-scoped fixtures are
torn down, a child of the test process that was not there before its setup is still
running or is a zombie nobody reaped, or a pipe, pidfd or terminal that was opened
meanwhile is still open. The message names each process (pid, state, argv, and the lines
of the tests' code that started it) and each fd. The processes are then killed and reaped,
so that the next test starts clean; fds are left to whoever holds them. What a wider
fixture (class, module, session scope) starts while it is set up is not the test's.

Whatever starts the process: anyio_proc, anyio, asyncio, trio, ``subprocess``,
``os.posix_spawn``, ``os.fork``. Linux only (the check reads ``/proc``); elsewhere nothing is
checked and the header says so. The guide: ``docs/testing.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._leaks import Checker

__all__ = ["no_process_leaks"]

_FLAG = "--anyio-proc-leaks"
_MARKER = "anyio_proc_leaks"
_FIXTURE = "no_process_leaks"

_wanted = pytest.StashKey[bool]()
_checker = pytest.StashKey["Checker | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("anyio_proc").addoption(
        _FLAG,
        action="store_true",
        dest="anyio_proc_leaks",
        help="fail a test that leaves a child process (running or unreaped) or a pipe or "
        "pidfd open behind it (anyio_proc; Linux)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(enabled=True): fail the test if it leaves a child process or a pipe or "
        f"pidfd behind (anyio_proc); enabled=False: do not check it, even with {_FLAG}",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.getoption("anyio_proc_leaks"):
        return None
    from ._os.leaks import SUPPORTED

    if not SUPPORTED:
        return "anyio_proc: the leak check needs Linux's /proc; no test is checked here"
    if pytest.version_tuple < (8,):
        return "anyio_proc: the leak check needs pytest 8; no test is checked here"
    return "anyio_proc: checking every test for left-over processes and pipes"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    every = bool(config.getoption("anyio_proc_leaks"))
    wanted = False
    for item in items:
        if _asks(item, every):
            item.stash[_wanted] = wanted = True
    if wanted:
        _checker_of(config)  # registered only now: a run that asks for nothing pays nothing


def _asks(item: pytest.Item, every: bool) -> bool:
    if _FIXTURE in getattr(item, "fixturenames", ()):
        return True
    marker = item.get_closest_marker(_MARKER)
    if marker is None:
        return every
    return bool(marker.kwargs.get("enabled", marker.args[0] if marker.args else True))


@pytest.fixture
def no_process_leaks(request: pytest.FixtureRequest) -> None:
    """Fail this test if it leaves a child process running or unreaped, or a pipe, pidfd or
    terminal open, once its function-scoped fixtures are torn down (Linux; elsewhere it
    does nothing). Asked for as an argument or with ``usefixtures``, it watches from the
    start of the test's setup; through ``request.getfixturevalue()``, from then on."""
    item = request.node
    checker = _checker_of(request.config)
    if checker is not None and isinstance(item, pytest.Item) and not checker.checking(item):
        checker.start(item)


def _checker_of(config: pytest.Config) -> Checker | None:
    """The check's hooks, registered on first use; None where the check cannot run."""
    if _checker not in config.stash:
        from ._os.leaks import SUPPORTED

        checker = None
        # pytest 8: the hooks are new-style wrappers (pluggy 1.2 and later).
        if SUPPORTED and pytest.version_tuple >= (8,):
            from ._leaks import Checker

            checker = Checker(str(config.rootpath), lambda item: item.stash.get(_wanted, False))
            config.pluginmanager.register(checker, "anyio_proc-leak-check")
        config.stash[_checker] = checker
    return config.stash[_checker]
