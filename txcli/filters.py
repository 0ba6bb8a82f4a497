"""Training-pair filters (recipe `data.filters`): which pairs are dropped, and why.

A pair is counted under the first filter that drops it. The checks come in three kinds, applied
in this order by every reader (training, `tx data`, `tx prepare`): exact duplicates over the
whole corpus in file order (64-bit hashes in numpy arrays, so memory is 8 bytes a pair, not a
set of strings), checks on the text (`PairFilters.text_reason`) and checks on the subword
counts (`PairFilters.token_reason`). Filters that are off cost nothing: only the checks set in
the recipe are built. Text checks use str methods and compiled regexes, never a Python loop per
character, because the data pipeline must keep up with training and `tx prepare` aims at 100k
pairs a second.

`settings` is any object with the fields of schema.data.Filters (this module is core: no pydantic).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import Callable, Iterable, Optional

import numpy as np

from .errors import UsageError

FILTER_NAMES = ("empty", "max_len", "min_tokens", "max_tokens", "min_chars", "max_chars", "ratio", "same",
                "duplicate", "letters", "control", "langid")
EXAMPLES = 3  # pairs kept per filter to show what it dropped
EXAMPLE_CHARS = 200  # an example side is cut to this many characters: a report, not a copy of the data

# Unicode category Cc without the tab: what a pasted binary or a broken conversion leaves behind
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class FilterCounts:
    """What the filters did to one corpus: pairs read, kept, dropped per filter name, and the
    first few pairs each filter dropped."""

    def __init__(self, read: int = 0, kept: int = 0, dropped: Optional[dict[str, int]] = None,
                 max_examples: int = EXAMPLES):
        self.read, self.kept = read, kept
        self.dropped: dict[str, int] = dict(dropped or {})
        self.examples: dict[str, list[tuple[str, str]]] = {}
        self.max_examples = max_examples

    def drop(self, name: str, src: str, tgt: str) -> None:
        if name not in FILTER_NAMES:
            raise ValueError(f"unknown filter name {name!r}")
        self.dropped[name] = self.dropped.get(name, 0) + 1
        shown = self.examples.setdefault(name, [])
        if len(shown) < self.max_examples:
            shown.append((src[:EXAMPLE_CHARS], tgt[:EXAMPLE_CHARS]))

    def add(self, other: "FilterCounts") -> None:
        self.read += other.read
        self.kept += other.kept
        for name, n in other.dropped.items():
            self.dropped[name] = self.dropped.get(name, 0) + n
        for name, pairs in other.examples.items():
            shown = self.examples.setdefault(name, [])
            shown.extend(pairs[: max(0, self.max_examples - len(shown))])

    def to_dict(self) -> dict:
        """{"read", "kept", "dropped": {name: n}}: the filters that dropped something, in report order."""
        return {"read": self.read, "kept": self.kept,
                "dropped": {name: self.dropped[name] for name in FILTER_NAMES if self.dropped.get(name)}}

    @classmethod
    def from_dict(cls, d: dict) -> "FilterCounts":
        """From to_dict's dict (a checkpoint's, a cache manifest's); ValueError when damaged."""
        try:
            read, kept, dropped = int(d["read"]), int(d["kept"]), dict(d.get("dropped", {}))
        except (KeyError, TypeError, ValueError):
            raise ValueError("filter counts need integer 'read' and 'kept' and a 'dropped' mapping") from None
        unknown = sorted(set(dropped) - set(FILTER_NAMES))
        if unknown:
            raise ValueError(f"unknown filter name {unknown[0]!r} in filter counts")
        return cls(read, kept, {name: int(n) for name, n in dropped.items()})

    def __eq__(self, other) -> bool:
        return isinstance(other, FilterCounts) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"FilterCounts({self.to_dict()})"


# --------------------------------------------------------------------------- duplicates

_SEPARATOR = b"\xff"  # never occurs in UTF-8, so (a, bc) and (ab, c) hash differently


def pair_hash(src: str, tgt: str) -> int:
    """A 64-bit hash of the pair, the same in every process and on every machine (Python's own
    hash() is salted per process)."""
    data = src.encode("utf-8", "surrogatepass") + _SEPARATOR + tgt.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def pair_hashes(pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """pair_hash of each pair, as uint64."""
    return np.fromiter((pair_hash(s, t) for s, t in pairs), dtype=np.uint64)


def duplicate_mask(hashes: np.ndarray) -> np.ndarray:
    """True for every pair whose hash occurred earlier in the array (the first one is kept)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    mask = np.ones(len(hashes), dtype=bool)
    _, first = np.unique(hashes, return_index=True)
    mask[first] = False
    return mask


class SeenHashes:
    """Duplicates across chunks read one after another (file order): the hashes seen so far in
    one sorted uint64 array (8 bytes a distinct pair)."""

    def __init__(self):
        self.seen = np.zeros(0, dtype=np.uint64)

    def add(self, hashes: np.ndarray) -> np.ndarray:
        """Record a chunk's hashes; True for each pair seen before (earlier in this chunk or in an
        earlier chunk)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        mask = duplicate_mask(hashes)
        if len(self.seen):
            at = np.minimum(np.searchsorted(self.seen, hashes), len(self.seen) - 1)
            mask |= self.seen[at] == hashes
        new = np.unique(hashes[~mask])
        if len(new):
            self.seen = np.union1d(self.seen, new) if len(self.seen) else new
        return mask


# --------------------------------------------------------------------------- text checks


@functools.lru_cache(maxsize=1)
def _non_letter() -> "re.Pattern":
    """A character that is neither a letter, a combining mark (the vowel signs of Indic scripts,
    accents written apart) nor white space. Python's \\w leaves marks out, so the marks of the
    Basic Multilingual Plane are listed (built once, on first use: about 10 ms)."""
    marks = [c for c in range(0x300, 0x10000) if unicodedata.category(chr(c))[0] == "M"]
    spans, start, prev = [], marks[0], marks[0]
    for c in marks[1:] + [-1]:
        if c != prev + 1:
            spans.append(re.escape(chr(start)) + ("" if start == prev else "-" + re.escape(chr(prev))))
            start = c
        prev = c
    return re.compile(r"[\d_]|[^\w\s" + "".join(spans) + "]")


_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.split() splits ASCII text at
_ASCII_NOT_LETTER = bytes(c for c in range(128) if not chr(c).isalpha())


def letter_share_at_least(text: str, share: float) -> bool:
    """Whether letters (and combining marks) make at least `share` of the text's non-space
    characters. ASCII text is counted by bytes.translate (C speed); otherwise words made only of
    letters need no closer look, and only the other words go through the regex."""
    if text.isascii():
        raw = text.encode("ascii")
        total = len(raw.translate(None, _ASCII_SPACE))
        return total > 0 and len(raw.translate(None, _ASCII_NOT_LETTER)) >= share * total
    words = text.split()
    total = sum(map(len, words))
    if total == 0:
        return False
    mixed = [w for w in words if not w.isalpha()]
    if sum(map(len, mixed)) <= (1.0 - share) * total:  # even if all of them were non-letters
        return True
    non_letters = len(_non_letter().findall("".join(mixed)))
    return total - non_letters >= share * total


def _langid_checker(settings) -> Callable[[str, str], bool]:
    """(src, tgt) -> whether both sides are identified as the recipe's languages."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise UsageError("data.filters.langid needs the py3langid package: pip install 'tx[langid]'") from None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    known = set(identifier.labels)
    for side in ("src", "tgt"):
        code = getattr(settings, side)
        if code not in known:
            raise UsageError(f"data.filters.langid.{side}: {code!r} is not a language py3langid identifies")
    src_lang, tgt_lang = settings.src, settings.tgt
    classify = identifier.classify
    return lambda src, tgt: classify(src)[0] == src_lang and classify(tgt)[0] == tgt_lang


class PairFilters:
    """The filters of one corpus (its data.filters over the shared ones) and data.max_len."""

    def __init__(self, settings, max_len: int):
        self.max_len = max_len
        self.min_tokens, self.max_tokens = settings.min_tokens, settings.max_tokens
        self.max_ratio = settings.max_ratio
        self.dedup = bool(settings.duplicates)
        checks: list[tuple[str, Callable[[str, str], bool]]] = []  # (name, passes)
        lo, hi = settings.min_chars, settings.max_chars
        if lo is not None:
            checks.append(("min_chars", lambda s, t: len(s) >= lo and len(t) >= lo))
        if hi is not None:
            checks.append(("max_chars", lambda s, t: len(s) <= hi and len(t) <= hi))
        if settings.same:
            checks.append(("same", lambda s, t: s.strip() != t.strip()))
        if settings.min_letters is not None:
            share = settings.min_letters
            checks.append(("letters", lambda s, t: letter_share_at_least(s, share) and letter_share_at_least(t, share)))
        if settings.control_chars:
            search = _CONTROL.search
            checks.append(("control", lambda s, t: search(s) is None and search(t) is None))
        if settings.langid is not None:  # last: by far the dearest check
            checks.append(("langid", _langid_checker(settings.langid)))
        self._checks = checks

    def text_reason(self, src: str, tgt: str) -> Optional[str]:
        """The first text filter that drops the pair, or None: "empty" for a blank side, then the
        character bounds, same, letters, control, langid."""
        if not src or not tgt or src.isspace() or tgt.isspace():
            return "empty"
        for name, passes in self._checks:
            if not passes(src, tgt):
                return name
        return None

    def token_reason(self, n_src: int, n_tgt: int) -> Optional[str]:
        """The first subword-count filter that drops the pair, or None: "empty" (no subwords),
        "max_len" (data.max_len), min_tokens, max_tokens, "ratio"."""
        if n_src == 0 or n_tgt == 0:
            return "empty"
        if n_src > self.max_len or n_tgt > self.max_len:
            return "max_len"
        if self.min_tokens is not None and min(n_src, n_tgt) < self.min_tokens:
            return "min_tokens"
        if self.max_tokens is not None and max(n_src, n_tgt) > self.max_tokens:
            return "max_tokens"
        if self.max_ratio is not None and max(n_src, n_tgt) > self.max_ratio * min(n_src, n_tgt):
            return "ratio"
        return None

    def keep_texts(self, pairs: list[tuple[str, str]], counts: FilterCounts,
                   duplicate: Optional[np.ndarray] = None) -> list[int]:
        """The positions of the pairs that pass the duplicate flags (when given) and the text
        filters; the others are counted in `counts` (read is not: the caller counts what it read)."""
        kept = []
        for i, (src, tgt) in enumerate(pairs):
            if duplicate is not None and duplicate[i]:
                counts.drop("duplicate", src, tgt)
                continue
            reason = self.text_reason(src, tgt)
            if reason is not None:
                counts.drop(reason, src, tgt)
                continue
            kept.append(i)
        return kept

    def keep_tokens(self, pairs: list[tuple[str, str]], src_ids: list, tgt_ids: list,
                    counts: FilterCounts) -> list[int]:
        """The positions of the encoded pairs that pass the subword-count filters; the others are
        counted (their text from `pairs`, for the examples). Adds the kept ones to counts.kept."""
        kept = []
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            reason = self.token_reason(len(s), len(t))
            if reason is not None:
                counts.drop(reason, *pairs[i])
                continue
            kept.append(i)
        counts.kept += len(kept)
        return kept
