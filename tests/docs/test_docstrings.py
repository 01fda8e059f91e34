"""The API reference is generated from the docstrings: every public name is in it, every
public coroutine says what cancelling it does, every error says when it is raised."""

from __future__ import annotations

import inspect
import re

import pytest

import anyio_proc
import anyio_proc.remote
import anyio_proc.services

from .running import REPOSITORY

PACKAGES = [anyio_proc, anyio_proc.services, anyio_proc.remote]
PUBLIC = [(package, name) for package in PACKAGES for name in package.__all__]


def public_coroutines() -> list[tuple[str, object]]:
    """Every public coroutine function: the packages' own, and the public methods (not the
    dunders, which the class's docstring covers) of their classes."""
    found: list[tuple[str, object]] = []
    for package, name in PUBLIC:
        obj = getattr(package, name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                function = getattr(value, "__func__", value)  # classmethod, staticmethod
                if not attr.startswith("_") and inspect.iscoroutinefunction(function):
                    found.append((f"{package.__name__}.{name}.{attr}", function))
        elif inspect.iscoroutinefunction(obj):
            found.append((f"{package.__name__}.{name}", obj))
    return found


COROUTINES = public_coroutines()


def test_the_coroutines_are_found() -> None:
    names = {name for name, _ in COROUTINES}
    assert {"anyio_proc.Child.wait", "anyio_proc.run_process"} <= names
    assert "anyio_proc.services.Supervisor.start" in names


@pytest.mark.parametrize(("name", "function"), COROUTINES, ids=[n for n, _ in COROUTINES])
def test_coroutine_says_what_cancelling_it_does(name: str, function: object) -> None:
    doc = inspect.getdoc(function) or ""
    assert "**Cancellation:**" in doc, f"{name}'s docstring has no **Cancellation:** paragraph"


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p.__name__}.{n}" for p, n in PUBLIC])
def test_error_says_when_it_is_raised(package: object, name: str) -> None:
    obj = getattr(package, name)
    if not (inspect.isclass(obj) and issubclass(obj, BaseException)):
        return
    doc = inspect.getdoc(obj) or ""
    assert doc.startswith("Raised when"), f"{name}'s docstring begins {doc[:40]!r}"


def test_every_public_name_is_in_the_reference() -> None:
    """Each name of the packages' __all__ has an autodoc entry in docs/reference/."""
    text = "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted((REPOSITORY / "docs" / "reference").glob("*.rst"))
    )
    documented = set()
    module = ""
    for line in text.splitlines():
        if match := re.match(r"\.\. (?:module|currentmodule|automodule):: ([\w.]+)", line):
            module = match[1]
        elif match := re.match(r"\.\. auto(?:class|function|data|exception):: ([\w.]+)", line):
            documented.add(f"{module}.{match[1]}")
    missing = [f"{p.__name__}.{n}" for p, n in PUBLIC if f"{p.__name__}.{n}" not in documented]
    assert not missing, f"not in docs/reference/*.rst: {missing}"
