from __future__ import annotations

from pathlib import Path

import pytest

from txcli.data import read_pairs
from txcli.errors import UsageError
from txcli.schema import Corpus


def test_text_pairs_stream_in_order(tmp_path: Path):
    (tmp_path / "a").write_text("one\ntwo\n\nfour\n")
    (tmp_path / "b").write_text("1\n2\n\n4\n")
    pairs = list(read_pairs(Corpus(src=tmp_path / "a", tgt=tmp_path / "b")))
    assert pairs == [("one", "1"), ("two", "2"), ("", ""), ("four", "4")]


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path: Path):
    (tmp_path / "a").write_text("1\n2\n3\n4\n5\n")
    (tmp_path / "b").write_text("1\n2\n3\n")
    with pytest.raises(UsageError) as e:
        list(read_pairs(Corpus(src=tmp_path / "a", tgt=tmp_path / "b")))
    msg = str(e.value)
    assert f"{tmp_path / 'a'} has 5 lines" in msg and f"{tmp_path / 'b'} has 3" in msg


def test_tsv_and_jsonl(tmp_path: Path):
    (tmp_path / "c.tsv").write_text("a b\tx y\nc\tz\n")
    assert list(read_pairs(Corpus(path=tmp_path / "c.tsv"))) == [("a b", "x y"), ("c", "z")]
    (tmp_path / "c.jsonl").write_text('{"src": "a", "tgt": "x"}\n{"src": "b", "tgt": "y"}\n')
    assert list(read_pairs(Corpus(path=tmp_path / "c.jsonl"))) == [("a", "x"), ("b", "y")]


def test_bad_lines_are_named(tmp_path: Path):
    (tmp_path / "c.tsv").write_text("a\tb\nno tab here\n")
    with pytest.raises(UsageError, match=r"c\.tsv: line 2: expected 'source<TAB>target'"):
        list(read_pairs(Corpus(path=tmp_path / "c.tsv")))
    (tmp_path / "c.jsonl").write_text('{"src": "a", "tgt": "x"}\n{"src": "a"\n')
    with pytest.raises(UsageError, match=r"c\.jsonl: line 2: not valid JSON"):
        list(read_pairs(Corpus(path=tmp_path / "c.jsonl")))
    (tmp_path / "a").write_bytes(b"ok\n\xff\xfe bad\n")
    (tmp_path / "b").write_text("ok\nok\n")
    with pytest.raises(UsageError, match=r"line 2: not valid UTF-8"):
        list(read_pairs(Corpus(src=tmp_path / "a", tgt=tmp_path / "b")))


def test_reading_is_lazy(tmp_path: Path):
    # a generator: the first pair comes back before a problem further down is reached
    (tmp_path / "c.tsv").write_text("a\tb\n" + "broken\n")
    pairs = read_pairs(Corpus(path=tmp_path / "c.tsv"))
    assert next(pairs) == ("a", "b")
