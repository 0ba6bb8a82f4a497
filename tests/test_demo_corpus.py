"""Checks on the shipped demo corpus (data/demo) and its generator."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
GENERATOR = DEMO / "generate.py"
SPLITS = ("train", "valid", "test")
DATA_FILES = [f"{s}.{e}" for s in SPLITS for e in ("src", "tgt")] + ["test.align"]


def _run(out: Path, *args: str, hashseed: str = "0") -> None:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out), *args],
                   check=True, env=env, capture_output=True, timeout=120)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(name: str) -> list[str]:
    return (DEMO / name).read_text(encoding="utf-8").splitlines()


def _align(line: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in p.split("-")) for p in line.split()]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("gen_a"), tmp_path_factory.mktemp("gen_b")
    _run(a, "--train", "2000", hashseed="1")
    _run(b, "--train", "2000", hashseed="2")
    return a, b


def test_generator_is_deterministic(small_runs):
    a, b = small_runs
    for name in DATA_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert len((a / "train.src").read_text().splitlines()) == 2000


def test_valid_and_test_do_not_depend_on_train_size(small_runs):
    a, _ = small_runs
    for name in ("valid.src", "valid.tgt", "test.src", "test.tgt", "test.align"):
        assert _digest(a / name) == _digest(DEMO / name), f"shipped {name} is stale"


def test_shipped_files_equal_fresh_default_run(tmp_path):
    _run(tmp_path)
    for name in DATA_FILES:
        assert _digest(tmp_path / name) == _digest(DEMO / name), \
            f"data/demo/{name} differs from `python data/demo/generate.py`; regenerate"


def test_line_counts_and_lengths():
    counts = {}
    for split in SPLITS:
        src, tgt = _lines(f"{split}.src"), _lines(f"{split}.tgt")
        assert len(src) == len(tgt)
        counts[split] = len(src)
        for s, t in zip(src, tgt):
            assert 3 <= len(s.split()) <= 30, s
            assert s.endswith(" .") and t.endswith(" ."), (s, t)
            assert t.split(), s
    assert counts["valid"] == 500 and counts["test"] == 1000
    assert 25000 <= counts["train"] <= 30000
    lengths = [len(s.split()) for s in _lines("train.src")]
    mean = sum(lengths) / len(lengths)
    assert 12 <= mean <= 14, mean
    assert {3, 30} <= set(lengths)


def test_alignments_in_range_and_complete():
    src, tgt, align = _lines("test.src"), _lines("test.tgt"), _lines("test.align")
    assert len(align) == len(src)
    for s, t, a in zip(src, tgt, align):
        ns, nt = len(s.split()), len(t.split())
        pairs = _align(a)
        assert pairs == sorted(set(pairs)), a
        assert all(0 <= i < ns and 0 <= j < nt for i, j in pairs), (s, t, a)
        # every target word translates some source word; the final "." aligns to "."
        assert {j for _, j in pairs} == set(range(nt)), (s, t, a)
        assert (ns - 1, nt - 1) in pairs


def test_word_order_really_changes():
    nonmono = 0
    align = _lines("test.align")
    for a in align:
        pairs = _align(a)
        if any(i < i2 and j > j2 for i, j in pairs for i2, j2 in pairs):
            nonmono += 1
    assert nonmono / len(align) >= 0.8, nonmono


def test_no_overlap_with_train_and_size_limit():
    train = set(_lines("train.src"))
    assert not train & set(_lines("valid.src"))
    assert not train & set(_lines("test.src"))
    assert not set(_lines("valid.src")) & set(_lines("test.src"))
    total = sum((DEMO / name).stat().st_size for name in DATA_FILES)
    assert total < 5_000_000, total


def test_no_duplicate_sources():
    for split in SPLITS:
        src = _lines(f"{split}.src")
        assert len(set(src)) == len(src), split
