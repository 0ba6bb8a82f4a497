"""`tx inspect`: a readable summary of a run directory, whatever stage the run is at."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from txcli.checkpoint import METRICS_FILE, MODEL_FILE
from txcli.commands.inspect import count_parameters, inspect_run, read_history
from txcli.commands.run import open_run


def tx(*args: str):
    from typer.testing import CliRunner

    from txcli.cli import app

    return CliRunner().invoke(app, list(args))


def write_metrics(run_dir: Path) -> None:
    events = [
        {"event": "log", "step": 50, "epoch": 0.5, "elapsed": 30.0, "loss": 4.0, "lr": 1e-4, "tokens_per_s": 1000.0,
         "rss_mb": 900.0, "peak_rss_mb": 1200.5},
        {"event": "valid", "step": 100, "elapsed": 70.0, "loss": 3.0, "ppl": 20.1, "bleu": 10.0, "chrf": 30.0, "best": True},
        {"event": "log", "step": 150, "epoch": 1.5, "elapsed": 95.0, "loss": 2.5, "lr": 2e-4, "tokens_per_s": 3000.0,
         "rss_mb": 800.0, "peak_rss_mb": 1100.0},  # a resumed session peaks lower: the run's peak stays
        {"event": "valid", "step": 200, "elapsed": 130.0, "loss": 2.8, "ppl": 16.4, "bleu": 9.0, "chrf": 33.0, "best": False},
    ]
    text = "".join(json.dumps(e) + "\n" for e in events) + '{"event": "log", "st'  # a run still writing
    (run_dir / METRICS_FILE).write_text(text, encoding="utf-8")


def test_parameters_per_module_add_up_and_tied_weights_count_once(tiny_run: Path):
    model = open_run(tiny_run, device="cpu").model
    rows, total = count_parameters(list(model.named_parameters(remove_duplicate=False)))
    assert total == sum(p.numel() for p in model.parameters())  # parameters() lists a tied tensor once
    by_name = {r.name: r for r in rows}
    top = [r for r in rows if "." not in r.name]
    assert sum(r.params for r in top) == total
    assert by_name["out_proj"].params == 0 and by_name["out_proj"].shared_from == ["src_embed"]
    assert by_name["encoder"].params == sum(by_name[f"encoder.{i}"].params for i in range(model.cfg.encoder_layers))
    assert by_name["decoder.1.cross_attn"].params == sum(p.numel() for p in model.decoder[1].cross_attn.parameters())


def test_history_from_metrics_jsonl(tiny_run: Path):
    write_metrics(tiny_run)
    h = read_history(tiny_run / METRICS_FILE)
    assert (h.steps, h.epochs, h.elapsed_s, h.last_loss, h.validations) == (200, 1.5, 130.0, 2.5, 2)
    assert h.tokens_per_s == 2000.0 and h.unreadable_lines == 1
    assert h.peak_rss_mb == 1200.5
    best = {b.metric: (b.value, b.step) for b in h.best}
    assert best == {"bleu": (10.0, 100), "chrf": (33.0, 200), "loss": (2.8, 200), "ppl": (16.4, 200)}


def test_a_run_without_history_or_model_is_summarised_as_far_as_it_goes(tiny_run: Path):
    summary = inspect_run(tiny_run)
    assert summary.history is None and summary.total_params > 0
    assert summary.vocab["source"] == summary.vocab["target"] == open_run(tiny_run, "cpu").src_tok.vocab_size
    assert any("metrics.jsonl is missing" in note for note in summary.notes)
    (tiny_run / MODEL_FILE).unlink()
    bare = inspect_run(tiny_run)
    assert bare.total_params is None and any("no model yet" in note for note in bare.notes)
    assert bare.recipe["model"]["d_model"] == 32


def test_cli_prints_the_summary_and_plots_positional_encodings(tiny_run: Path, tmp_path: Path):
    write_metrics(tiny_run)
    result = tx("inspect", str(tiny_run), "--plot", str(tmp_path / "pe.png"))
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in ("d_model=32", "vocabulary: source", "parameters:", "encoder.1", "out_proj",
                     "200 steps", "best bleu: 10 at step 100", "1 unreadable line", "peak memory 1,200 MB"):
        assert expected in text, expected
    png = (tmp_path / "pe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1000, 600)
    as_json = json.loads(tx("inspect", str(tiny_run), "--json").stdout)
    assert as_json["total_params"] > 0 and as_json["history"]["steps"] == 200
    assert as_json["history"]["peak_rss_mb"] == 1200.5


def test_not_a_run_directory_is_a_one_line_error(tmp_path: Path):
    result = tx("inspect", str(tmp_path))
    assert result.exit_code == 1 and "not a tx run directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
