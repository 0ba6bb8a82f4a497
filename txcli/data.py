"""Parallel text: read as a stream of (source, target) pairs.

Three layouts: two aligned plain-text files (one sentence a line), one TSV file (src<TAB>tgt),
one JSONL file ({"src": ..., "tgt": ...}). Reading is line by line, so a corpus need not fit in
memory. Mistakes in the data name the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from .errors import UsageError


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline); invalid UTF-8 names the line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{path}: line {number}: not valid UTF-8") from None
            yield number, text.rstrip("\r\n")


def _count_rest(lines: Iterator, seen: int) -> int:
    return seen + sum(1 for _ in lines)


def _text_pairs(src: Path, tgt: Path) -> Iterator[tuple[str, str]]:
    src_lines, tgt_lines = _lines(src), _lines(tgt)
    n = 0
    while True:
        a = next(src_lines, None)
        b = next(tgt_lines, None)
        if a is None and b is None:
            return
        if a is None or b is None:
            n_src = n if a is None else _count_rest(src_lines, n + 1)
            n_tgt = n if b is None else _count_rest(tgt_lines, n + 1)
            raise UsageError(f"{src} has {n_src} lines but {tgt} has {n_tgt}: a parallel corpus needs aligned files")
        n += 1
        yield a[1], b[1]


def _tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2:
            raise UsageError(f"{path}: line {number}: expected 'source<TAB>target', found {len(parts)} field(s)")
        yield parts[0], parts[1]


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("src"), str) or not isinstance(record.get("tgt"), str):
            raise UsageError(f'{path}: line {number}: expected {{"src": "...", "tgt": "..."}}')
        yield record["src"], record["tgt"]


def read_pairs(corpus) -> Iterator[tuple[str, str]]:
    """Stream (source, target) pairs from a recipe `Corpus` (format already resolved)."""
    if corpus.format == "text":
        return _text_pairs(Path(corpus.src), Path(corpus.tgt))
    if corpus.format == "tsv":
        return _tsv_pairs(Path(corpus.path))
    return _jsonl_pairs(Path(corpus.path))


def read_side(corpus, side: Optional[str]) -> Iterator[str]:
    """Stream one side ('src' or 'tgt') of a corpus, or both sides interleaved when side is None."""
    for src, tgt in read_pairs(corpus):
        if side in (None, "src"):
            yield src
        if side in (None, "tgt"):
            yield tgt
