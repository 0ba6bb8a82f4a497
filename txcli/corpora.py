"""Random access to a training corpus: any pair by its index, without reading the others.

Opening a corpus makes one pass over its file(s) that records where every line starts (numpy
over the bytes, memory-mapped: a few bytes a line, never the text). A compressed file (.gz,
.zst) is first decompressed once into a temporary file in the work directory (the run
directory), removed by close(). With the duplicates filter on, the pass also hashes every pair,
so that the later of two equal pairs is known before any pool is built (file order: the first
is kept).

`read(indices)` gives the (source, target) text of those pairs; mistakes in the data name the
original file and its line, as data.read_pairs does when streaming.
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from .data import jsonl_pair, open_text, tsv_pair
from .filters import duplicate_mask, pair_hash
from .errors import UsageError

SCAN_BYTES = 1 << 26  # bytes searched for newlines at a time: bounds the pass's transient memory
HASH_CHUNK = 8192      # pairs read at a time while hashing
COMPRESSED = (".gz", ".zst")


class _Lines:
    """One file's lines by number: the byte offsets where each starts, over a read-only map."""

    def __init__(self, path: Path, shown: Path):
        self.path, self.shown = path, shown
        self._file = open(path, "rb")
        size = self._file.seek(0, 2)
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.bounds = _line_bounds(self._map, size)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def text(self, i: int, number: int) -> str:
        raw = self._map[int(self.bounds[i]):int(self.bounds[i + 1])]
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError(f"{self.shown}: line {number}: not valid UTF-8") from None

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()


def _line_bounds(data, size: int) -> np.ndarray:
    """Offsets [start of line 0, start of line 1, ..., end]: line i is data[b[i]:b[i+1]]."""
    dtype = np.uint32 if size < 2**32 - 1 else np.int64
    parts = [np.zeros(1, dtype=dtype)]
    view = np.frombuffer(data, dtype=np.uint8) if size else np.zeros(0, np.uint8)
    for start in range(0, size, SCAN_BYTES):
        parts.append((np.flatnonzero(view[start:start + SCAN_BYTES] == 10) + start + 1).astype(dtype))
    bounds = np.concatenate(parts)
    if size and bounds[-1] != size:  # a last line without a newline still counts
        bounds = np.append(bounds, np.array([size], dtype=dtype))
    return bounds


class CorpusIndex:
    """One training corpus (a recipe Corpus: text, TSV or JSONL), open for random access."""

    def __init__(self, name: str, corpus, work_dir: Path, dedup: bool = False):
        self.name, self.format = name, corpus.format
        self._temp: Optional[Path] = None  # decompressed copies of compressed files
        self._files: list[_Lines] = []
        try:
            for i, path in enumerate(corpus.files()):
                self._files.append(_Lines(self._plain(Path(path), Path(work_dir), i), Path(path)))
            self._numbers: Optional[np.ndarray] = None  # line number of each pair, where not index + 1
            self.size = self._count()
            self.pairs_read = 0  # pairs whose text was read (the dedup pass excluded)
            self.duplicates = self._duplicates() if dedup else None
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self.size

    def _plain(self, path: Path, work_dir: Path, i: int) -> Path:
        if not path.is_file():
            raise UsageError(f"{path}: file not found")
        if path.suffix.lower() not in COMPRESSED:
            return path
        if self._temp is None:  # one folder per process: torchrun ranks sharing a run directory never collide
            work_dir.mkdir(parents=True, exist_ok=True)
            self._temp = Path(tempfile.mkdtemp(prefix=f".corpus-{self.name}-", dir=work_dir))
        plain = self._temp / f"{i}{''.join(path.suffixes[:-1])}"
        try:
            with open_text(path) as src, open(plain, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, EOFError) as err:
            raise UsageError(f"{path}: cannot decompress ({err})") from None
        return plain

    def _count(self) -> int:
        if self.format == "text":
            src, tgt = self._files
            if len(src) != len(tgt):
                raise UsageError(f"{src.shown} has {len(src)} lines but {tgt.shown} has {len(tgt)}: "
                                 "a parallel corpus needs aligned files")
            return len(src)
        lines = self._files[0]
        if self.format == "jsonl":  # blank lines carry no pair
            lengths = np.diff(lines.bounds.astype(np.int64))
            short = np.flatnonzero(lengths <= 16)
            blank = [i for i in short if not lines.text(int(i), int(i) + 1).strip()]
            if blank:
                self._numbers = np.delete(np.arange(1, len(lines) + 1, dtype=np.int64), blank)
                return len(self._numbers)
        return len(lines)

    def _line(self, i: int) -> int:
        return int(self._numbers[i]) - 1 if self._numbers is not None else i

    def _pair(self, i: int) -> tuple[str, str]:
        line = self._line(i)
        number = line + 1
        if self.format == "text":
            return self._files[0].text(line, number), self._files[1].text(line, number)
        f = self._files[0]
        text = f.text(line, number)
        where = f"{f.shown}: line {number}"
        return tsv_pair(text, where) if self.format == "tsv" else jsonl_pair(text, where)

    def read(self, indices) -> list[tuple[str, str]]:
        """The pairs at these indices (0-based, file order), in the order given."""
        out = [self._pair(int(i)) for i in indices]
        self.pairs_read += len(out)
        return out

    def _duplicates(self) -> np.ndarray:
        hashes = np.zeros(self.size, dtype=np.uint64)
        for start in range(0, self.size, HASH_CHUNK):
            stop = min(start + HASH_CHUNK, self.size)
            hashes[start:stop] = [pair_hash(s, t) for s, t in map(self._pair, range(start, stop))]
        return duplicate_mask(hashes)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
