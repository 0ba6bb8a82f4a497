"""The `tx prepare` cache: a corpus filtered and tokenized once, in flat binary arrays read through
memory maps, so training on it starts in seconds and can pick any pair at any time.

One directory: `manifest.json` (what the cache was built from, the arrays and their sizes, the
filter counts) and per corpus NAME the raw little-endian arrays

    NAME.src_ids  NAME.tgt_ids          token ids (uint16 when both vocabularies fit, else int32),
                                        the corpus tag's id already before each source
    NAME.src_offsets  NAME.tgt_offsets  int64, pairs + 1: pair i is ids[offsets[i]:offsets[i+1]]
    NAME.src_text  NAME.tgt_text (+ _offsets)   UTF-8 bytes of the kept pairs, only when data.sampling
                                        is set (the segmentation changes each epoch, so training
                                        re-tokenizes the text)

Written atomically (a temporary directory renamed into place: a killed write leaves no cache, only
a dot-named temporary directory that the next write removes). Opening checks, before mapping any
array, that every file has exactly the size the manifest gives it, then with vectorised numpy that
the offsets rise from 0 to the end of their ids and every id is below its vocabulary: a damaged
cache is refused with one line naming the file, and no read goes past an array's end. Opening
never checksums the arrays (that would read the whole cache); staleness is judged from the
recipe's side: source files by size and modification time (hashed again only when the time
changed), tokenizer files by their SHA-256, filters, tags and max_len by value.

The maps' pages leave the process once read (after the checks at opening, after each pool is
copied out): the checks and random pools touch every page of the arrays, which would otherwise
stay counted in training's resident memory for the whole run, the size of the cache. They stay
in the system's page cache, so reading them again costs no disk read while memory allows.
"""

from __future__ import annotations

import mmap
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Optional, Protocol

import numpy as np

# corpus_encoder and commands/prepare take the filters and tag ids from here
from .filters import FilterCounts, PairFilters, duplicate_mask, pair_hash  # noqa: F401
from .tokenizer import tag_id  # noqa: F401
from .atomic import read_json, write_dir_atomic, write_json_atomic
from .errors import TxError, UsageError
from .prepared_manifest import FORMAT, check_manifest, file_sha256, manifest_for, recipe_facts, stale_reason  # noqa: F401 (part of this API)

MANIFEST = "manifest.json"
RERUN = "rerun tx prepare"


@dataclass
class EncodedChunk:
    """Some kept pairs of one corpus, in file order: lengths and flat ids per side (the tag id
    already counted), and their text when the cache keeps it."""

    src_len: np.ndarray
    src_ids: np.ndarray
    tgt_len: np.ndarray
    tgt_ids: np.ndarray
    src_text: Optional[list[str]] = None
    tgt_text: Optional[list[str]] = None


class CorpusSource(Protocol):
    """What write_prepared reads a corpus from: its chunks, and its counts once they are done."""

    name: str
    counts: FilterCounts

    def chunks(self) -> Iterator[EncodedChunk]: ...


# --------------------------------------------------------------------------- writing


def id_dtype(vocab: dict) -> np.dtype:
    return np.dtype("<u2") if max(vocab.values()) <= 1 << 16 else np.dtype("<i4")


class _ArrayFile:
    """One array streamed to a file, counting its items."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self.f = open(path, "wb")

    def write(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self.f.write(memoryview(values).cast("B"))
        self.count += len(values)

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def _write_side(folder: Path, name: str, side: str, dtype, text: bool) -> dict:
    files = {f"{side}_ids": _ArrayFile(folder / f"{name}.{side}_ids", dtype),
             f"{side}_offsets": _ArrayFile(folder / f"{name}.{side}_offsets", "<i8")}
    files[f"{side}_offsets"].write(np.zeros(1, np.int64))
    if text:
        files[f"{side}_text"] = _ArrayFile(folder / f"{name}.{side}_text", "u1")
        files[f"{side}_text_offsets"] = _ArrayFile(folder / f"{name}.{side}_text_offsets", "<i8")
        files[f"{side}_text_offsets"].write(np.zeros(1, np.int64))
    return files


def _append(files: dict, side: str, lengths: np.ndarray, ids: np.ndarray, text: Optional[list[str]]) -> None:
    ids_file, off_file = files[f"{side}_ids"], files[f"{side}_offsets"]
    off_file.write(ids_file.count + np.cumsum(lengths, dtype=np.int64))
    ids_file.write(ids)
    if f"{side}_text" in files:
        encoded = [t.encode("utf-8") for t in text]
        text_file, text_off = files[f"{side}_text"], files[f"{side}_text_offsets"]
        text_off.write(text_file.count + np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded))))
        text_file.write(np.frombuffer(b"".join(encoded), dtype=np.uint8))


def _write_corpus(folder: Path, source: CorpusSource, dtype, text: bool) -> dict:
    files = {**_write_side(folder, source.name, "src", dtype, text), **_write_side(folder, source.name, "tgt", dtype, text)}
    try:
        pairs = 0
        for chunk in source.chunks():
            if text and (chunk.src_text is None or chunk.tgt_text is None):
                raise ValueError("this cache keeps the text, and a chunk came without it")
            _append(files, "src", chunk.src_len, chunk.src_ids, chunk.src_text)
            _append(files, "tgt", chunk.tgt_len, chunk.tgt_ids, chunk.tgt_text)
            pairs += len(chunk.src_len)
    finally:
        for f in files.values():
            f.close()
    return {"name": source.name, "pairs": pairs, "counts": source.counts.to_dict(),
            "arrays": {key: {"file": f.path.name, "dtype": f.dtype.str, "count": f.count} for key, f in files.items()}}


def remove_leftovers(directory: Path) -> list[Path]:
    """The temporary directories killed writes of this cache left behind (see write_prepared)."""
    directory = Path(directory)
    found = sorted(directory.parent.glob(f".{directory.name}.*.tmp")) if directory.parent.is_dir() else []
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def write_prepared(directory: Path, corpora: Iterable[CorpusSource], built_from: dict) -> dict:
    """Write the cache (corpus after corpus, chunk after chunk: memory holds one chunk) into a
    temporary directory beside `directory`, the manifest last, then rename it into place (an
    older cache is replaced only then). Returns the manifest."""
    dtype = id_dtype(built_from["vocab"])
    text = bool(built_from["text"])
    manifest: dict = {}

    def write(tmp: Path) -> None:
        entries = [_write_corpus(tmp, source, dtype, text) for source in corpora]
        manifest.update({"format": FORMAT, "built_from": built_from, "corpora": entries})
        write_json_atomic(tmp / MANIFEST, manifest)

    write_dir_atomic(Path(directory), write)
    return manifest


# --------------------------------------------------------------------------- reading


def _encoded_pairs(src_len, src_ids, tgt_len, tgt_ids):
    from .batching import EncodedPairs  # torch: loaded only when training takes pairs

    return EncodedPairs.from_flat(src_len, tgt_len, src_ids, tgt_ids)


def _gather(offsets: np.ndarray, ids: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and concatenated ids of pairs `index`, copied out of the maps in one fancy index."""
    start = np.asarray(offsets[index], dtype=np.int64)
    length = np.asarray(offsets[index + 1], dtype=np.int64) - start
    out_start = np.cumsum(length) - length
    positions = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(start - out_start, length)
    return length, np.asarray(ids[positions], dtype=np.int32)


@dataclass
class PreparedCorpus:
    """One corpus of a cache, memory-mapped and read-only."""

    name: str
    src_offsets: np.ndarray
    src_ids: np.ndarray
    tgt_offsets: np.ndarray
    tgt_ids: np.ndarray
    counts: FilterCounts
    text: dict = field(default_factory=dict)  # side -> (bytes, offsets, file), when kept

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_start(self) -> np.ndarray:
        return self.src_offsets[:-1]

    @property
    def tgt_start(self) -> np.ndarray:
        return self.tgt_offsets[:-1]

    @cached_property
    def src_len(self) -> np.ndarray:  # computed once, on first use: 8 bytes a pair in memory
        return np.diff(self.src_offsets)

    @cached_property
    def tgt_len(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def take(self, index: np.ndarray):
        """Pairs `index` (any order, repeats allowed) as a batching.EncodedPairs: a pool. Copies
        only those pairs' ids out of the maps."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"{self.name}: pair index out of range 0..{len(self) - 1}")
        src_len, src_ids = _gather(self.src_offsets, self.src_ids, index)
        tgt_len, tgt_ids = _gather(self.tgt_offsets, self.tgt_ids, index)
        self.release()
        return _encoded_pairs(src_len, src_ids, tgt_len, tgt_ids)

    def release(self) -> None:
        """The maps' pages out of the process's memory (module docstring)."""
        _release(self.src_offsets, self.src_ids, self.tgt_offsets, self.tgt_ids,
                 *(a for data, offsets, _ in self.text.values() for a in (data, offsets)))

    def texts(self, index: np.ndarray) -> list[tuple[str, str]]:
        """The text of pairs `index`; only in a cache built with data.sampling set."""
        if not self.text:
            raise TxError(f"{self.name}: this cache keeps no text (built without data.sampling); {RERUN}")
        sides = []
        for side in ("src", "tgt"):
            data, offsets, path = self.text[side]
            try:
                sides.append([bytes(data[offsets[i]:offsets[i + 1]]).decode("utf-8") for i in index])
            except UnicodeDecodeError:
                raise TxError(f"{path}: damaged (not UTF-8); {RERUN}") from None
        self.release()
        return list(zip(*sides))


@dataclass
class PreparedData:
    corpora: list[PreparedCorpus]
    manifest: dict
    directory: Path

    def corpus(self, name: str) -> PreparedCorpus:
        return next(c for c in self.corpora if c.name == name)


def _map(directory: Path, spec: dict) -> tuple[np.ndarray, Path]:
    """An array file mapped read-only, after checking it holds exactly what the manifest says."""
    path = directory / spec["file"]
    dtype = np.dtype(spec["dtype"])
    want = spec["count"] * dtype.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise TxError(f"{path}: missing from the cache; {RERUN}") from None
    if size != want:
        raise TxError(f"{path}: {size} bytes where the manifest says {want}: truncated or damaged; {RERUN}")
    if spec["count"] == 0:  # mmap refuses an empty file
        return np.zeros(0, dtype), path
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=dtype), path


def _release(*arrays: np.ndarray) -> None:
    """Take the pages of mapped arrays out of the process (they stay in the page cache; the next
    read maps them again). Nothing on a system without MADV_DONTNEED or for an array not mapped."""
    for array in arrays:
        mapped = array.base.obj if isinstance(array.base, memoryview) else array.base  # np.frombuffer's base
        if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)


def _check_offsets(offsets: np.ndarray, n_items: int, path: Path) -> None:
    if offsets[0] != 0 or offsets[-1] != n_items or np.any(offsets[1:] < offsets[:-1]):
        raise TxError(f"{path}: damaged: offsets must rise from 0 to {n_items}; {RERUN}")


def _check_ids(ids: np.ndarray, vocab: int, path: Path) -> None:
    if len(ids) and (int(ids.max()) >= vocab or int(ids.min()) < 0):
        raise TxError(f"{path}: damaged: ids outside the vocabulary of {vocab}; {RERUN}")


def _open_corpus(directory: Path, entry: dict, vocab: dict, text: bool) -> PreparedCorpus:
    arrays, kept = {}, {}
    for side in ("src", "tgt"):
        ids, offsets, ids_path = _with_offsets(directory, entry, f"{side}_ids", f"{side}_offsets")
        _check_ids(ids, vocab[side], ids_path)
        arrays[side] = (offsets, ids)
        if text:
            data, text_offsets, data_path = _with_offsets(directory, entry, f"{side}_text", f"{side}_text_offsets")
            kept[side] = (data, text_offsets, data_path)
    corpus = PreparedCorpus(entry["name"], *arrays["src"], *arrays["tgt"],
                            FilterCounts.from_dict(entry["counts"]), kept)
    corpus.release()  # the checks read every page
    return corpus


def _with_offsets(directory: Path, entry: dict, data_key: str, offsets_key: str):
    """An array and its offsets (one a pair, plus the end), mapped and checked against each other."""
    data, data_path = _map(directory, entry["arrays"][data_key])
    offsets, off_path = _map(directory, entry["arrays"][offsets_key])
    if len(offsets) != entry["pairs"] + 1:
        raise TxError(f"{off_path}: {len(offsets)} offsets for {entry['pairs']} pairs; {RERUN}")
    _check_offsets(offsets, len(data), off_path)
    return data, offsets, data_path


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise UsageError(f"{directory}: no tx prepare cache here (run tx prepare RECIPE)")
    if not path.is_file():
        raise TxError(f"{path}: missing: {directory} is not a complete tx prepare cache; {RERUN}")
    try:
        manifest = read_json(path)
    except TxError as err:
        raise TxError(f"{err}; {RERUN}") from None
    problem = check_manifest(manifest)
    if problem:
        raise TxError(f"{path}: damaged ({problem}); {RERUN}")
    return manifest


def open_prepared(directory: Path, expected: dict) -> PreparedData:
    """The cache in `directory`, checked whole and current against `expected` (manifest_for of the
    recipe's facts, hash_sources=False): a UsageError naming what changed when stale, a TxError
    naming the file when damaged."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    built = manifest["built_from"]
    try:
        reason = stale_reason(built, expected, file_sha256)
    except (KeyError, TypeError, AttributeError) as err:
        raise TxError(f"{directory / MANIFEST}: damaged (built_from: {err!r}); {RERUN}") from None
    if reason:
        raise UsageError(f"{directory}: stale cache: {reason}; {RERUN}")
    entries = {e["name"]: e for e in manifest["corpora"]}
    corpora = [_open_corpus(directory, entries[c["name"]], built["vocab"], built["text"])
               for c in expected["corpora"]]
    return PreparedData(corpora, manifest, directory)


def cache_directory(data, run_dir: Path) -> Path:
    """Where a recipe's cache lives: data.prepared, else RUN_DIR/prepared."""
    return Path(data.prepared) if data.prepared is not None else Path(run_dir) / "prepared"


def open_current(directory: Path, data, tokenizer_paths: tuple[Path, Path], vocab: tuple[int, int]) -> PreparedData:
    """open_prepared against what a recipe's `data` section and the run's tokenizers ask for now
    (what tx train calls): stale or damaged -> one line, telling to rerun tx prepare."""
    return open_prepared(directory, manifest_for(recipe_facts(data, tokenizer_paths, vocab), hash_sources=False))
