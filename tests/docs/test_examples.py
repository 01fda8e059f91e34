"""Every program in examples/ runs to exit code 0 on asyncio, uvloop and trio, and leaves
no process of its session running (each one also checks its own claims as it goes)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from .running import BACKEND_ARGS, REPOSITORY, run_program

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLES = sorted((REPOSITORY / "examples").glob("*.py"))


def test_each_topic_page_has_its_example() -> None:
    """The guide's topic pages link the example that shows them, and the links work."""
    pages = {
        "pipelines.md": "pipeline.py",
        "pty.md": "pty_session.py",
        "services.md": "supervisor.py",
        "process-trees.md": "process_tree.py",
    }
    for page, example in pages.items():
        text = (REPOSITORY / "docs" / page).read_text(encoding="utf-8")
        assert f"](../examples/{example})" in text, f"docs/{page} links examples/{example}"
        assert (REPOSITORY / "examples" / example) in EXAMPLES


@pytest.mark.parametrize("backend", list(BACKEND_ARGS))
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example(example: Path, backend: str, tmp_path: Path) -> None:
    finished = run_program([sys.executable, str(example), backend], cwd=tmp_path)
    assert finished.returncode == 0, f"examples/{example.name} on {backend}: {finished.report()}"
    assert not finished.left_running, (
        f"examples/{example.name} on {backend} left processes running: {finished.left_running}"
    )


def test_a_program_that_leaves_a_process_behind_is_caught(tmp_path: Path) -> None:
    """The check the tests above rely on: a process left running in the program's session
    is found (and killed), an exited one is not counted."""
    program = (
        "import subprocess, sys\n"
        "subprocess.Popen(['sleep', '60'])\n"  # left running: the program does not wait
        "subprocess.run(['true'])\n"
    )
    finished = run_program([sys.executable, "-c", program], cwd=tmp_path)
    assert finished.returncode == 0, finished.report()
    assert len(finished.left_running) == 1
    assert finished.left_running[0].endswith("sleep 60 ")
