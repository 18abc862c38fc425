"""README's promises: two set-up commands first, and CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block, "README has no shell block"
    assert readme.index(block.group(0)) < readme.index("\n## "), "commands come first"
    return block.group(1).strip().splitlines()


def test_readme_opens_with_two_commands():
    """README opens with an install-and-serve line and an install-and-test line."""
    serve, test = setup_commands()

    assert serve.endswith("sesrx serve")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    """.ci/run runs README's second command verbatim."""
    _, test = setup_commands()

    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
