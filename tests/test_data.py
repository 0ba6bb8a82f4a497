from __future__ import annotations

import json
from pathlib import Path

import pytest

from txcli.data import open_text, read_pairs, read_side
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


# --------------------------------------------------------------------------- compressed files

SRC = ["one", "two", "", "four ünïcode", "five"]
TGT = ["1", "2", "", "4", "5"]


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _write(path: Path, text: str, compress) -> Path:
    path.write_bytes(compress(text.encode("utf-8")) if compress else text.encode("utf-8"))
    return path


@pytest.mark.parametrize("suffix,compress", [(".gz", _gzip), (".zst", _zstd)])
def test_compressed_corpora_read_equal_to_plain(tmp_path: Path, suffix, compress):
    text_src, text_tgt = "\n".join(SRC) + "\n", "\r\n".join(TGT) + "\r\n"  # CRLF too
    tsv = "".join(f"{s}\t{t}\n" for s, t in zip(SRC, TGT))
    jsonl = "".join(json.dumps({"src": s, "tgt": t}) + "\n" for s, t in zip(SRC, TGT) if s)
    plain = {
        "text": Corpus(src=_write(tmp_path / "a.src", text_src, None), tgt=_write(tmp_path / "a.tgt", text_tgt, None)),
        "tsv": Corpus(path=_write(tmp_path / "a.tsv", tsv, None)),
        "jsonl": Corpus(path=_write(tmp_path / "a.jsonl", jsonl, None)),
    }
    packed = {
        "text": Corpus(src=_write(tmp_path / f"b.src{suffix}", text_src, compress),
                       tgt=_write(tmp_path / f"b.tgt{suffix}", text_tgt, compress)),
        "tsv": Corpus(path=_write(tmp_path / f"b.tsv{suffix}", tsv, compress)),  # layout under the suffix
        "jsonl": Corpus(path=_write(tmp_path / f"b.JSONL{suffix.upper()}", jsonl, compress)),
    }
    for layout in plain:
        assert packed[layout].format == layout
        expected = list(read_pairs(plain[layout]))
        assert list(read_pairs(packed[layout])) == expected and len(expected) >= 4
    assert list(read_side([packed["tsv"]], "src")) == SRC


def test_zstd_file_of_several_frames_reads_whole(tmp_path: Path):
    path = tmp_path / "c.tsv.zst"
    path.write_bytes(_zstd(b"a\tb\n") + _zstd(b"c\td\n"))  # e.g. files concatenated with cat
    assert list(read_pairs(Corpus(path=path))) == [("a", "b"), ("c", "d")]


def test_open_text_gives_the_bytes_of_every_kind(tmp_path: Path):
    data = b"x\ny\n" * 1000
    for name, compress in (("p.txt", None), ("p.txt.gz", _gzip), ("p.txt.zst", _zstd)):
        (tmp_path / name).write_bytes(compress(data) if compress else data)
        with open_text(tmp_path / name) as f:
            assert f.read() == data


@pytest.mark.parametrize("suffix,compress", [(".gz", _gzip), (".zst", _zstd)])
def test_damaged_compressed_files_name_the_file_and_line(tmp_path: Path, suffix, compress):
    lines = "".join(f"source {i}\ttarget {i}\n" for i in range(20000))
    whole = compress(lines.encode())
    path = tmp_path / f"c.tsv{suffix}"
    path.write_bytes(whole[: len(whole) // 2])  # truncated half-way
    with pytest.raises(UsageError) as e:
        list(read_pairs(Corpus(path=path)))
    msg = str(e.value)
    assert msg.startswith(f"{path}: line ") and "cannot read the" in msg and "\n" not in msg
    assert int(msg.split("line ")[1].split(":")[0]) > 1  # the lines before the damage were read
    path.write_bytes(b"plain text, not compressed\tat all\n")
    with pytest.raises(UsageError, match=rf"c\.tsv{suffix}: line 1: cannot read the"):
        list(read_pairs(Corpus(path=path)))


def test_invalid_utf8_inside_a_compressed_file_names_the_line(tmp_path: Path):
    path = tmp_path / "c.tsv.gz"
    path.write_bytes(_gzip(b"a\tb\nc\t\xff\n"))
    with pytest.raises(UsageError, match=r"c\.tsv\.gz: line 2: not valid UTF-8"):
        list(read_pairs(Corpus(path=path)))


def test_the_schema_and_the_reader_know_the_same_compressions():
    from txcli.data import COMPRESSIONS
    from txcli.schema.data import COMPRESSED

    assert set(COMPRESSIONS) == set(COMPRESSED)
