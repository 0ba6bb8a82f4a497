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


# the layers (and the core's freedom from the CLI's libraries): tests/test_layers.py


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
    """translate, evaluate and attention-dump share one option set; every flag lands in DecodeOptions."""
    from typer.testing import CliRunner

    import txcli.commands.attention as attention_module
    import txcli.commands.run as run_module
    import txcli.engines.torch_engine as torch_engine
    from txcli.cli import app

    seen = []

    def capture(run, opts):
        seen.append(opts)
        raise run_module.UsageError("captured")

    monkeypatch.setattr(torch_engine, "run_decoding", capture)
    monkeypatch.setattr(attention_module, "run_decoding", capture)
    flags = ["--beam", "3", "--alpha", "0.2", "--max-len-a", "0.5", "--max-len-b", "7", "--min-len", "1",
             "--no-repeat-ngram", "2", "--batch-tokens", "99", "--sample", "--temperature", "0.7", "--top-k", "4",
             "--top-p", "0.8", "--seed", "9", "--precision", "auto"]
    for command in (["translate", str(tiny_run)], ["evaluate", str(tiny_run)],
                    ["attention-dump", str(tiny_run), "--src", "a b"]):
        result = CliRunner().invoke(app, command + flags + ["--device", "cpu"])
        assert result.exit_code == 2 and "captured" in result.stderr, result.output
    for opts in seen:
        assert (opts.beam, opts.alpha, opts.max_len_a, opts.max_len_b, opts.min_len, opts.no_repeat_ngram,
                opts.batch_tokens, opts.sample, opts.temperature, opts.top_k, opts.top_p, opts.seed,
                opts.precision) == (3, 0.2, 0.5, 7, 1, 2, 99, True, 0.7, 4, 0.8, 9, "auto")
    assert len(seen) == 3
