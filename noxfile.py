"""Sessions: the suite on every installed Python, typing, lint, and the examples."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "anyio_compat", "typing", "lint", "examples"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHONS)
def anyio_compat(session: nox.Session) -> None:
    """anyio's own tests/test_subprocesses.py against our open_process/run_process."""
    session.install("-e", ".[test]", "-r", "compat_suites/requirements.txt")
    session.run("python", "compat_suites/run_anyio_subprocess_tests.py", *session.posargs)


@nox.session(python="3.11")
def tests_without_trio(session: nox.Session) -> None:
    """The library must import and work on asyncio alone."""
    session.install("-e", ".", "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100")
    session.run("python", "examples/quickstart.py")


@nox.session(python="3.11")
def typing(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    for platform in ("linux", "darwin", "win32"):
        session.run("mypy", "--platform", platform, "anyio_proc")
    session.run("mypy", "tests", "examples", "benchmarks", "compat_suites")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    session.install("-e", ".[trio,uvloop]")
    for backend in ("asyncio", "uvloop", "trio"):
        session.run("python", "examples/quickstart.py", backend)
        session.run("anyio-proc", "start", "-f", "examples/Procfile", "--backend", backend)
