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
from .streams import ReplacedLines, numbered_lines


def _lines(path: Path, replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline); invalid UTF-8 names the line (or, with
    `replaced`, is replaced and counted)."""
    return numbered_lines(path, replaced=replaced)


def _count_rest(lines: Iterator, seen: int) -> int:
    return seen + sum(1 for _ in lines)


def _text_pairs(src: Path, tgt: Path, replaced: Optional[ReplacedLines]) -> Iterator[tuple[str, str]]:
    src_lines, tgt_lines = _lines(src, replaced), _lines(tgt, replaced)
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


def _tsv_pairs(path: Path, replaced: Optional[ReplacedLines]) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path, replaced):
        parts = line.split("\t")
        if len(parts) != 2:
            raise UsageError(f"{path}: line {number}: expected 'source<TAB>target', found {len(parts)} field(s)")
        yield parts[0], parts[1]


def _jsonl_pairs(path: Path, replaced: Optional[ReplacedLines]) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path, replaced):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("src"), str) or not isinstance(record.get("tgt"), str):
            raise UsageError(f'{path}: line {number}: expected {{"src": "...", "tgt": "..."}}')
        yield record["src"], record["tgt"]


def read_pairs(corpus, replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[str, str]]:
    """Stream (source, target) pairs from a recipe `Corpus` (format already resolved). Invalid
    UTF-8 is an error naming the line, or with `replaced` is replaced and counted."""
    if corpus.format == "text":
        return _text_pairs(Path(corpus.src), Path(corpus.tgt), replaced)
    if corpus.format == "tsv":
        return _tsv_pairs(Path(corpus.path), replaced)
    return _jsonl_pairs(Path(corpus.path), replaced)


def read_side(corpora, side: Optional[str]) -> Iterator[str]:
    """Stream one side ('src' or 'tgt') of the corpora one after another, or both sides
    interleaved when side is None."""
    for corpus in corpora:
        for src, tgt in read_pairs(corpus):
            if side in (None, "src"):
                yield src
            if side in (None, "tgt"):
                yield tgt
