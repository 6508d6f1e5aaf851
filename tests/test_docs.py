"""The docs' examples run, and the README's promises hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_doc_examples_run(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every Python block of a page runs without error, in order, in one namespace."""
    namespace: dict[str, object] = {"__name__": "__main__"}  # as a script: guards run too
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)
    del namespace


def test_every_capability_page_has_an_example() -> None:
    """Each docs page but the index and the architecture shows runnable code."""
    for page in (ROOT / "docs").glob("*.md"):
        if page.stem not in {"index", "architecture"}:
            assert python_blocks(page), f"{page.name} has no Python example"


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the README's second Quick start command."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick_start, re.DOTALL)
    assert len(commands) == 2, "the Quick start has exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
