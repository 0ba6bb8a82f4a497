from __future__ import annotations

import subprocess
import sys

from .conftest import run_tx


def test_help_lists_commands_without_importing_torch():
    code = ("import sys; from typer.testing import CliRunner; from txcli.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); "
            "assert 'torch' not in sys.modules, 'tx --help imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train-tokenizer" in result.stdout and "recipe" in result.stdout


def test_python_dash_m_works():
    result = run_tx("recipe", "--help")
    assert result.returncode == 0 and "check" in result.stdout


def test_core_does_not_import_cli_libraries():
    code = ("import sys; import txcli.model, txcli.checkpoint, txcli.data, txcli.tokenizer; "
            "bad = [m for m in ('typer', 'rich', 'yaml', 'pydantic') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
