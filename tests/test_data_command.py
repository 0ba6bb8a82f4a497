"""`tx data`: a tiny two-corpus recipe read through the filters and the tokenizer; the numbers
of its JSON checked against what was planted in the data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_corpus, run_tx

RECIPE = """\
name: data-report
run_dir: run
seed: 3
data:
  train:
    - {name: clean, src: train.src, tgt: train.tgt, weight: 3}
    - {name: bt, path: bt.tsv.gz, tag: "<bt>",
       filters: {same: true, duplicates: true, min_letters: 0.5, control_chars: true, max_chars: 80}}
  valid: {src: train.src, tgt: train.tgt}
  max_len: 40
  filters: {max_ratio: 4}
tokenizer: {kind: bpe, vocab_size: 200, min_frequency: 1}
train: {batch_tokens: 256, pool_size: 1000}
"""

PLANTED = {  # bt's bad pairs, one for each filter it sets (and the ones every corpus has)
    "empty": ["\tnothing on the left"],
    "max_chars": ["the dog " * 12 + "\tthe dog"],
    "same": ["the cat sleeps\tthe cat sleeps"],
    "duplicate": ["a dog runs\tA DOG RUNS"],  # the second copy (the first is kept)
    "letters": ["12 34 56 78\t90 12 34"],
    "control": ["the cat\x07sleeps\tTHE CAT"],
    "ratio": ["the\tTHE BIG RED DOG SLEEPS IN THE HOUSE WITH THE CAT"],
}


def _make(folder: Path) -> Path:
    src, tgt = make_corpus(folder, n=200, seed=1)
    good = [f"{s}\t{t}" for s, t in zip(src.read_text().splitlines()[:60], tgt.read_text().splitlines()[:60])]
    lines = good + ["a dog runs\tA DOG RUNS"] + [line for bad in PLANTED.values() for line in bad]
    (folder / "bt.tsv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    (folder / "recipe.yaml").write_text(RECIPE)
    return folder / "recipe.yaml"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The JSON of `tx data --format json`, run as a user runs it, and the folder."""
    folder = tmp_path_factory.mktemp("data")
    recipe = _make(folder)
    done = run_tx("data", str(recipe), "--format", "json", "--examples", "2", cwd=folder)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), folder


def test_counts_per_corpus_and_per_filter(report):
    data, _ = report
    clean, bt = data["corpora"]
    assert (clean["name"], clean["tag"], clean["read"], clean["kept"]) == ("clean", None, 200, 200)
    assert clean["dropped"] == {} and clean["examples"] == {}
    assert (bt["name"], bt["tag"], bt["read"]) == ("bt", "<bt>", 61 + len(PLANTED))
    assert bt["dropped"] == {name: 1 for name in ("empty", "max_chars", "ratio", "same", "duplicate",
                                                   "letters", "control")}
    assert bt["kept"] == 61
    assert bt["examples"]["control"] == [["the cat\x07sleeps", "THE CAT"]]
    assert bt["examples"]["duplicate"] == [["a dog runs", "A DOG RUNS"]]
    assert bt["files"][0].endswith("bt.tsv.gz")


def test_shares_passes_lengths_and_padding(report):
    data, folder = report
    clean, bt = data["corpora"]
    # share: weight x kept/read, normalised
    w_clean, w_bt = 3 * 200 / 200, 1 * 61 / 68
    assert clean["share"] == pytest.approx(w_clean / (w_clean + w_bt))
    assert bt["share"] == pytest.approx(w_bt / (w_clean + w_bt))
    assert clean["epoch_passes"] == pytest.approx(0.75 * 268 / 200)
    assert bt["epoch_passes"] == pytest.approx(0.25 * 268 / 68)
    # lengths: the trained tokenizer's own counts over the pairs kept
    from txcli.commands.run import load_tokenizers

    tok, _ = load_tokenizers(folder / "run", True)
    src_len = [len(ids) for ids in tok.encode_batch((folder / "train.src").read_text().splitlines())]
    assert clean["lengths"]["src"]["max"] == max(src_len) <= 40
    assert clean["lengths"]["src"]["p50"] == int(np.percentile(src_len, 50, method="higher"))
    for side in ("src", "tgt"):
        got = bt["lengths"][side]
        assert got["p50"] <= got["p90"] <= got["p99"] <= got["max"] <= 40
    b = data["batching"]
    assert b["pool_pairs"] == 261 and b["batch_tokens"] == 256  # the pool holds every kept pair (< pool_size)
    assert 0 < b["padding"] < 0.5 and b["batches"] >= 261 * 4 // 256  # every pair is 3 words or more, + </s>
    assert b["pairs_per_batch"] == pytest.approx(261 / b["batches"])
    assert data["trained_tokenizer"] is True and data["sample"] is None


def test_table_and_sample(report, tmp_path: Path):
    _, folder = report
    done = run_tx("data", "recipe.yaml", "--sample", "20", cwd=folder)  # the tokenizer is there now
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "first 20 pairs of each" in text and "clean" in text and "bt <bt>" in text
    assert "empty: 1" not in text  # the planted pairs are after the first 20
    assert "tokenizer was trained" not in text
    assert "padding takes" in text


def test_a_bad_line_names_file_and_line(report, tmp_path: Path):
    _, folder = report
    (folder / "bt.tsv.gz").write_bytes(gzip.compress(b"a\tb\nno tab\n"))
    done = run_tx("data", "recipe.yaml", cwd=folder)
    assert done.returncode == 2
    assert "bt.tsv.gz: line 2: expected 'source<TAB>target'" in done.stderr and "Traceback" not in done.stderr


def test_a_tag_the_tokenizer_lacks_is_named(tmp_path: Path):
    from txcli.commands.data_report import data_report
    from txcli.commands.run import train_tokenizers
    from txcli.errors import UsageError
    from txcli.schema import load_recipe

    recipe_path = _make(tmp_path)
    before = tmp_path / "before.yaml"
    before.write_text(recipe_path.read_text().replace(' tag: "<bt>",', ""))
    train_tokenizers(load_recipe(before))  # the run's tokenizer, from before the tag was added
    with pytest.raises(UsageError, match="tag '<bt>'"):
        data_report(load_recipe(recipe_path))


def test_padding_is_the_share_of_padded_cells():
    from txcli.commands.data_report import CorpusReport, _batching, fill_shares
    from txcli.filters import FilterCounts

    def corpus(name, lengths, tag=None):
        a = np.array(lengths, dtype=np.int32)
        return CorpusReport(name, [], 1.0, tag, FilterCounts(read=len(a), kept=len(a)), a, a.copy())

    even = [corpus("a", [4] * 50 + [9] * 50)]
    fill_shares(even)
    assert _batching(even, 1000, 10**6, 0).padding == 0.25  # one batch: each row 10+10 cells, 15 real on average
    cut = _batching(even, 1000, 500, 0)  # sorted by length: 50 rows of width 5, then 50 of 10, never mixed
    assert cut.padding == 0.0 and cut.pool_pairs == 100
    tagged = [corpus("a", [4] * 20), corpus("b", [4] * 20, tag="<bt>")]
    fill_shares(tagged)
    # one batch: 40 rows of 5 + 6 source cells (the tag) and 5 target cells; 20 of them 1 cell short
    assert _batching(tagged, 1000, 10**6, 0).padding == pytest.approx(20 / (40 * 11))
    assert _batching(tagged, 10, 10**6, 0).pool_pairs == 10  # a pool is pool_size pairs at most
