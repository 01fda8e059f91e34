"""The rules of ``anyio_proc/_os/`` (DESIGN.md section 9), read from the source.

- Nothing outside ``_os/`` tests the OS it runs on (``sys.platform``, ``os.name``, the
  ``platform`` module): supporting another OS means working in that folder only.
- ``_os/`` is a lower floor: from the rest of the package it imports only the values
  (``_spec``, ``_status``) and the bottom helpers (``_polling``), never what sits above it.
- No module reaches into an ``_os`` module's private names, and no ``_os`` module into
  another's: what a module needs from another has an internal public name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import anyio_proc

PACKAGE = Path(anyio_proc.__file__).resolve().parent
OS_DIR = PACKAGE / "_os"
#: What ``_os/`` may import from the package outside itself.
BELOW_OS = {"_spec", "_status", "_polling", "_pacing"}


def modules(where: Path) -> list[Path]:
    return sorted(where.rglob("*.py"))


def outside_os() -> list[Path]:
    return [path for path in modules(PACKAGE) if OS_DIR not in path.parents]


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def dotted_name(path: Path) -> str:
    """``anyio_proc._os.tree`` for ``.../anyio_proc/_os/tree.py``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of the module ``node`` imports from."""
    if not node.level:
        return node.module or ""
    package = dotted_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def platform_tests(path: Path) -> list[str]:
    """Every place ``path`` asks which OS it runs on, as ``line: what``."""
    found = []
    aliases: dict[str, str] = {}  # local name -> module, for `import sys as _sys`
    tree = parse(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name == "platform":
                    found.append(f"{node.lineno}: import platform")
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if (node.module, alias.name) in (("sys", "platform"), ("os", "name")):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                if node.module == "platform":
                    found.append(f"{node.lineno}: from platform import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if (module, node.attr) in (("sys", "platform"), ("os", "name")):
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_platform_test_outside_os() -> None:
    found = {
        str(path.relative_to(PACKAGE)): tests
        for path in outside_os()
        if (tests := platform_tests(path))
    }
    assert found == {}, "OS tests belong in anyio_proc/_os/"


def test_the_platform_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    # The rule above passes vacuously if the scan finds nothing anywhere: it finds _os's.
    assert platform_tests(OS_DIR / "groups.py")
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, sys as _sys\nfrom sys import platform\nimport platform as p\n"
        "a = _sys.platform == 'linux'\nb = os.name\nc = 'sys.platform'  # sys.platform\n"
    )
    assert sorted(entry.split(":")[0] for entry in platform_tests(sample)) == ["2", "3", "4", "5"]


def test_os_imports_nothing_from_the_floors_above() -> None:
    wrong = []
    for path in modules(OS_DIR):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom):
                names = [absolute(path, node)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "anyio_proc" or parts[1:2] == ["_os"]:
                    continue
                if len(parts) == 1:  # `from .. import x`: x is a module of the package
                    assert isinstance(node, ast.ImportFrom)
                    below = {alias.name for alias in node.names} <= BELOW_OS
                else:
                    below = parts[1] in BELOW_OS
                if not below:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert wrong == []


def private_uses_of_os_modules(path: Path) -> list[str]:
    """``_name``s of ``anyio_proc._os`` modules (other than ``path`` itself) that ``path``
    imports or reads as attributes."""
    found = []
    this = dotted_name(path)
    bound: dict[str, str] = {}  # local name -> the _os module it names
    tree = parse(path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = absolute(path, node)
        if not source.startswith("anyio_proc._os") or source == this:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{node.lineno}: from {source} import {alias.name}")
            else:
                # It may be a module (`from ._os import launch as _launch`): remember it.
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    found.extend(
        f"{node.lineno}: {bound[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in bound
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    )
    return found


@pytest.mark.parametrize("where", ["_os", "the rest"])
def test_no_private_name_of_an_os_module_is_used_elsewhere(where: str) -> None:
    paths = modules(OS_DIR) if where == "_os" else outside_os()
    found = {
        str(path.relative_to(PACKAGE)): uses
        for path in paths
        if (uses := private_uses_of_os_modules(path))
    }
    assert found == {}
