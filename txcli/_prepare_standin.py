"""Stand-in for helper F's txcli/filters.py and tokenizer.tag_id while the branches are apart:
the same names and signatures (ISSUE21_PLAN.md's contract), with only the filters tx had before
issue 21 (a blank side, data.max_len) plus the duplicate hashes. prepared.py imports these in one
place; at merge that import becomes `from .filters import ...` / `from .tokenizer import tag_id`
and this file goes.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from .errors import UsageError

FILTER_NAMES = ("empty", "max_len", "min_tokens", "max_tokens", "min_chars", "max_chars", "ratio", "same",
                "duplicate", "letters", "control", "langid")
EXAMPLES = 3


class FilterCounts:
    """What the filters did to one corpus: pairs read, kept, dropped per filter, a few examples."""

    def __init__(self, read: int = 0, kept: int = 0, dropped: Optional[dict] = None):
        self.read, self.kept = read, kept
        self.dropped: dict[str, int] = dict(dropped or {})
        self.examples: dict[str, list[tuple[str, str]]] = {}

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
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}

    @classmethod
    def from_dict(cls, d: dict) -> "FilterCounts":
        return cls(int(d["read"]), int(d["kept"]), {str(k): int(v) for k, v in d["dropped"].items()})


class PairFilters:
    def __init__(self, settings, max_len: int):
        self.max_len = max_len
        self.dedup = bool(getattr(settings, "duplicates", False))

    def text_reason(self, src: str, tgt: str) -> Optional[str]:
        return "empty" if not src.strip() or not tgt.strip() else None

    def token_reason(self, n_src: int, n_tgt: int) -> Optional[str]:
        return "max_len" if n_src > self.max_len or n_tgt > self.max_len else None


def pair_hash(src: str, tgt: str) -> int:
    digest = hashlib.blake2b(src.encode("utf-8") + b"\0" + tgt.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def duplicate_mask(hashes: np.ndarray) -> np.ndarray:
    """True for every hash that occurred earlier in the array (the first occurrence is kept)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    first = np.zeros(len(hashes), dtype=bool)
    first[np.unique(hashes, return_index=True)[1]] = True
    return ~first


def tag_id(tokenizer, tag: str) -> int:
    found = tokenizer.get_vocab().get(tag)
    if found is None:
        raise UsageError(f"tag {tag!r} is not in the tokenizer's vocabulary (retrain the tokenizer: tx train-tokenizer --force)")
    return found
