"""pytest plugin: anyio's own subprocess tests, run on anyio_proc's functions.

``run_anyio_subprocess_tests.py`` loads this with ``-p anyio_proc_substitution``. pytest
imports ``-p`` plugins while it parses its arguments, before it imports any conftest or
test module; importing this one replaces ``anyio.open_process``/``anyio.run_process`` (and
the same names in ``anyio._core._subprocesses``) with counting wrappers around anyio_proc's,
so the test module's ``from anyio import open_process, run_process`` binds those. anyio's
files are run byte for byte as published: nothing is rewritten.

Proof that the tests exercise anyio_proc and nothing else:

* at collection, every test module that names ``open_process``/``run_process`` must hold
  our wrappers under those names (else the run stops with a usage error);
* anyio's own backend ``open_process`` (the only way anyio starts a process) is replaced by
  a tripwire that raises and is counted;
* each test that passed must have called a wrapper at least once and must not have tripped
  the wire, else it is turned into a failure;
* at the end the counts are written as JSON to ``$ANYIO_PROC_PROBE_FILE`` for the runner.

blockbuster is hidden from anyio's conftest (which then runs without it, as it does when
blockbuster is not installed): it decides what to scan by file-path prefix, and
``.../site-packages/anyio`` is a prefix of ``.../site-packages/anyio_proc``, so it would
scan anyio_proc in a regular install but not in an editable one. There it flags the
synchronous spawn (``subprocess.Popen``'s exec handshake, a procfs ``stat``), which anyio's
own asyncio backend also does in the event loop and which anyio's conftest exempts by
excluding that backend. A result that depends on how the package was installed is no test.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio._core._subprocesses as anyio_subprocesses
import pytest

import anyio_proc

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Generator

__all__ = ["OUT_OF_SCOPE", "PROBE_FILE_ENV"]

PROBE_FILE_ENV = "ANYIO_PROC_PROBE_FILE"
_PATCHED_NAMES = ("open_process", "run_process")

#: Tests of anyio's internals rather than of the open_process/run_process contract, keyed
#: by test function name (every parametrization), each with the reason it does not apply.
OUT_OF_SCOPE: dict[str, str] = {
    "test_arguments_passed_through": (
        "mocks the class that anyio.get_async_backend() returns and asserts that anyio's "
        "front-end open_process() forwards its keyword arguments verbatim to that class's "
        "open_process(); anyio_proc starts processes itself and never calls an anyio backend, "
        "so there is no such call to observe (the arguments are exercised for real by "
        "test_process_cwd, test_process_env, test_process_new_session_sid, "
        "test_user_group_arguments and the *_connect_to_file tests)"
    ),
}


@dataclass
class _Probe:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PATCHED_NAMES, 0))
    per_test: dict[str, dict[str, int]] = field(default_factory=dict)
    backend_calls: list[str] = field(default_factory=list)
    current: str | None = None
    deselected: dict[str, str] = field(default_factory=dict)
    missing_out_of_scope: list[str] = field(default_factory=list)

    def record(self, name: str) -> None:
        self.calls[name] += 1
        if self.current is not None:
            self.per_test[self.current][name] += 1


_probe = _Probe()


@functools.wraps(anyio_proc.open_process)
async def open_process(*args: Any, **kwargs: Any) -> anyio_proc.Child:
    _probe.record("open_process")
    child = await anyio_proc.open_process(*args, **kwargs)
    # What the tests drive must be our Child, not something a backend made.
    assert type(child) is anyio_proc.Child, type(child)
    return child


@functools.wraps(anyio_proc.run_process)
async def run_process(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    _probe.record("run_process")
    return await anyio_proc.run_process(*args, **kwargs)


def _tripwire(backend: str) -> Any:
    async def open_process(*args: Any, **kwargs: Any) -> NoReturn:
        _probe.backend_calls.append(f"{backend}: {_probe.current}")
        raise AssertionError(f"anyio's own {backend} open_process() was called")

    return classmethod(open_process)


def _install() -> None:
    # None in sys.modules makes ``from blockbuster import ...`` raise ImportError.
    sys.modules["blockbuster"] = None  # type: ignore[assignment]
    anyio.open_process = open_process
    anyio.run_process = run_process
    anyio_subprocesses.open_process = open_process
    anyio_subprocesses.run_process = run_process
    import anyio._backends._asyncio as asyncio_backend

    asyncio_backend.AsyncIOBackend.open_process = _tripwire("asyncio")  # type: ignore[method-assign]
    try:
        import anyio._backends._trio as trio_backend
    except ImportError:  # trio is not installed: anyio's conftest skips that backend
        return
    trio_backend.TrioBackend.open_process = _tripwire("trio")  # type: ignore[method-assign]


# At import: pytest imports ``-p`` plugins before it loads even the initial conftests, so
# nothing of anyio's can bind the originals first.
_install()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    ours = {"open_process": open_process, "run_process": run_process}
    seen: set[str] = set()
    for item in items:
        module = getattr(item, "module", None)
        for name, wrapper in ours.items():
            bound = getattr(module, name, None)
            if bound is not None and bound is not wrapper:
                raise pytest.UsageError(
                    f"{item.nodeid}: {name} is {bound!r}, not anyio_proc's; the test module "
                    "did not import it from anyio after this plugin patched anyio"
                )
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        name = getattr(item, "originalname", item.name)
        seen.add(name)
        if name in OUT_OF_SCOPE:
            dropped.append(item)
            _probe.deselected[item.nodeid] = OUT_OF_SCOPE[name]
        else:
            kept.append(item)
    _probe.missing_out_of_scope = sorted(set(OUT_OF_SCOPE) - seen)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _probe.current = item.nodeid
    _probe.per_test[item.nodeid] = dict.fromkeys(_PATCHED_NAMES, 0)
    tripped_before = len(_probe.backend_calls)
    try:
        result = yield
    finally:
        _probe.current = None
    # Reached only when the test itself passed: it must have passed through our code.
    if not any(_probe.per_test[item.nodeid].values()):
        raise AssertionError("the test passed without calling anyio_proc.open_process/run_process")
    if len(_probe.backend_calls) > tripped_before:
        raise AssertionError("the test passed, but anyio's own open_process() was called")
    return result


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    tr.section("anyio_proc substitution probe")
    tr.write_line(
        f"anyio_proc.open_process called {_probe.calls['open_process']} times, "
        f"anyio_proc.run_process {_probe.calls['run_process']} times, "
        f"in {len(_probe.per_test)} tests; anyio's own backend open_process called "
        f"{len(_probe.backend_calls)} times"
    )
    for name, reason in OUT_OF_SCOPE.items():
        ids = [nodeid for nodeid, why in _probe.deselected.items() if why is reason]
        if ids:
            tr.write_line(f"deselected {name} ({len(ids)} parametrizations): {reason}")
    for name in _probe.missing_out_of_scope:
        tr.write_line(f"note: out-of-scope test {name} does not exist in this anyio version")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(PROBE_FILE_ENV)
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(
            {
                "calls": _probe.calls,
                "per_test": _probe.per_test,
                "backend_calls": _probe.backend_calls,
                "deselected": _probe.deselected,
            },
            f,
            indent=1,
        )
