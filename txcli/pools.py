"""Where a training pool's pairs come from: the corpora's text (read, filtered, tokenized) or a
`tx prepare` cache (already filtered and tokenized). Both give `pool(epoch, g, rank, world)`:
this rank's share of pool g of the epoch, as EncodedPairs in the pool's interleaved order,
and what the filters did to that share, per corpus.

Which pairs a pool holds is mixture.Schedule's decision; a rank's share is the positions
rank::world of the interleaved pool, so each rank reads and tokenizes only its own pairs and
every stretch of every share holds the mix.

The tag id of a corpus (data.train.N.tag) goes before its source ids; the token filters count
the subwords without it, as tx prepare does (a tagged source still fits the model's positions:
max_len + tag + </s>). A corpus set that fits in one pool is tokenized once and kept (file order), unless
subword sampling is on: then every pool is tokenized anew, so the segmentation changes each epoch.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .filters import FILTER_NAMES, FilterCounts
from .batching import ENCODE_CHUNK, EncodedPairs
from .mixture import Schedule, interleave

Encoder = Callable[[list[str]], list[list[int]]]
KEPT = -1  # reason code of a kept pair (else its index in FILTER_NAMES)


class _Pools:
    """The share and assembly every pool source does; `_part(c, rows)` gives corpus c's pairs."""

    schedule: Schedule

    @property
    def names(self) -> list[str]:
        return self.schedule.names

    @property
    def n_pools(self) -> int:
        return self.schedule.n_pools

    def pool(self, epoch: int, g: int, rank: int = 0, world: int = 1) -> tuple[EncodedPairs, dict[str, FilterCounts]]:
        per_corpus = self.schedule.pool(epoch, g)
        corpus_of = interleave([len(a) for a in per_corpus])
        ordinal = np.zeros(len(corpus_of), dtype=np.int64)
        for c in range(len(per_corpus)):
            at = corpus_of == c
            ordinal[at] = np.arange(int(at.sum()))
        mine = np.arange(rank, len(corpus_of), world)
        seq, ords = corpus_of[mine], ordinal[mine]
        parts, counts, rows_of = [], {}, np.full(len(mine), -1, dtype=np.int64)
        offset = 0
        for c, name in enumerate(self.names):
            at = seq == c
            pairs, kept, counts[name] = self._part(c, per_corpus[c][ords[at]])
            rows = np.full(len(kept), -1, dtype=np.int64)
            rows[kept] = offset + np.arange(int(kept.sum()))
            rows_of[at] = rows
            offset += int(kept.sum())
            parts.append(pairs)
        order = rows_of[rows_of >= 0]
        return EncodedPairs.concat(parts).take(order), counts

    def _part(self, c: int, rows: np.ndarray) -> tuple[EncodedPairs, np.ndarray, FilterCounts]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def encode_texts(pairs: list[tuple[str, str]], encode_src: Encoder, encode_tgt: Encoder, filters,
                 tag: Optional[int], counts: FilterCounts, text_filters: bool = True) -> tuple[EncodedPairs, np.ndarray]:
    """Filter and tokenize pairs: the kept ones as EncodedPairs, and each pair's reason code
    (KEPT, or the index of the filter that dropped it in FILTER_NAMES). Counted in `counts`."""
    codes = np.full(len(pairs), KEPT, dtype=np.int8)

    def drop(i, reason):
        codes[i] = FILTER_NAMES.index(reason)
        counts.drop(reason, *pairs[i])

    if text_filters:
        for i, (s, t) in enumerate(pairs):
            reason = filters.text_reason(s, t)
            if reason is not None:
                drop(i, reason)
    src_kept, tgt_kept = [], []
    todo = np.flatnonzero(codes == KEPT)
    for start in range(0, len(todo), ENCODE_CHUNK):
        chunk = todo[start:start + ENCODE_CHUNK]
        src_ids = encode_src([pairs[i][0] for i in chunk])
        tgt_ids = encode_tgt([pairs[i][1] for i in chunk])
        for i, s, t in zip(chunk, src_ids, tgt_ids):
            reason = filters.token_reason(len(s), len(t))  # "empty" when a side has no subwords
            if reason is not None:
                drop(i, reason)
                continue
            src_kept.append(np.asarray(s if tag is None else [tag, *s], dtype=np.int32))
            tgt_kept.append(np.asarray(t, dtype=np.int32))
    counts.read += len(pairs)
    counts.kept += len(src_kept)
    return EncodedPairs(src_kept, tgt_kept), codes


class TextPools(_Pools):
    """Pools read from the corpora's text (corpora.CorpusIndex), filtered and tokenized here.

    `keep`: tokenize a corpus set that fits in one pool once and keep it (False when subword
    sampling is on)."""

    def __init__(self, corpora: Sequence, weights: Sequence[float], filters: Sequence, tags: Sequence[Optional[int]],
                 encode_src: Encoder, encode_tgt: Encoder, *, seed: int, pool_size: int, keep: bool = True):
        self.corpora, self.filters, self.tags = list(corpora), list(filters), list(tags)
        self.encode_src, self.encode_tgt = encode_src, encode_tgt
        sizes = [len(c) for c in self.corpora]
        self.schedule = Schedule(seed, [c.name for c in self.corpora], sizes, weights, pool_size)
        self.keep = keep and sum(sizes) <= pool_size
        self._kept: dict[int, tuple[EncodedPairs, np.ndarray, np.ndarray]] = {}  # c -> (pairs, row of each index, reason code)

    def _part(self, c: int, index: np.ndarray) -> tuple[EncodedPairs, np.ndarray, FilterCounts]:
        if self.keep:
            return self._from_kept(c, index)
        counts = FilterCounts()
        encoded, codes = self._read_and_encode(c, index, counts)
        return encoded, codes == KEPT, counts

    def _read_and_encode(self, c: int, index: np.ndarray, counts: FilterCounts) -> tuple[EncodedPairs, np.ndarray]:
        corpus = self.corpora[c]
        pairs = corpus.read(index)
        dup = corpus.duplicates[index] if corpus.duplicates is not None else np.zeros(len(index), dtype=bool)
        for i in np.flatnonzero(dup):
            counts.drop("duplicate", *pairs[i])
        codes = np.full(len(index), FILTER_NAMES.index("duplicate"), dtype=np.int8)
        encoded, codes[~dup] = encode_texts([p for p, d in zip(pairs, dup) if not d], self.encode_src,
                                            self.encode_tgt, self.filters[c], self.tags[c], counts)
        counts.read += int(dup.sum())
        return encoded, codes

    def _from_kept(self, c: int, index: np.ndarray) -> tuple[EncodedPairs, np.ndarray, FilterCounts]:
        if c not in self._kept:  # the whole corpus, tokenized once in file order
            encoded, codes = self._read_and_encode(c, np.arange(len(self.corpora[c])), FilterCounts())
            row = np.full(len(codes), -1, dtype=np.int64)
            row[codes == KEPT] = np.arange(len(encoded))
            self._kept[c] = (encoded, row, codes)
        encoded, row, reason = self._kept[c]
        codes = reason[index]
        mask = codes == KEPT
        dropped = {FILTER_NAMES[code]: int(n) for code, n in zip(*np.unique(codes[~mask], return_counts=True))}
        counts = FilterCounts.from_dict({"read": len(index), "kept": int(mask.sum()), "dropped": dropped})
        return encoded.take(row[index][mask]), mask, counts

    def close(self) -> None:
        for corpus in self.corpora:
            corpus.close()


class PreparedPools(_Pools):
    """Pools taken from a `tx prepare` cache (prepared.PreparedData): its corpora hold only kept
    pairs, tokenized, tags already in place, so the schedule runs over the kept pairs and a pool
    copies just its rows out of the memory map. With subword sampling (`encoders` given), the
    kept pairs' text is tokenized anew each pool and only the token filters apply again."""

    def __init__(self, data, weights: Sequence[float], *, seed: int, pool_size: int,
                 encoders: Optional[tuple[Encoder, Encoder]] = None, filters: Optional[Sequence] = None,
                 tags: Optional[Sequence[Optional[int]]] = None):
        self.corpora = list(data.corpora)
        self.encoders, self.filters = encoders, filters
        self.tags = list(tags) if tags is not None else [None] * len(self.corpora)
        self.schedule = Schedule(seed, [c.name for c in self.corpora], [len(c) for c in self.corpora], weights,
                                 pool_size)

    def _part(self, c: int, index: np.ndarray) -> tuple[EncodedPairs, np.ndarray, FilterCounts]:
        corpus = self.corpora[c]
        if self.encoders is None:
            return corpus.take(index), np.ones(len(index), dtype=bool), FilterCounts.from_dict({"read": len(index), "kept": len(index), "dropped": {}})
        counts = FilterCounts()
        encoded, codes = encode_texts(corpus.texts(index), *self.encoders, self.filters[c], self.tags[c], counts,
                                      text_filters=False)
        return encoded, codes == KEPT, counts
