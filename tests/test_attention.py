"""`tx attention-dump`: the weights are the model's own, they load back, pictures and alignments."""

from __future__ import annotations

import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from txcli.alignment import links, word_scores
from txcli.attention import (JsonlWriter, NpzWriter, Selection, alignment_error_rate, collect_attention, parse_pharaoh,
                             read_jsonl, read_npz, subword_word_ids)
from txcli.commands.attention import DumpRequest, attention_stream, dump_attention
from txcli.commands.run import open_run, run_decoding
from txcli.options import DecodeOptions
from txcli.tokenizer import BOS_ID, EOS_ID

from .conftest import run_tx

SOURCES = ["the dog sees a cat", "a big red house", "small green tree in the house with a cat on the tree"]
TARGETS = ["CAT A SEES DOG THE", "HOUSE RED BIG A", "TREE THE ON CAT A WITH HOUSE THE IN TREE GREEN SMALL"]


def forced_records(run, selection=Selection()):
    pairs = list(zip(SOURCES, TARGETS))
    return list(attention_stream(run, pairs, selection, run_decoding(run, DecodeOptions())))


def tx(*args: str):
    """The CLI in this process (no interpreter start-up); stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from txcli.cli import app

    return CliRunner().invoke(app, list(args))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- the weights


def test_rows_sum_to_one_causal_and_shapes_match_tokens(tiny_run: Path):
    run = open_run(tiny_run, device="cpu")
    records = forced_records(run)
    assert [r.tgt for r in records] == TARGETS
    cfg = run.model.cfg
    for rec in records:
        S, T = len(rec.src_tokens), len(rec.tgt_tokens)
        assert rec.src_tokens[-1] == "</s>" and rec.tgt_tokens[0] == "<s>"
        assert S == len(run.src_tok.encode(rec.src)) + 1 and T == len(run.tgt_tok.encode(rec.tgt)) + 1
        assert sorted(rec.weights["enc"]) == list(range(cfg.encoder_layers))
        assert sorted(rec.weights["cross"]) == list(range(cfg.decoder_layers))
        for kind, shape in (("enc", (cfg.heads, S, S)), ("dec", (cfg.heads, T, T)), ("cross", (cfg.heads, T, S))):
            for w in rec.weights[kind].values():
                assert w.shape == shape and w.dtype == np.float32
                np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
                assert (w >= 0).all()
        for w in rec.weights["dec"].values():
            assert np.abs(np.triu(w, k=1)).max() == 0.0  # nothing above the diagonal: causal


def test_weights_path_gives_the_fast_paths_logits(tiny_run: Path):
    """The pass that returns weights computes what the fused SDPA path computes."""
    model = open_run(tiny_run, device="cpu").model
    src = torch.tensor([[5, 6, 7, 8, EOS_ID], [9, 10, EOS_ID, 0, 0]])
    tgt = torch.tensor([[BOS_ID, 11, 12, 13], [BOS_ID, 14, 0, 0]])
    with torch.inference_mode():
        memory_w, _ = model.encode_with_weights(src)
        logits_w, _ = model.decode_with_weights(tgt, memory_w, src == 0)
        memory = model.encode(src)
        logits = model.decode(tgt, memory, src == 0)
    torch.testing.assert_close(memory_w, memory, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_w, logits, atol=1e-5, rtol=1e-5)


def test_dumped_weights_are_softmax_of_the_layers_own_queries_and_keys(tiny_run: Path):
    """Recompute encoder layer 0's attention from its projections, independently of the weights path."""
    run = open_run(tiny_run, device="cpu")
    rec = forced_records(run)[0]
    model = run.model
    src = torch.tensor([[run.src_tok.hf.token_to_id(t) for t in rec.src_tokens]])
    layer = model.encoder[0]
    with torch.inference_mode():
        x = layer.self_attn_res.sublayer_input(model.embed(src, model.src_embed))
        q, k, _ = layer.self_attn.split_heads(layer.self_attn.qkv_proj(x), 3)
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)), dim=-1)[0]
    np.testing.assert_allclose(rec.weights["enc"][0], expected.numpy(), atol=1e-5)


def test_padding_in_a_batch_does_not_change_a_sentences_weights(tiny_run: Path):
    model = open_run(tiny_run, device="cpu").model
    short = ([5, 6, EOS_ID], [BOS_ID, 7])
    long = ([5, 6, 7, 8, 9, 10, EOS_ID], [BOS_ID, 7, 8, 9, 10, 11])
    alone = collect_attention(model, [short[0]], [short[1]])[0]
    batched = collect_attention(model, [long[0], short[0]], [long[1], short[1]])[1]
    for kind in ("enc", "dec", "cross"):
        for layer, w in alone[kind].items():
            np.testing.assert_allclose(batched[kind][layer], w, atol=1e-5)


def test_selection_keeps_only_what_was_asked(tiny_run: Path):
    run = open_run(tiny_run, device="cpu")
    rec = forced_records(run, Selection(kinds=("cross", "enc"), layers=(-1,), heads=(1, 3)))[2]
    assert set(rec.weights) == {"cross", "enc"} and rec.heads == [1, 3]
    assert list(rec.weights["cross"]) == [run.model.cfg.decoder_layers - 1]
    assert rec.weights["enc"][run.model.cfg.encoder_layers - 1].shape[0] == 2
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        Selection(layers=(7,)).check(run.model)
    with pytest.raises(ValueError, match="head 4 does not exist"):
        Selection(heads=(4,)).check(run.model)


# --------------------------------------------------------------------------- files


def test_jsonl_and_npz_load_back_to_the_same_numbers(tiny_run: Path, tmp_path: Path):
    records = forced_records(open_run(tiny_run, device="cpu"))
    buf = io.BytesIO()
    writer = JsonlWriter(buf, precision=6)
    for rec in records:
        writer.write(rec)
    with open(tmp_path / "a.npz", "wb") as f:
        npz = NpzWriter(f)
        for rec in records:
            npz.write(rec)
        npz.close()
    from_jsonl = list(read_jsonl(buf.getvalue().decode("utf-8").splitlines()))
    from_npz = list(read_npz(tmp_path / "a.npz"))
    assert len(from_jsonl) == len(from_npz) == len(records)
    for rec, j, n in zip(records, from_jsonl, from_npz):
        for back in (j, n):
            assert (back.index, back.src, back.tgt, back.heads) == (rec.index, rec.src, rec.tgt, rec.heads)
            assert back.src_tokens == rec.src_tokens and back.tgt_tokens == rec.tgt_tokens
        for kind, layers in rec.weights.items():
            for layer, w in layers.items():
                np.testing.assert_array_equal(n.weights[kind][layer], w)
                np.testing.assert_allclose(j.weights[kind][layer], w, atol=5e-7)


def test_cli_npz_dump_and_plots(tiny_run: Path, tmp_path: Path):
    out, plots = tmp_path / "att.npz", tmp_path / "plots"
    result = run_tx("attention-dump", str(tiny_run), "--src", SOURCES[2], "--src", SOURCES[0],
                    "--tgt", TARGETS[2], "--tgt", TARGETS[0], "--format", "npz", "--output", str(out),
                    "--plot", str(plots), "--layer", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "2 sentences" in result.stderr and result.stdout == ""
    with np.load(out, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        assert meta["sentences"] == [0, 1] and meta["heads"] == [0, 1, 2, 3]
        S, T = len(data["0/src_tokens"]), len(data["0/tgt_tokens"])
        assert data["0/cross/1"].shape == (4, T, S) and data["0/enc/1"].shape == (4, S, S)
        assert "0/enc/0" not in data and str(data["1/tgt"]) == TARGETS[0]
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == sorted(f"{i:04d}-{k}-layer1.png" for i in (0, 1) for k in ("enc", "dec", "cross"))
    assert png_size(plots / "0000-cross-layer1.png") != png_size(plots / "0001-cross-layer1.png")
    import matplotlib.image

    pixels = matplotlib.image.imread(plots / "0000-cross-layer1.png")
    assert pixels.std() > 0.05  # a picture, not a blank canvas


def test_heatmaps_give_every_token_room(tmp_path: Path):
    """4 heads side by side; a 60-subword sentence gets >= 12 pixels per token in every panel."""
    from txcli.plots import plot_heads

    for n_rows, n_cols in ((5, 7), (60, 60)):
        weights = np.random.default_rng(0).dirichlet(np.ones(n_cols), size=(4, n_rows)).astype(np.float32)
        png = tmp_path / f"{n_rows}.png"
        png.write_bytes(plot_heads(weights, [0, 1, 2, 3], [f"q{i}" for i in range(n_rows)],
                                   [f"k{i}" for i in range(n_cols)], "title"))
        width, height = png_size(png)
        assert width >= 4 * 12 * n_cols and height >= 12 * n_rows
        assert width <= 4 * 16 * max(n_cols, 20) + 400 and height <= 16 * max(n_rows, 20) + 400


def test_cli_jsonl_to_stdout_with_selection_and_digits(tiny_run: Path):
    result = tx("attention-dump", str(tiny_run), "--src", SOURCES[0], "--kind", "dec", "--layer", "-1",
                    "--head", "2", "--digits", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    obj = json.loads(line)
    assert list(obj["attention"]) == ["dec"] and list(obj["attention"]["dec"]) == ["1"] and obj["heads"] == [2]
    weights = np.array(obj["attention"]["dec"]["1"])
    T = len(obj["tgt_tokens"])
    assert weights.shape == (1, T, T) and obj["tgt"]  # translated first
    assert np.all(np.round(weights, 2) == weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=0.005 * T)


def test_dump_streams_in_input_order_across_windows(tiny_run: Path, tmp_path: Path, monkeypatch):
    import txcli.commands.attention as command

    monkeypatch.setattr(command, "WINDOW", 4)
    lines = [SOURCES[i % 3] + " cat" * (i % 5) for i in range(11)]
    (tmp_path / "in.src").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "in.tgt").write_text("\n".join(t.lower() for t in lines) + "\n", encoding="utf-8")
    req = DumpRequest(tiny_run, input=tmp_path / "in.src", ref=tmp_path / "in.tgt", output=tmp_path / "d.jsonl",
                      selection=Selection(kinds=("enc",), layers=(0,), heads=(0,)), batch_size=3, device="cpu")
    seen = []
    report = dump_attention(req, io.BytesIO(), progress=seen.append)
    assert report.sentences == 11 and seen == list(range(1, 12)) and not report.translated
    back = list(read_jsonl((tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()))
    assert [r.index for r in back] == list(range(11)) and [r.src for r in back] == lines


def test_show_draws_a_terminal_heatmap(tiny_run: Path):
    result = tx("attention-dump", str(tiny_run), "--src", SOURCES[1], "--tgt", TARGETS[1], "--show",
                    "--layer", "0", "--head", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sentence 0: cross-attention, layer 0, head 3"
    # every cell is the weight in tenths (blank below 0.05), as the jsonl dump of the same pair has it
    dump = tx("attention-dump", str(tiny_run), "--src", SOURCES[1], "--tgt", TARGETS[1], "--kind", "cross",
              "--layer", "0", "--head", "3", "--device", "cpu")
    record = json.loads(dump.stdout)
    weights = record["attention"]["cross"]["0"][0]
    queries = [t[:10] for t in record["tgt_tokens"]]
    width = max(len(q) for q in queries)
    rows = [line for line in lines if line[:width].strip() and line[width:width + 1] == " "][-len(queries):]
    assert [row[:width].strip() for row in rows] == queries
    for row, expected in zip(rows, weights):
        cells = row[width + 1:]
        digits = [cells[2 * k] for k in range(len(expected))]
        assert digits == [str(min(round(w * 10), 9)) if min(round(w * 10), 9) else " " for w in expected]


@pytest.mark.parametrize("args, message", [
    (["--src", "a b", "--layer", "5"], "layer 5 does not exist"),
    (["--src", "a b", "--kind", "self"], "--kind 'self'"),
    (["--src", "a b", "--tgt", "X", "--tgt", "Y"], "1 --src but 2 --tgt"),
    ([], "nothing to read"),
    (["--src", "a b", "--gold", "g.align"], "add --align"),
    (["--src", "a b", "--show", "--head", "0", "--head", "1"], "give --head once"),
])
def test_bad_options_are_one_line_errors(tiny_run: Path, args, message):
    result = tx("attention-dump", str(tiny_run), *args, "--device", "cpu")
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


def test_ref_with_fewer_lines_leaves_no_output_file(tiny_run: Path, tmp_path: Path):
    (tmp_path / "a.src").write_text("the dog\na cat\n", encoding="utf-8")
    (tmp_path / "a.tgt").write_text("DOG THE\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    req = DumpRequest(tiny_run, input=tmp_path / "a.src", ref=tmp_path / "a.tgt", output=out, device="cpu")
    from txcli.errors import UsageError

    with pytest.raises(UsageError, match="different numbers of lines"):
        dump_attention(req, io.BytesIO())
    assert list(tmp_path.glob("*out.jsonl*")) == []  # no file, not even a temp one


# --------------------------------------------------------------------------- alignments


def test_subwords_merge_to_whitespace_words():
    tokens = ["\u2581the", "\u2581d", "og", "\u2581", ".", "</s>"]
    assert subword_word_ids(tokens) == [0, 1, 1, 2, 2, None]
    assert subword_word_ids(["<s>", "\u2581", "\u2581a", "b"]) == [None, 0, 0, 0]  # a bare marker piece
    assert subword_word_ids(["the", "d", "##og", "."], wordpiece=True) == [0, 1, 1, 2]


def align_words(cross, src_words, tgt_words, row):
    """Links from one [queries, keys] matrix (heads already combined), as --align makes them."""
    return links(word_scores(cross[None], src_words, tgt_words, row)[0])


def test_align_words_by_input_or_output_row():
    src_words = [0, 1, 1, None]          # "a bc" + </s>
    tgt_words = [None, 0, 1]             # <s> X Y
    cross = np.array([[0.1, 0.8, 0.0, 0.1],   # row 0 reads <s>, predicts X
                      [0.7, 0.1, 0.1, 0.1],   # row 1 reads X, predicts Y
                      [0.0, 0.2, 0.1, 0.7]])  # row 2 reads Y: </s> is left out, 0.2 -> word 1
    assert align_words(cross, src_words, tgt_words, "output") == [(0, 1), (1, 0)]
    assert align_words(cross, src_words, tgt_words, "input") == [(0, 0), (1, 1)]


def test_align_words_sums_subwords_on_both_sides():
    src_words = [0, 1, 1, None]          # "a b+c" </s>: word 1 has two subwords
    tgt_words = [None, 0, 0, 1]          # <s> X+Y Z: target word 0 has two subwords
    cross = np.array([[0.6, 0.2, 0.2, 0.0],   # row 0 alone (X) would pick source word 0 ...
                      [0.0, 0.5, 0.3, 0.2],   # ... but X+Y together give word 1 1.2 against 0.6
                      [0.4, 0.3, 0.3, 0.0],   # Z: no subword beats 0.4, yet word 1 totals 0.6
                      [0.1, 0.1, 0.1, 0.7]])
    assert align_words(cross, src_words, tgt_words, "output") == [(1, 0), (1, 1)]  # one link per target word


def test_aer_is_zero_for_gold_and_one_for_disjoint():
    gold = ["0-0 1-2 2-1", "0-1 1-0 2?2"]
    sure, possible = zip(*(parse_pharaoh(line) for line in gold))
    assert alignment_error_rate([{(0, 0), (1, 2), (2, 1)}, {(0, 1), (1, 0)}], sure, possible) == 0.0
    assert alignment_error_rate([{(0, 1)}, {(2, 0)}], sure, possible) == 1.0
    # a possible link neither helps nor hurts the recall side: 1 - (2 + 3) / (3 + 2)
    assert alignment_error_rate([set(), {(0, 1), (1, 0), (2, 2)}], [set(), sure[1]], possible) == 0.0
    with pytest.raises(ValueError, match="'1x2' is not an alignment link"):
        parse_pharaoh("0-0 1x2")


def test_cli_align_is_pharaoh_in_range_and_gold_scores_it(tiny_run: Path, tmp_path: Path):
    (tmp_path / "s").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (tmp_path / "t").write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    result = tx("attention-dump", str(tiny_run), "--input", str(tmp_path / "s"), "--ref", str(tmp_path / "t"),
                "--align", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, src, tgt in zip(lines, SOURCES, TARGETS):
        sure, possible = parse_pharaoh(line)
        assert sure and not possible
        assert all(0 <= i < len(src.split()) and 0 <= j < len(tgt.split()) for i, j in sure)
        assert {j for _, j in sure} == set(range(len(tgt.split())))  # every target word is linked
    (tmp_path / "gold").write_text(result.stdout, encoding="utf-8")
    again = tx("attention-dump", str(tiny_run), "--input", str(tmp_path / "s"), "--ref", str(tmp_path / "t"),
               "--align", "--gold", str(tmp_path / "gold"), "--output", str(tmp_path / "a"), "--device", "cpu")
    assert again.exit_code == 0, again.output
    # two decoder layers: the default is the last (the first aligns worst)
    assert "AER layer 1: 0.000  <- written" in again.stderr and "AER layer 0:" in again.stderr
    assert (tmp_path / "a").read_text(encoding="utf-8") == result.stdout
