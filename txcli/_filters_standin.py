"""Stand-in for what the training pipeline calls from helper F's work (txcli/filters.py, and
tokenizer.training_encoder / tag_id, data.open_text), written against the same contract so the
pipeline runs and is tested before F's branch is merged. Only the filters training always had
(empty sides, data.max_len) and exact duplicates are implemented here; the other data.filters
keys are refused with one line rather than silently ignored.

At the merge this module goes away: every pipeline module imports these names from here and
nowhere else, so the swap is those import lines (see corpora.py, pools.py, commands/train.py).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np

from .errors import UsageError

FILTER_NAMES = ("empty", "max_len", "min_tokens", "max_tokens", "min_chars", "max_chars", "ratio", "same",
                "duplicate", "letters", "control", "langid")
EXAMPLES = 3
_UNSUPPORTED = ("min_tokens", "max_tokens", "min_chars", "max_chars", "max_ratio", "min_letters", "langid")


@dataclass
class FilterCounts:
    read: int = 0
    kept: int = 0
    dropped: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    def drop(self, name: str, src: str, tgt: str) -> None:
        self.dropped[name] = self.dropped.get(name, 0) + 1
        shown = self.examples.setdefault(name, [])
        if len(shown) < EXAMPLES:
            shown.append((src, tgt))

    def add(self, other: "FilterCounts") -> None:
        self.read += other.read
        self.kept += other.kept
        for name, n in other.dropped.items():
            self.dropped[name] = self.dropped.get(name, 0) + n

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": {k: self.dropped[k] for k in FILTER_NAMES if self.dropped.get(k)}}

    @classmethod
    def from_dict(cls, d: dict) -> "FilterCounts":
        return cls(int(d.get("read", 0)), int(d.get("kept", 0)), {k: int(v) for k, v in d.get("dropped", {}).items()})


class PairFilters:
    def __init__(self, settings, max_len: int):
        for key in _UNSUPPORTED:
            if getattr(settings, key, None) not in (None, False):
                raise UsageError(f"data.filters.{key}: not available in this build")
        if getattr(settings, "same", False) or getattr(settings, "control_chars", False):
            raise UsageError("data.filters: same / control_chars are not available in this build")
        self.max_len = max_len
        self.dedup = bool(getattr(settings, "duplicates", False))

    def text_reason(self, src: str, tgt: str) -> Optional[str]:
        return "empty" if not src.strip() or not tgt.strip() else None

    def token_reason(self, n_src: int, n_tgt: int) -> Optional[str]:
        return "max_len" if n_src > self.max_len or n_tgt > self.max_len else None


def pair_hash(src: str, tgt: str) -> int:
    digest = hashlib.blake2b(src.encode("utf-8") + b"\t\x00" + tgt.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def duplicate_mask(hashes: np.ndarray) -> np.ndarray:
    _, first = np.unique(hashes, return_index=True)
    mask = np.ones(len(hashes), dtype=bool)
    mask[first] = False
    return mask


def training_encoder(tokenizer, sampling) -> Callable[[list[str]], list[list[int]]]:
    if sampling is None:
        return tokenizer.encode_batch
    if getattr(sampling, "dropout", None) is None or not hasattr(tokenizer, "hf"):
        raise UsageError("data.sampling: only dropout on a bpe tokenizer is available in this build")
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(tokenizer.hf.to_str())
    hf.model.dropout = float(sampling.dropout)
    return lambda texts: [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]


def tag_id(tokenizer, tag: str) -> int:
    i = tokenizer.get_vocab().get(tag)
    if i is None:
        raise UsageError(f"data.train tag {tag!r}: not in the tokenizer's vocabulary (retrain the tokenizer)")
    return i


def open_text(path: Path) -> BinaryIO:
    path = Path(path)
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    if path.suffix.lower() == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")
