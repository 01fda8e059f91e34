"""Every Python code block of README.md and docs/*.md runs, or says why it cannot.

The convention (also described in docs/index.md, "About these pages"):

- A block fenced as ```python is a whole program, and runs here in a subprocess of its own
  (in a temporary folder, in a session of its own): it must exit with 0 within the time limit
  and leave no process of its session running.
- A program whose last line is ``anyio.run(main)`` runs twice, on asyncio and on trio: that
  line, and nothing else, is rewritten as ``anyio.run(main, backend=...)``.
- A block that defines pytest tests (top-level ``test_*`` functions) is a test module: it
  runs under ``python -m pytest``, and its tests must pass.
- A block that cannot run alone (it uses names defined elsewhere, programs that are not
  installed, a top-level ``await``) is a fragment: the line just before its fence is
  ``<!-- fragment: why it does not run -->``. A fragment is still compiled (top-level ``await``
  allowed) and its imports are run, so a renamed API or a syntax error shows up.

A Python block that neither runs nor is marked fails its test. Other languages (``sh``,
``text``) are not Python and are not run.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from .running import BACKEND_ARGS, REPOSITORY, run_program

if TYPE_CHECKING:
    from pathlib import Path

PYTHON_INFO = {"python", "py", "python3"}
FRAGMENT = re.compile(r"<!--\s*fragment:\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
RUN_MAIN = re.compile(r"^anyio\.run\(main\)\s*(#.*)?$")
BLOCK_BACKENDS = ("asyncio", "trio")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, from 1
    language: str
    code: str
    before: str  # the line just before the opening fence

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def fragment_reason(self) -> str | None:
        match = FRAGMENT.fullmatch(self.before.strip())
        return None if match is None else match["reason"]

    @property
    def is_test_module(self) -> bool:
        try:
            tree = ast.parse(self.code)
        except SyntaxError:
            return False
        return any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
            for node in tree.body
        )

    @property
    def is_async_program(self) -> bool:
        lines = [line for line in self.code.splitlines() if line.strip()]
        return bool(lines) and RUN_MAIN.match(lines[-1]) is not None


def documentation_files() -> list[Path]:
    return [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file of the repository."""
    text = path.read_text(encoding="utf-8")
    return parse_blocks(text, path.relative_to(REPOSITORY).as_posix())


def parse_blocks(text: str, name: str) -> list[Block]:
    """The fenced code blocks of Markdown ``text``, as CommonMark delimits them: a fence
    closes with the same character, at least as many times, so a ```` fence can show a ```
    one."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            index += 1
            continue
        fence = opening["fence"]
        body = []
        end = index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[end])
            end += 1
        info = opening["info"].strip().split()
        blocks.append(
            Block(
                path=name,
                line=index + 1,
                language=info[0].lower() if info else "",
                code="\n".join(body) + "\n",
                before=lines[index - 1] if index > 0 else "",
            )
        )
        index = end + 1
    return blocks


def python_blocks() -> list[Block]:
    return [
        block
        for path in documentation_files()
        for block in code_blocks(path)
        if block.language in PYTHON_INFO
    ]


def cases() -> list[object]:
    params: list[object] = []
    for block in python_blocks():
        if block.fragment_reason is not None:
            params.append(pytest.param(block, None, id=f"{block.where}-fragment"))
        elif block.is_test_module:
            params.append(pytest.param(block, "pytest", id=f"{block.where}-pytest"))
        elif block.is_async_program:
            params.extend(
                pytest.param(block, backend, id=f"{block.where}-{backend}")
                for backend in BLOCK_BACKENDS
            )
        else:
            params.append(pytest.param(block, None, id=f"{block.where}-program"))
    return params


def with_backend(code: str, backend: str) -> str:
    """``code`` with its last line, ``anyio.run(main)``, choosing ``backend``."""
    name, options = BACKEND_ARGS[backend]
    lines = code.rstrip("\n").splitlines()
    last = max(i for i, line in enumerate(lines) if line.strip())
    lines[last] = f"anyio.run(main, backend={name!r}, backend_options={options!r})"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("block", "backend"), cases())
def test_code_block(block: Block, backend: str | None, tmp_path: Path) -> None:
    reason = block.fragment_reason
    if reason is not None:
        assert reason, f"{block.where}: a fragment marker says why the block does not run"
        check_fragment(block)
        return
    if backend == "pytest":
        program = tmp_path / "test_block.py"
        program.write_text(block.code, encoding="utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", program.name]
        how = " under pytest"
    else:
        program = tmp_path / "block.py"
        program.write_text(block.code if backend is None else with_backend(block.code, backend))
        argv = [sys.executable, program.name]
        how = f" on {backend}" if backend else ""
    finished = run_program(argv, cwd=tmp_path)
    assert finished.returncode == 0, (
        f"{block.where} does not run{how}; fix it, or mark it with <!-- fragment: why --> on "
        f"the line before its fence.\n{finished.report()}"
    )
    assert not finished.left_running, (
        f"{block.where} left processes running: {finished.left_running}"
    )


def check_fragment(block: Block) -> None:
    """A fragment compiles (with top-level await), and its imports work."""
    tree = compile(
        block.code,
        block.where,
        "exec",
        flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    assert isinstance(tree, ast.Module)
    compile(tree, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    imports: list[ast.stmt] = [
        node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    exec(compile(ast.Module(body=imports, type_ignores=[]), block.where, "exec"), {})


def test_fragment_markers_stand_before_python_blocks() -> None:
    """A marker anywhere else (before a blank line, a shell block) marks nothing: a mistake."""
    for path in documentation_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if FRAGMENT.fullmatch(line.strip()) is None:
                continue
            following = lines[number] if number < len(lines) else ""
            opening = FENCE.match(following)
            info = opening["info"].strip().split() if opening else []
            where = f"{path.relative_to(REPOSITORY)}:{number}"
            language = info[0].lower() if info else ""
            assert language in PYTHON_INFO, (
                f"{where}: a fragment marker must be the line just before a ```python fence"
            )


def test_the_block_reader() -> None:
    """The reader finds fences as CommonMark does: a longer fence holds a shorter one, a
    tilde fence is a fence, and a marker is read from the line before."""
    text = (
        "<!-- fragment: uses x -->\n"
        "```python\n"
        "x\n"
        "```\n"
        "````markdown\n"
        "```python\n"
        "not a block of its own\n"
        "```\n"
        "````\n"
        "~~~py\n"
        "anyio.run(main)\n"
        "~~~\n"
        "```python\n"
        "def test_it() -> None: ...\n"
        "```\n"
    )
    blocks = parse_blocks(text, "check.md")
    assert [(b.line, b.language) for b in blocks] == [
        (2, "python"),
        (5, "markdown"),
        (10, "py"),
        (13, "python"),
    ]
    assert blocks[0].fragment_reason == "uses x"
    assert blocks[1].code == "```python\nnot a block of its own\n```\n"
    assert blocks[2].fragment_reason is None
    assert blocks[2].is_async_program
    assert not blocks[2].is_test_module
    assert blocks[3].is_test_module
    assert with_backend(blocks[2].code, "trio") == (
        "anyio.run(main, backend='trio', backend_options={})\n"
    )
