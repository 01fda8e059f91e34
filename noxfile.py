"""Sessions: the suite on every installed Python, typing, lint, the examples, the docs."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "anyio_compat", "typing", "lint", "examples", "docs"]

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
        for example in sorted(Path("examples").glob("*.py")):
            session.run("python", str(example), backend)
        session.run("anyio-proc", "start", "-f", "examples/Procfile", "--backend", backend)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The Sphinx site, warnings as errors: docs/_build/html/index.html."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )
