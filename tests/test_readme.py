"""The README never lies: its first block holds the two commands it promises, CI runs the test
command verbatim, and every `tx ...` command the README (and the demo script it runs) shows names
a real command with flags that command accepts."""

from __future__ import annotations

import re
import shlex

import pytest

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
VENV = "python3 -m venv .venv && . .venv/bin/activate && "


def _readme_commands() -> list[str]:
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", README, re.S)
    assert first_block, "README must open with a code block holding its two commands"
    return [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_demo_and_test_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    # "Both need only Python 3.10+ (they create .venv in the repository)"
    assert demo.startswith(VENV) and tests.startswith(VENV), commands
    assert demo == VENV + "pip install -e . && bash scripts/demo.sh"
    assert (ROOT / "scripts" / "demo.sh").is_file()
    assert re.fullmatch(re.escape(VENV) + r"pip install -q -e '\.\[test,ct2,serve\]' && python -m pytest -q", tests), tests


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_demo_script_uses_the_demo_recipe():
    script = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    for step in ("train-tokenizer recipes/demo.yaml", "tx train recipes/demo.yaml", "tx translate", "tx attention-dump"):
        assert step in script


# --------------------------------------------------------------------------- every tx command shown


def _shell_lines(text: str) -> list[str]:
    """Lines of shell: backslash continuations joined, a leading '$ ' prompt dropped."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        lines.append(line[2:] if line.startswith("$ ") else line)
    return lines


def _tx_invocations(line: str) -> list[list[str]]:
    """The words of every `tx` command on a shell line (pipelines split, comments and redirections
    left out)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found, current = [], None
    for word in words:
        if word in ("|", "&&", ";"):
            current = None
        elif word == "tx" and current is None:
            current = []
            found.append(current)
        elif current is not None:
            current.append(word)
    return [[w for i, w in enumerate(inv) if w not in ("<", ">") and (i == 0 or inv[i - 1] not in ("<", ">"))]
            for inv in found]


def _shown_commands() -> list[tuple[str, list[str]]]:
    """(where, words after `tx`) for every tx command in the README's code blocks and inline code,
    and in the demo script the README's first command runs."""
    shown = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        for line in _shell_lines(block):
            shown += [(f"README: {line}", inv) for inv in _tx_invocations(line)]
    for span in re.findall(r"`(tx [^`]*)`", README):
        span = re.sub(r"\[([^]]*)\]", r"\1", span)  # optional parts, as in `tx train RECIPE [--resume]`
        shown += [(f"README: `{span}`", inv) for inv in _tx_invocations(span)]
    for line in _shell_lines((ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")):
        shown += [(f"scripts/demo.sh: {line}", inv) for inv in _tx_invocations(line)]
    return shown


def _resolve(group, words: list[str]):
    """The click command the words name (groups followed down) and the words that name it."""
    command, path = group, []
    for word in words:
        if not hasattr(command, "commands") or word.startswith("-"):  # a group has subcommands
            break
        assert word in command.commands, f"`tx {' '.join(path + [word])}`: no such command"
        command, path = command.commands[word], path + [word]
    return command, path


def _options(command) -> set[str]:
    opts = {"--help"}
    for param in command.params:
        opts.update(getattr(param, "opts", []))
        opts.update(getattr(param, "secondary_opts", []))
    return opts


def test_every_tx_command_shown_exists_and_takes_its_flags():
    import typer.main
    from typer.testing import CliRunner

    from txcli.cli import app

    shown = _shown_commands()
    assert len(shown) >= 30, len(shown)  # the parser finds the README's commands
    root = typer.main.get_command(app)
    checked = set()
    for where, words in shown:
        command, path = _resolve(root, words)
        flags = {w.split("=", 1)[0] for w in words[len(path):] if re.fullmatch(r"--?[a-z][a-z0-9-]*(=.*)?", w)}
        unknown = flags - _options(command) - ({"--version", "--install-completion"} if not path else set())
        assert not unknown, f"{where}: `tx {' '.join(path)}` has no {', '.join(sorted(unknown))}"
        if path and tuple(path) not in checked:
            checked.add(tuple(path))
            result = CliRunner().invoke(app, path + ["--help"])
            assert result.exit_code == 0, f"`tx {' '.join(path)} --help`: {result.output}"
    for name in ("translate", "evaluate", "attention-dump", "inspect", "recipe", "export"):
        assert any(p[0] == name for p in checked), name


@pytest.mark.parametrize("line,expected", [
    ("zcat news.gz | tx translate runs/demo --beam 1 | gzip > out.gz", [["translate", "runs/demo", "--beam", "1"]]),
    ('tx translate runs/demo < in.txt > out.txt   # N lines', [["translate", "runs/demo"]]),
    ('head -n 5 a | tx translate r && tx evaluate r --json', [["translate", "r"], ["evaluate", "r", "--json"]]),
])
def test_the_command_reader_reads_pipelines(line, expected):
    assert _tx_invocations(line) == expected
