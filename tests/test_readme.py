"""The README never lies: CI runs exactly the test command the README shows."""

from __future__ import annotations

import re

from .conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README must open with a code block holding its two commands"
    return [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_demo_and_test_commands():
    demo, tests = _readme_commands()
    assert "pip install" in demo and "scripts/demo.sh" in demo
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_demo_script_uses_the_demo_recipe():
    script = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    for step in ("train-tokenizer recipes/demo.yaml", "tx train recipes/demo.yaml", "tx translate", "tx attention-dump"):
        assert step in script
