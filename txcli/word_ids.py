"""Deterministic BPE ids for a chunk of texts, remembered per word: how `tx prepare` tokenizes a
corpus when the tokenizer has the shape tx trains (a `tokenizers` BPE model without dropout
behind a Metaspace pre-tokenizer that splits at every space, no post-processor, padding or
truncation).

For such a tokenizer, the ids of a text are the BPE model's ids of each piece of the normalized
text, piece after piece, the pieces being the text with every space made "▁", a "▁" put in front
unless it starts with one, and cut before every "▁". That is what the `tokenizers` pipeline does
(tokenizers/src/pre_tokenizers/metaspace.rs); it also builds token strings, offsets and a Python
object per text that `tx prepare` never reads, and its own word cache stops growing at 10,000
words. Here the model is asked once per distinct word; every later occurrence of the word is a
dict lookup, the words of a whole chunk come from one str.split, and the ids are gathered with
numpy.

Nothing the pipeline does is skipped on trust:
- normalization is the tokenizer's own (`normalize_str`), except for pure-ASCII text under a
  normalizer made only of NFC/NFKC/NFD/NFKD and Lowercase, where the result is known (Unicode
  normalization leaves ASCII as it is; Lowercase of ASCII is str.lower);
- a text holding an added token (the specials, a corpus tag, before or after normalization)
  would be cut around it by the pipeline: such a text, and a text that normalizes to nothing,
  goes through the tokenizer itself (`encode_batch_fast`);
- a tokenizer of any other shape gets no WordIds (`WordIds.of` returns None).
tests/test_word_ids.py compares the ids with the tokenizer's `encode_batch` on text made to
tell them apart.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate, chain, repeat
from typing import Optional

import numpy as np

MAX_WORDS = 500_000  # words remembered before the memory is emptied and refilled (its size: README, Performance)
_ASCII_KNOWN = {"NFC", "NFKC", "NFD", "NFKD", "Lowercase"}


def _normalizer_steps(config: Optional[dict]) -> Optional[list[str]]:
    """The normalizer's step types in order, or None when one is not a plain step."""
    if config is None:
        return []
    if config.get("type") == "Sequence":
        steps = config.get("normalizers", [])
        if any(s.get("type") == "Sequence" for s in steps):
            return None
        return [s.get("type") for s in steps]
    return [config.get("type")]


def _supported(config: dict) -> bool:
    model, pre = config.get("model") or {}, config.get("pre_tokenizer") or {}
    return (model.get("type") == "BPE" and not model.get("dropout")
            and pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "always" and pre.get("split") is True
            and len(pre.get("replacement", "")) == 1
            and config.get("post_processor") is None and config.get("truncation") is None
            and config.get("padding") is None)


class WordIds:
    """Callable on a list of texts: (ids per text as int64, all ids one text after another as
    int32), the ids the tokenizer's encode_batch gives."""

    def __init__(self, hf, config: dict, max_words: int = MAX_WORDS):
        self.hf, self.max_words = hf, max_words
        self.mark = config["pre_tokenizer"]["replacement"]
        self.normalize = hf.normalizer.normalize_str if hf.normalizer is not None else None
        steps = _normalizer_steps(config.get("normalizer"))
        self.ascii_known = steps is not None and set(steps) <= _ASCII_KNOWN
        self.lower = self.ascii_known and "Lowercase" in steps
        contents = {t.content for t in hf.get_added_tokens_decoder().values()}
        if self.normalize is not None:
            contents |= {self.normalize(c) for c in contents}
        contents.discard("")
        self.added = re.compile("|".join(map(re.escape, sorted(contents)))) if contents else None
        self._forget()

    @classmethod
    def of(cls, tokenizer, max_words: int = MAX_WORDS) -> Optional["WordIds"]:
        """A WordIds for a `tokenizers` tokenizer of the supported shape, else None."""
        hf = getattr(tokenizer, "hf", None)
        if hf is None or not hasattr(hf, "encode_batch_fast"):
            return None
        config = json.loads(hf.to_str())
        return cls(hf, config, max_words) if _supported(config) else None

    def _forget(self) -> None:
        self.index: dict[str, int] = {}  # word (without the leading mark) -> its row in the arrays below
        self.starts, self.lengths, self.ids = array("q"), array("q"), array("i")

    def _normalized(self, texts: list[str]) -> list[str]:
        normalize = self.normalize
        if normalize is None:
            return list(texts)
        if not self.ascii_known:
            return [normalize(t) for t in texts]
        out = [t.lower() for t in texts] if self.lower else list(texts)  # right for every ASCII text
        others = [i for i, t in enumerate(texts) if not t.isascii()]
        if others:
            # one call for them all: these normalizers change no "\n" and never join a character
            # across one (a line break has no decomposition and composes with nothing), so the
            # texts can be joined at "\n" and split again, unless one holds a "\n" itself
            joined = "\n".join(texts[i] for i in others)
            done = normalize(joined).split("\n")
            if joined.count("\n") != len(others) - 1 or len(done) != len(others):
                done = [normalize(texts[i]) for i in others]
            for i, text in zip(others, done):
                out[i] = text
        return out

    def _by_tokenizer(self, texts: list[str], normalized: list[str]) -> list[int]:
        """Positions of the texts the pipeline would treat otherwise than piece by piece."""
        slow = [i for i, s in enumerate(normalized) if not s]
        added = self.added
        if added is not None and (added.search("\n".join(texts)) or added.search("\n".join(normalized))):
            slow += [i for i, (t, s) in enumerate(zip(texts, normalized)) if s and (added.search(t) or added.search(s))]
        return sorted(slow)

    def _learn(self, words: list[str]) -> None:
        """Remember the ids of new words, asked of the BPE model itself (one call a word: cheaper
        than a batch through the pipeline, which normalizes and pre-tokenizes each again)."""
        tokenize, mark = self.hf.model.tokenize, self.mark
        found = [[t.id for t in tokenize(mark + word)] for word in words]
        lengths = [len(ids) for ids in found]
        first = len(self.starts)
        self.index.update(zip(words, range(first, first + len(words))))
        self.starts.extend(accumulate(lengths[:-1], initial=len(self.ids)))
        self.lengths.extend(lengths)
        self.ids.extend(chain.from_iterable(found))

    def _pieces(self, normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Lengths and flat ids of texts already normalized (none empty)."""
        if not normalized:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        mark = self.mark
        marked = [s.replace(" ", mark) for s in normalized]
        marked = [s if s.startswith(mark) else mark + s for s in marked]
        words_per_text = np.fromiter((s.count(mark) for s in marked), dtype=np.int64, count=len(marked))
        words = "".join(marked).split(mark)[1:]  # every text starts with the mark: none spans two texts
        rows = np.fromiter(map(self.index.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        unknown = np.flatnonzero(rows < 0).tolist()
        if unknown:
            self._learn(list(dict.fromkeys(words[i] for i in unknown)))
            rows[unknown] = [self.index[words[i]] for i in unknown]
        starts = np.frombuffer(self.starts, dtype=np.int64)[rows]
        word_len = np.frombuffer(self.lengths, dtype=np.int64)[rows]
        first_word = np.cumsum(words_per_text) - words_per_text
        text_len = np.add.reduceat(word_len, first_word)  # every text has a word: none is empty
        out_start = np.cumsum(word_len) - word_len
        at = np.repeat(starts - out_start, word_len) + np.arange(int(word_len.sum()), dtype=np.int64)
        return text_len.astype(np.int64), np.frombuffer(self.ids, dtype=np.int32)[at]

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if len(self.index) > self.max_words:
            self._forget()
        normalized = self._normalized(texts)
        slow = self._by_tokenizer(texts, normalized)
        if not slow:
            return self._pieces(normalized)
        fast = np.setdiff1d(np.arange(len(texts)), slow)
        fast_len, fast_ids = self._pieces([normalized[i] for i in fast.tolist()])
        slow_ids = [e.ids for e in self.hf.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)]
        slow_len = np.fromiter(map(len, slow_ids), dtype=np.int64, count=len(slow_ids))
        lengths = np.zeros(len(texts), dtype=np.int64)
        lengths[fast], lengths[slow] = fast_len, slow_len
        out = np.empty(int(lengths.sum()), dtype=np.int32)
        out_start = np.cumsum(lengths) - lengths
        for where, part_len, part in ((fast, fast_len, fast_ids),
                                      (np.asarray(slow), slow_len, np.fromiter((i for ids in slow_ids for i in ids),
                                                                               dtype=np.int32, count=int(slow_len.sum())))):
            part_start = np.cumsum(part_len) - part_len
            out[np.repeat(out_start[where] - part_start, part_len) + np.arange(len(part), dtype=np.int64)] = part
        return lengths, out
