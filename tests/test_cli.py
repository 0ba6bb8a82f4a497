from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


CORE = ("model", "search", "training", "batching", "data", "attention", "checkpoint", "tokenizer", "precision",
        "decoding", "streams", "events", "alignment", "explorer", "curves", "kv_cache", "model_schema",
        "options", "atomic", "quantize", "marian", "sentencepiece_tokenizer")


@pytest.mark.parametrize("module", CORE)
def test_core_does_not_import_cli_libraries(module):
    """Dependencies point one way: the core (each module alone, in a fresh interpreter) loads
    none of the CLI's libraries and none of the command layer."""
    code = (f"import sys; import txcli.{module}; "
            "bad = [m for m in ('typer', 'rich', 'yaml', 'pydantic', 'txcli.cli', 'txcli.recipe', 'txcli.views', "
            "'txcli.progress', 'txcli.commands') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_core_modules_listed_are_all_there_are():
    """A new module in txcli/ must be placed: in CORE, or in the CLI/command layer named here."""
    import txcli

    layer = {"cli", "cli_models", "__main__", "recipe", "safe_yaml", "views", "progress", "errors", "openmp", "heap", "__init__"}
    found = {p.stem for p in Path(txcli.__file__).parent.glob("*.py")}
    assert found - layer == set(CORE), found - layer ^ set(CORE)


def test_version_and_help_in_the_order_of_the_work():
    version = run_tx("--version")
    assert version.returncode == 0 and version.stdout.startswith("tx 0."), version.stdout
    shown = run_tx("--help").stdout
    order = ["recipe", "train-tokenizer", "train ", "average", "export", "translate", "score", "evaluate",
             "attention-dump", "inspect"]
    positions = [shown.index(f"│ {name}") for name in order]
    assert positions == sorted(positions), shown
    assert "--install-completion" in shown


def test_decoding_options_are_declared_once_and_reach_the_command(tiny_run, monkeypatch):
    """translate and evaluate share one option set; every flag lands in DecodeOptions."""
    from typer.testing import CliRunner

    import txcli.commands.run as run_module
    import txcli.engines.torch_engine as torch_engine
    from txcli.cli import app

    seen = []

    def capture(run, opts):
        seen.append(opts)
        raise run_module.UsageError("captured")

    monkeypatch.setattr(torch_engine, "run_decoding", capture)
    flags = ["--beam", "3", "--alpha", "0.2", "--max-len-a", "0.5", "--max-len-b", "7", "--min-len", "1",
             "--no-repeat-ngram", "2", "--batch-tokens", "99", "--sample", "--temperature", "0.7", "--top-k", "4",
             "--top-p", "0.8", "--seed", "9", "--precision", "auto"]
    for command in (["translate", str(tiny_run)], ["evaluate", str(tiny_run)]):
        result = CliRunner().invoke(app, command + flags + ["--device", "cpu"])
        assert result.exit_code == 2 and "captured" in result.stderr, result.output
    for opts in seen:
        assert (opts.beam, opts.alpha, opts.max_len_a, opts.max_len_b, opts.min_len, opts.no_repeat_ngram,
                opts.batch_tokens, opts.sample, opts.temperature, opts.top_k, opts.top_p, opts.seed,
                opts.precision) == (3, 0.2, 0.5, 7, 1, 2, 99, True, 0.7, 4, 0.8, 9, "auto")
    assert len(seen) == 2
