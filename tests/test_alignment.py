"""Word alignment methods (txcli/alignment.py) and `attention-dump --align-method / --align-select`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from txcli.alignment import (Method, SentenceScores, links, select_method, split, standard_method,
                             word_scores)
from txcli.attention import alignment_error_rate, parse_pharaoh

from .test_attention import SOURCES, TARGETS, tx


def _onehot_rows(rows: list[int], n_keys: int) -> np.ndarray:
    m = np.full((len(rows), n_keys), 0.01)
    for r, k in enumerate(rows):
        m[r, k] = 1.0
    return m / m.sum(1, keepdims=True)


def test_shift_reads_the_row_one_step_later():
    # source "a b c" </s>, target <s> X Y Z: row r puts its weight on source subword rows[r]
    src_words, tgt_words = [0, 1, 2, None], [None, 0, 1, 2]
    cross = _onehot_rows([2, 0, 1, 3], 4)[None]  # one head; the last row looks at </s>
    scores = SentenceScores({0: cross}, src_words, tgt_words)
    predict, shift = standard_method("predict", 0, [0]), standard_method("shift", 0, [0])
    # predict: target word j is spoken for by row j (the row before its token): X<-2, Y<-0, Z<-1
    assert scores.links(predict) == [(0, 1), (1, 2), (2, 0)]
    # shift: by row j+1 (the row reading it): X<-0, Y<-1, Z<-</s> left out, so only the 0.01s tie -> 0
    assert scores.links(shift) == [(0, 0), (0, 2), (1, 1)]


def naive_links(cross: np.ndarray, src_words, tgt_words, row: str) -> list[tuple[int, int]]:
    """The rule by hand, one target word at a time: sum the rows that speak for its subwords, then
    the columns of each source word's subwords (specials left out), and take the best source word."""
    n_src = 1 + max(w for w in src_words if w is not None)
    out = []
    for j in sorted({w for w in tgt_words if w is not None}):
        rows = [t - 1 if row == "output" else t for t, w in enumerate(tgt_words) if w == j]
        per_source = [sum(cross[r, s] for r in rows if 0 <= r < cross.shape[0]
                          for s, w in enumerate(src_words) if w == i) for i in range(n_src)]
        out.append((int(np.argmax(per_source)), j))
    return sorted(out)


def test_predict_and_shift_give_the_rule_by_hand():
    rng = np.random.default_rng(0)
    src_words, tgt_words = [0, 0, 1, 2, 2, 3, None], [None, 0, 1, 1, 2, 3, 3]
    cross = rng.dirichlet(np.ones(7), size=(3, 7))  # 3 heads, 7 decoder rows, 7 source tokens
    scores = SentenceScores({0: cross, 1: cross[::-1]}, src_words, tgt_words)
    for name, row in (("predict", "output"), ("shift", "input")):
        for layer, w in ((0, cross), (1, cross[::-1])):
            assert scores.links(standard_method(name, layer, [0, 1])) == naive_links(w.mean(0), src_words, tgt_words, row)


def test_layers_averages_and_bidir_sharpens():
    # both target words lean to source word 0; source word 1 gives most of its attention to word 1
    s = np.array([[0.6, 0.1],
                  [0.5, 0.45]])
    assert links(s, "argmax") == [(0, 0), (0, 1)]
    assert links(s, "bidir") == [(0, 0), (1, 1)]  # 0.45^2/0.55 = 0.37 > 0.5^2/1.1 = 0.23
    layer0 = np.array([[[0.9, 0.1], [0.4, 0.6]]])    # one head, word level already
    layer1 = np.array([[[0.2, 0.8], [0.45, 0.55]]])
    scores = SentenceScores.of({("output", 0): layer0, ("output", 1): layer1})
    assert scores.links(standard_method("predict", 1, [0, 1])) == [(1, 0), (1, 1)]
    assert scores.links(standard_method("layers", 1, [0, 1])) == [(0, 0), (1, 1)]  # (1.1, 0.9), (0.85, 1.15)
    assert scores.links(Method("select", "output", ((0, 0),))) == [(0, 0), (1, 1)]


def test_select_finds_the_one_head_that_aligns():
    rng = np.random.default_rng(1)
    sentences, sure, possible = [], [], []
    for _ in range(12):
        n = 5
        perm = rng.permutation(n)
        good = np.eye(n)[perm] + 0.05          # head 2 of layer 1 looks at the gold source word
        noise = rng.dirichlet(np.ones(n), size=(4, n))  # the other heads at random
        heads = np.concatenate([noise[:2], good[None], noise[2:3]])
        sentences.append(SentenceScores.of({("output", 0): noise, ("output", 1): heads,
                                            ("input", 0): noise, ("input", 1): noise}))
        sure.append({(int(perm[j]), j) for j in range(n)})
        possible.append(set())
    tune, rest = split(len(sentences))
    assert list(tune) == list(range(6)) and list(rest) == list(range(6, 12))
    method, aer = select_method(sentences, sure, possible, [0, 1], 4, tune)
    assert aer == 0.0 and (1, 2) in method.parts
    held = alignment_error_rate([sentences[i].links(method) for i in rest], [sure[i] for i in rest],
                                [possible[i] for i in rest])
    assert held == 0.0


def test_word_scores_sum_subwords_and_skip_specials():
    src_words, tgt_words = [0, 0, 1, None], [None, 0, 1]
    cross = np.array([[[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.0, 0.0, 0.0, 1.0]]])
    out = word_scores(cross, src_words, tgt_words, "output")
    np.testing.assert_allclose(out, [[[0.3, 0.3], [0.7, 0.2]]])


def _files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "s").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (tmp_path / "t").write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    return tmp_path / "s", tmp_path / "t"


@pytest.mark.parametrize("extra", [["--align-method", "predict"], ["--align-method", "shift"],
                                   ["--align-method", "layers"], ["--align-method", "bidir"],
                                   ["--align-row", "input"]])
def test_cli_methods_write_pharaoh_in_range_and_score_zero_against_themselves(tiny_run: Path, tmp_path: Path, extra):
    src, tgt = _files(tmp_path)
    base = ["attention-dump", str(tiny_run), "--input", str(src), "--ref", str(tgt), "--align", "--device", "cpu"]
    result = tx(*base, *extra)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(SOURCES)
    for line, s, t in zip(lines, SOURCES, TARGETS):
        sure, possible = parse_pharaoh(line)
        assert not possible and {j for _, j in sure} == set(range(len(t.split())))
        assert all(0 <= i < len(s.split()) for i, _ in sure)
    (tmp_path / "gold").write_text(result.stdout, encoding="utf-8")
    again = tx(*base, *extra, "--gold", str(tmp_path / "gold"), "--output", str(tmp_path / "a"))
    assert again.exit_code == 0, again.output
    name = "shift" if "input" in extra or "shift" in extra else extra[1]
    table = next(line for line in again.stderr.splitlines() if line.startswith("AER by method"))
    scored = table.split(f"{name} ", 1)[1].split(";")[0]
    # the method scores 0 against its own output: the default layer (the last of 2) or all layers
    assert scored.endswith("layer 1 0.000" if name in ("predict", "shift") else "all layers 0.000"), table
    assert (tmp_path / "a").read_text(encoding="utf-8") == result.stdout


def test_cli_select_tunes_on_the_first_half_and_reports_the_rest(tiny_run: Path, tmp_path: Path):
    src, tgt = _files(tmp_path)
    base = ["attention-dump", str(tiny_run), "--input", str(src), "--ref", str(tgt), "--align", "--device", "cpu"]
    (tmp_path / "gold").write_text(tx(*base, "--align-method", "bidir").stdout, encoding="utf-8")
    result = tx(*base, "--align-select", "--gold", str(tmp_path / "gold"), "--output", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert "selected on the first 2 sentences (AER 0.000)" in result.stderr
    assert "AER on the other 1 sentences:" in result.stderr
    lines = (tmp_path / "a").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(parse_pharaoh(line)[0] for line in lines)


@pytest.mark.parametrize("args, message", [
    (["--align", "--align-select"], "--align-select chooses the method on gold alignments"),
    (["--align", "--align-method", "layers", "--layer", "0"], "uses every decoder layer: drop --layer"),
    (["--align", "--align-method", "bidir", "--align-row", "input"], "--align-row input is --align-method shift"),
    (["--align-method", "shift"], "add --align"),
    (["--align", "--align-method", "best"], "--align-method 'best'"),
])
def test_bad_alignment_options_are_one_line_errors(tiny_run: Path, args, message):
    result = tx("attention-dump", str(tiny_run), "--src", "a b", *args, "--device", "cpu")
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
