"""The explorer page's contents (no browser: tests/test_explorer_browser.py drives it) and the
training curves of `tx inspect --plot FOLDER`."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np

from txcli.attention import read_jsonl

from .test_attention import SOURCES, TARGETS, png_size, tx


def page_data(html: str) -> tuple[dict, list[dict]]:
    """(meta, sentence blocks) parsed from the page the way its script does."""
    blocks = re.findall(r'<script type="application/json" class="tx-sentence" id="tx-s-(\d+)">(.*?)</script>', html, re.S)
    sentences = [json.loads(text) for _, text in blocks]
    assert [int(n) for n, _ in blocks] == list(range(len(sentences)))
    meta = json.loads(re.search(r'<script type="application/json" id="tx-meta">(.*?)</script>', html, re.S).group(1))
    return meta, sentences


def dump_both(run: Path, tmp_path: Path, *extra: str) -> tuple[str, list]:
    args = ["attention-dump", str(run), "--device", "cpu", "--digits", "3"]
    for s, t in zip(SOURCES, TARGETS):
        args += ["--src", s, "--tgt", t]
    result = tx(*args, *extra, "--output", str(tmp_path / "a.jsonl"), "--html", str(tmp_path / "a.html"))
    assert result.exit_code == 0, result.output
    assert "wrote the explorer page" in result.stderr
    with open(tmp_path / "a.jsonl", encoding="utf-8") as f:
        records = list(read_jsonl(f))
    return (tmp_path / "a.html").read_text(encoding="utf-8"), records


def test_page_holds_every_weight_of_the_jsonl_dump(tiny_run: Path, tmp_path: Path):
    html, records = dump_both(tiny_run, tmp_path)
    meta, sentences = page_data(html)
    assert meta["precision"] == 3 and len(sentences) == len(records) == 3
    for rec, s in zip(records, sentences):
        assert [meta["tokens"][i] for i in s["s"]] == rec.src_tokens
        assert [meta["tokens"][i] for i in s["t"]] == rec.tgt_tokens
        assert (s["src"], s["tgt"], s["heads"]) == (rec.src, rec.tgt, rec.heads)
        assert sorted(s["w"]) == sorted(rec.weights)
        for kind, layers in rec.weights.items():
            assert sorted(s["w"][kind]) == sorted(str(layer) for layer in layers)
            for layer, w in layers.items():
                page = np.asarray(s["w"][kind][str(layer)], dtype=np.float64).reshape(w.shape) / 1000
                np.testing.assert_allclose(page, w, atol=0.5e-3 + 1e-9)
    assert len(meta["tokens"]) == len(set(meta["tokens"]))  # one shared copy of every token


def test_page_fetches_nothing_and_names_no_url(tiny_run: Path, tmp_path: Path):
    metrics = tiny_run / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(e) + "\n" for e in (
        {"event": "log", "step": 5, "elapsed": 1.0, "loss": 4.0, "lr": 1e-3},
        {"event": "log", "step": 10, "elapsed": 2.0, "loss": 3.0, "lr": 2e-3},
        {"event": "valid", "step": 10, "elapsed": 2.5, "loss": 3.5, "bleu": 1.0, "chrf": 10.0})), encoding="utf-8")
    html, _ = dump_both(tiny_run, tmp_path)
    assert not re.search(r"https?:", html, re.I)
    assert not re.search(r"""\b(src|href)\s*=\s*["'](?!data:)""", html)  # inline only, nothing loaded
    assert "<link rel=\"stylesheet\"" not in html and "@import" not in html
    meta, _ = page_data(html)
    png = base64.b64decode(meta["curves"])  # the training curves travel inside the page
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"http" not in png


def test_page_with_alignments_and_gold_carries_links_and_aer(tiny_run: Path, tmp_path: Path):
    (tmp_path / "s").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (tmp_path / "t").write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    base = ["attention-dump", str(tiny_run), "--input", str(tmp_path / "s"), "--ref", str(tmp_path / "t"),
            "--align", "--device", "cpu"]
    (tmp_path / "gold").write_text(tx(*base).stdout, encoding="utf-8")
    result = tx(*base, "--gold", str(tmp_path / "gold"), "--html", str(tmp_path / "p.html"), "--output", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    meta, sentences = page_data((tmp_path / "p.html").read_text(encoding="utf-8"))
    lines = (tmp_path / "a").read_text(encoding="utf-8").splitlines()
    for s, line in zip(sentences, lines):
        assert " ".join(f"{i}-{j}" for i, j in meta["align"][str(s["i"])]) == line
        assert sorted(s["w"]) == ["cross", "dec", "enc"]  # the page keeps every kind, not only cross
    assert meta["aer"]["predict"]["1"] == 0.0 and meta["align_row"] == "output"
    assert [" ".join(f"{i}-{j}" for i, j in g[0]) for g in meta["gold"]] == lines


def test_bad_html_targets_are_one_line_errors(tiny_run: Path, tmp_path: Path):
    for target, message in ((tmp_path, "is a folder"), (tmp_path / "x.jsonl", "is also the --output file"),
                            ("-", "give its name")):
        result = tx("attention-dump", str(tiny_run), "--src", "a b", "--output", str(tmp_path / "x.jsonl"),
                    "--html", str(target), "--device", "cpu")
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert not (tmp_path / "x.jsonl").exists()


def test_inspect_plot_folder_draws_the_training_curves(tiny_run: Path, tmp_path: Path):
    (tiny_run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (
        {"event": "start", "step": 0},
        {"event": "log", "step": 5, "elapsed": 60.0, "loss": 4.0, "lr": 1e-3},
        {"event": "log", "step": 10, "elapsed": 120.0, "loss": 3.0, "lr": 2e-3},
        {"event": "valid", "step": 10, "elapsed": 130.0, "loss": 3.5, "bleu": 1.0, "chrf": 10.0},
        {"event": "valid", "step": 20, "elapsed": 250.0, "loss": 3.1, "bleu": 3.0, "chrf": 14.0})) + "{half a line",
        encoding="utf-8")
    result = tx("inspect", str(tiny_run), "--plot", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["lr.png", "pe.png", "train-loss.png", "valid-bleu.png", "valid-chrf.png", "valid-loss.png"]
    w, h = png_size(tmp_path / "plots" / "valid-bleu.png")
    assert w > 1.5 * h  # two panels side by side: by step and by minutes
    # a .png path keeps its old meaning: the positional encodings alone
    single = tx("inspect", str(tiny_run), "--plot", str(tmp_path / "pe.png"))
    assert single.exit_code == 0 and (tmp_path / "pe.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["pe.png"]


def test_curves_series_read_steps_minutes_and_skip_bad_lines():
    from txcli.curves import series

    events = [{"event": "valid", "step": 100, "elapsed": 90.0, "bleu": 5.0}, {"event": "valid", "step": 200, "bleu": "x"},
              {"event": "log", "step": 150, "loss": 2.0}, {"event": "valid", "step": 300, "elapsed": 180.0, "bleu": 9.0}]
    assert series(events, "valid", "bleu") == ([100.0, 300.0], [1.5, 3.0], [5.0, 9.0])
