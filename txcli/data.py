"""Parallel text: read as a stream of (source, target) pairs.

Three layouts: two aligned plain-text files (one sentence a line), one TSV file (src<TAB>tgt),
one JSONL file ({"src": ..., "tgt": ...}). Each file may be compressed, gzip (.gz) or zstd
(.zst), and is then decompressed as it is read. Reading is line by line, so a corpus need not
fit in memory. Mistakes in the data name the file and the line.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from .errors import UsageError
from .streams import ReplacedLines, numbered_stream

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}  # by the file name's last suffix (as schema.data.COMPRESSED)


def compression(path: Path | str) -> Optional[str]:
    """'gzip', 'zstd' or None (plain), from the file name."""
    return COMPRESSIONS.get(Path(path).suffix.lower())


def open_text(path: Path | str) -> BinaryIO:
    """The file's bytes, decompressed when its name ends in .gz or .zst: a binary file object to
    read lines from (and to close)."""
    kind = compression(path)
    if kind == "gzip":  # buffered again: iterating GzipFile itself costs a Python call a line
        return io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=1 << 16)
    if kind == "zstd":
        return io.BufferedReader(_ZstdFrames(path), buffer_size=1 << 16)
    return open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a zstd file of one frame or several (files joined with cat). A
    file that ends inside a frame raises EOFError: zstandard's own stream_reader would end there
    quietly, and a truncated corpus would pass for a shorter one."""

    def __init__(self, path):
        try:
            import zstandard
        except ImportError:
            raise UsageError(f"{path}: reading zstd files needs the zstandard package (pip install zstandard)") from None
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None
        self._out, self._at = b"", 0
        self._file = open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out):
            chunk = self._file.read(1 << 16)
            if not chunk:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            self._out, self._at = self._decompress(chunk), 0
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        parts = []
        while chunk:
            if self._frame is None or self._frame.eof:  # the next frame
                self._frame = self._dctx.decompressobj()
            parts.append(self._frame.decompress(chunk))
            chunk = self._frame.unused_data if self._frame.eof else b""
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()
        super().close()


def _damaged_errors() -> tuple:
    """What a damaged or truncated compressed file raises while it is read."""
    errors = [OSError, EOFError, zlib.error]  # gzip.BadGzipFile is an OSError
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _lines(path: Path, replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline); invalid UTF-8 names the line (or, with
    `replaced`, is replaced and counted), and so does damaged compressed data."""
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    number = 0
    with open_text(path) as f:
        try:
            for number, text in numbered_stream(f, str(path), replaced):
                yield number, text
        except _damaged_errors() as err:
            what = compression(path) or "file"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UsageError(f"{path}: line {number + 1}: cannot read the {what} data ({reason})") from None


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


def tsv_pair(line: str, where: str) -> tuple[str, str]:
    """One TSV line as a pair; `where` ('FILE: line N') names it in the error."""
    parts = line.split("\t")
    if len(parts) != 2:
        raise UsageError(f"{where}: expected 'source<TAB>target', found {len(parts)} field(s)")
    return parts[0], parts[1]


def jsonl_pair(line: str, where: str) -> tuple[str, str]:
    """One JSONL line ({"src": ..., "tgt": ...}) as a pair; `where` names it in the error."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("src"), str) or not isinstance(record.get("tgt"), str):
        raise UsageError(f'{where}: expected {{"src": "...", "tgt": "..."}}')
    return record["src"], record["tgt"]


def _tsv_pairs(path: Path, replaced: Optional[ReplacedLines]) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path, replaced):
        yield tsv_pair(line, f"{path}: line {number}")


def _jsonl_pairs(path: Path, replaced: Optional[ReplacedLines]) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path, replaced):
        if line.strip():
            yield jsonl_pair(line, f"{path}: line {number}")


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
