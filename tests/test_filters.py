"""data.filters: each filter drops a planted bad pair under its own name and keeps a good pair
near its bound; duplicates by 64-bit hashes; the counts' round trip."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from txcli.errors import UsageError
from txcli.filters import (EXAMPLES, FILTER_NAMES, FilterCounts, PairFilters, SeenHashes, duplicate_mask,
                           letter_share_at_least, pair_hash, pair_hashes)
from txcli.schema.data import Filters

GOOD = ("the cat sleeps on the mat", "die Katze schläft auf der Matte")


def reason(pair, **filters):
    return PairFilters(Filters(**filters), max_len=128).text_reason(*pair)


# each text filter: (settings, a bad pair it drops, a good pair at its bound it keeps)
TEXT_CASES = {
    "min_chars": ({"min_chars": 5}, ("abcd", "abcdefg"), ("abcde", "vwxyz")),
    "max_chars": ({"max_chars": 40}, ("a" * 41, "abc"), ("a" * 40, "b" * 40)),
    "same": ({"same": True}, ("Hello world", " Hello world "), ("Hello world", "Hallo Welt")),
    "letters": ({"min_letters": 0.6}, ("12 345 678", "zwölf"), ("abc 12", "def 3")),  # 3/5 letters: exactly 0.6
    "control": ({"control_chars": True}, ("a\x07b", "ab"), ("a\tb", "a b")),
}


@pytest.mark.parametrize("name", sorted(TEXT_CASES))
def test_each_text_filter_drops_its_bad_pair_and_keeps_one_at_the_bound(name):
    settings, bad, good = TEXT_CASES[name]
    assert reason(bad, **settings) == name
    assert reason(good, **settings) is None
    assert reason(GOOD, **settings) is None
    assert reason(bad) is None  # off by default: nothing else drops it


def test_blank_sides_are_empty_whatever_the_filters():
    for pair in (("", "x"), ("x", ""), ("  \t", "x"), ("x", "\u3000")):
        assert reason(pair) == "empty"


def test_token_filters_each_at_their_bound():
    f = PairFilters(Filters(min_tokens=2, max_tokens=10, max_ratio=2.0), max_len=12)
    assert f.token_reason(0, 5) == "empty"
    assert f.token_reason(13, 5) == "max_len" and f.token_reason(5, 13) == "max_len"
    assert f.token_reason(1, 2) == "min_tokens" and f.token_reason(2, 2) is None
    assert f.token_reason(11, 11) == "max_tokens" and f.token_reason(10, 10) is None
    assert f.token_reason(3, 7) == "ratio" and f.token_reason(3, 6) is None and f.token_reason(6, 3) is None
    plain = PairFilters(Filters(), max_len=12)  # data.max_len always applies, the rest only when set
    assert plain.token_reason(1, 12) is None and plain.token_reason(12, 13) == "max_len"


def test_letter_share_counts_marks_as_letters_and_digits_punctuation_as_not():
    assert letter_share_at_least("नमस्ते दुनिया", 0.99)  # Devanagari vowel signs are marks
    assert letter_share_at_least("Crème brûlée", 0.99)
    assert letter_share_at_least("Hello, world!", 0.8)       # 10 of 12
    assert not letter_share_at_least("Hello, world!", 0.85)
    assert not letter_share_at_least("$$$ 100.00 ###", 0.1)
    assert not letter_share_at_least("   ", 0.1)


def test_keep_texts_counts_duplicates_first_then_the_first_text_filter():
    f = PairFilters(Filters(same=True, duplicates=True, max_chars=20), max_len=128)
    pairs = [("short one", "kurz"), ("a", "a"), ("x" * 30, "x" * 30), ("ok", "fine"), ("ok", "fine")]
    dup = duplicate_mask(pair_hashes(pairs))
    counts = FilterCounts()
    kept = f.keep_texts(pairs, counts, dup)
    assert kept == [0, 3]
    assert counts.dropped == {"same": 1, "max_chars": 1, "duplicate": 1}  # (x*30, x*30): max_chars comes first
    assert counts.examples["duplicate"] == [("ok", "fine")]
    assert f.dedup


def test_keep_tokens_counts_and_keeps():
    f = PairFilters(Filters(max_ratio=1.5), max_len=4)
    pairs = [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]
    counts = FilterCounts(read=4)
    kept = f.keep_tokens(pairs, [[1], [1] * 5, [1, 2], []], [[1], [1], [1, 2, 3, 4], [1]], counts)
    assert kept == [0] and counts.kept == 1
    assert counts.dropped == {"max_len": 1, "ratio": 1, "empty": 1}
    assert counts.examples["ratio"] == [("e", "f")]


def test_duplicate_mask_keeps_the_first_occurrence():
    assert duplicate_mask(np.array([5, 7, 5, 9, 7, 5], dtype=np.uint64)).tolist() == [False, False, True, False, True, True]
    assert duplicate_mask(np.zeros(0, dtype=np.uint64)).tolist() == []


def test_seen_hashes_over_chunks_equals_the_whole_mask():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 50, size=500).astype(np.uint64) * np.uint64(2**40)  # many repeats, large values
    seen = SeenHashes()
    chunks = [seen.add(hashes[i:i + 37]) for i in range(0, len(hashes), 37)]
    assert np.concatenate(chunks).tolist() == duplicate_mask(hashes).tolist()
    assert len(seen.seen) == len(np.unique(hashes))  # memory: one uint64 per distinct pair


def test_pair_hash_is_the_same_in_another_process_and_separates_the_sides():
    assert pair_hash("ab", "c") != pair_hash("a", "bc")
    assert 0 <= pair_hash("x", "y") < 2**64
    code = "from txcli.filters import pair_hash; print(pair_hash('Hallo', 'Welt'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert int(other.stdout) == pair_hash("Hallo", "Welt")


def test_filter_counts_examples_merge_and_round_trip():
    a, b = FilterCounts(read=10, kept=5), FilterCounts(read=4, kept=4)
    for i in range(5):
        a.drop("same", f"s{i}", f"s{i}")
    b.drop("langid", "x", "y")
    a.add(b)
    assert a.read == 14 and a.kept == 9 and a.dropped == {"same": 5, "langid": 1}
    assert len(a.examples["same"]) == EXAMPLES and a.examples["langid"] == [("x", "y")]
    d = a.to_dict()
    assert d == {"read": 14, "kept": 9, "dropped": {"same": 5, "langid": 1}}
    assert list(d["dropped"]) == [n for n in FILTER_NAMES if n in d["dropped"]]  # report order
    assert FilterCounts.from_dict(d) == a
    with pytest.raises(ValueError, match="unknown filter name 'typo'"):
        FilterCounts.from_dict({"read": 1, "kept": 0, "dropped": {"typo": 1}})
    with pytest.raises(ValueError):
        a.drop("typo", "", "")


def test_langid_missing_package_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "py3langid", None)  # import py3langid... now raises ImportError
    monkeypatch.setitem(sys.modules, "py3langid.langid", None)
    with pytest.raises(UsageError) as e:
        PairFilters(Filters(langid={"src": "en", "tgt": "de"}), max_len=128)
    assert str(e.value).startswith("data.filters.langid") and "pip install 'tx[langid]'" in str(e.value)
    assert "\n" not in str(e.value)
    PairFilters(Filters(), max_len=128)  # without the key nothing is imported


def test_langid_drops_the_wrong_language():
    pytest.importorskip("py3langid")
    f = PairFilters(Filters(langid={"src": "en", "tgt": "de"}), max_len=128)
    en = "The weather is very nice today and we are going to the beach."
    de = "Das Wetter ist heute sehr schön und wir gehen an den Strand."
    assert f.text_reason(en, de) is None
    assert f.text_reason(de, en) == "langid"
    assert f.text_reason(en, en) == "langid"
    with pytest.raises(UsageError, match=r"data\.filters\.langid\.tgt: 'zz'"):
        PairFilters(Filters(langid={"src": "en", "tgt": "zz"}), max_len=128)
