"""The services are built on anyio_proc's public API only, as any application would be.

Every module of ``anyio_proc/services`` is parsed (not imported) and checked: what it
imports from the library is a public top-level name (``from anyio_proc import Child``),
never a private module (``anyio_proc._child``, ``from .. import _spawn``); what it imports
from another services module is not a ``_private`` name; and it touches no ``_private``
attribute of anything but ``self`` or ``cls`` (the Supervisor and its services talk
through named interfaces, not through each other's internals).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import anyio_proc
import anyio_proc.remote
import anyio_proc.services

PACKAGE = Path(anyio_proc.__file__).resolve().parent
SERVICES = PACKAGE / "services"
MODULES = sorted(SERVICES.glob("*.py"))
MOVED = [
    "Backoff",
    "OutputLine",
    "ReadyLine",
    "ReadyPort",
    "Restart",
    "Service",
    "ServiceEvent",
    "ServiceFailed",
    "Supervisor",
]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_services_module(module: str, name: str) -> bool:
    return module == "anyio_proc.services" and (SERVICES / f"{name}.py").is_file()


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an ``import from`` names, relative ones resolved against ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def layering_problems(source: str, package: str) -> list[str]:
    """What in ``source`` (a module of ``package``) reaches past the public API."""
    public = set(anyio_proc.__all__)
    public_remote = set(anyio_proc.remote.__all__)  # the remote hosts' public subpackage
    problems = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                inside = alias.name.startswith("anyio_proc.")
                if inside and not alias.name.startswith("anyio_proc.services"):
                    problems.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            names = [alias.name for alias in node.names]
            if module == "anyio_proc":
                problems += [f"{where}: {n} is not public" for n in names if n not in public]
            elif module == "anyio_proc.remote":
                problems += [f"{where}: {n} is not public" for n in names if n not in public_remote]
            elif module.startswith("anyio_proc.services"):
                # A services module by name (`from . import _events`) is fine; its privates not.
                problems += [
                    f"{where}: {module}.{n} is private"
                    for n in names
                    if _private(n) and not _is_services_module(module, n)
                ]
            elif module.startswith("anyio_proc"):
                problems.append(f"{where}: from {module} import {', '.join(names)}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                problems.append(f"{where}: {ast.unparse(node)}")
    return problems


def test_there_are_modules_to_check() -> None:
    # A moved folder would make the checks below pass vacuously.
    assert {p.name for p in MODULES} >= {"__init__.py", "_supervisor.py", "_service.py"}


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_services_use_the_public_api_only(path: Path) -> None:
    assert layering_problems(path.read_text(), "anyio_proc.services") == []


def test_the_check_catches_what_it_is_for() -> None:
    # The checker itself, on the shapes of reaching in it must refuse.
    bad = (
        "from anyio_proc._child import Child\n"
        "from .._os.pipes import set_blocking\n"
        "from .. import _spawn\n"
        "from anyio_proc import Supervisor\n"
        "import anyio_proc._streams\n"
        "from ._service import _Run\n"
        "sup._event(None)\n"
    )
    problems = layering_problems(bad, "anyio_proc.services")
    assert len(problems) == 7, problems
    good = (
        "from anyio_proc import Child, Command\n"
        "from ._service import Service\n"
        "from . import _events\n"
        "import anyio_proc\n"
        "self._x = cls._y = obj.__class__\n"
    )
    assert layering_problems(good, "anyio_proc.services") == []


def test_the_service_names_live_in_services_only() -> None:
    # Moved without aliases left behind (0.x): one place to import them from.
    for name in MOVED:
        assert not hasattr(anyio_proc, name), name
        assert name not in anyio_proc.__all__
    assert "RestartPolicy" in anyio_proc.services.__all__
    for name in anyio_proc.services.__all__:
        obj = getattr(anyio_proc.services, name)
        if isinstance(obj, type):  # ReadyCheck is a Union: it has no module of its own
            assert obj.__module__ == "anyio_proc.services", name


def test_the_core_does_not_import_the_services() -> None:
    # The services sit on top: nothing below imports them (the CLI's entry point aside).
    for path in sorted(PACKAGE.rglob("*.py")):
        if SERVICES in path.parents or path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert "services" not in module.split("."), f"{path}: {module}"
