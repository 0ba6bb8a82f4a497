"""The weighted schedule of the training corpora: which pairs of which corpus go into each pool.

A pure function of (seed, corpus names and sizes, weights, pool size), so that the content of
any pool is known without reading any other: a resumed run rebuilds only the pool it resumes in,
and every torchrun rank agrees on the pools without talking.

- An epoch holds T = sum of the corpus sizes pairs, split between the corpora by weight
  (largest remainder): corpus c gives Q_c pairs an epoch. One corpus: Q = its size, so an epoch
  is exactly one pass over it. An epoch is P = ceil(T / pool_size) pools.
- Pool g of an epoch takes from corpus c the slots [g*Q_c/P, (g+1)*Q_c/P) of that epoch's
  quota, so every pool (not only the epoch) holds the mix.
- Corpus c's slots run through an endless stream of its pairs: pass k over the corpus is a fresh
  permutation seeded by (seed, c's name, k). A corpus given more than its size an epoch is
  repeated, one given less is met in parts, but every pair comes around before any repeats.
- Inside a pool the corpora are interleaved evenly (each corpus's pairs spread over the pool),
  so any stretch of it, and every rank's share (positions rank::world), holds the mix.
"""

from __future__ import annotations

import math
import zlib
from typing import Optional, Sequence

import numpy as np


def epoch_quotas(sizes: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Pairs each corpus gives an epoch: the sum of the sizes split by weight, largest remainder,
    at least one each (an empty corpus gives none)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    live = sizes > 0
    w = np.where(live, np.asarray(weights, dtype=np.float64), 0.0)
    if total == 0 or w.sum() == 0:
        return np.zeros(len(sizes), dtype=np.int64)
    exact = total * w / w.sum()
    quotas = np.floor(exact).astype(np.int64)
    short = total - int(quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:short]] += 1
    quotas[live & (quotas == 0)] = 1
    return quotas


def pools_per_epoch(sizes: Sequence[int], pool_size: int) -> int:
    return max(1, math.ceil(int(np.sum(sizes)) / pool_size))


def corpus_shares(sizes: Sequence[int], weights: Sequence[float], kept: Optional[Sequence[int]] = None) -> np.ndarray:
    """The share of the training pairs each corpus really gets: its epoch quota times the share of
    its pairs the filters keep (kept / size), normalised to sum to 1."""
    sizes = np.asarray(sizes, dtype=np.float64)
    rates = np.ones(len(sizes)) if kept is None else np.asarray(kept, np.float64) / np.maximum(sizes, 1)
    given = epoch_quotas(sizes.astype(np.int64), weights) * rates
    return given / given.sum() if given.sum() > 0 else given


def interleave(counts: Sequence[int]) -> np.ndarray:
    """The corpus of each position of a pool holding counts[c] pairs of corpus c: each corpus's
    pairs evenly spread (pair i of c sits near (i + 1/2) / counts[c] of the way through)."""
    keys = [(np.arange(n) + 0.5) / n for n in counts]
    corpus = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)]) if counts else np.zeros(0, np.int64)
    if len(corpus) == 0:
        return corpus
    return corpus[np.argsort(np.concatenate(keys), kind="stable")]


class Schedule:
    """Which pairs of each corpus (indices in file order) pool g of an epoch takes."""

    def __init__(self, seed: int, names: Sequence[str], sizes: Sequence[int], weights: Sequence[float],
                 pool_size: int):
        self.seed, self.names = seed, list(names)
        self.sizes = [int(n) for n in sizes]
        self.quotas = epoch_quotas(self.sizes, weights)
        self.n_pools = pools_per_epoch(self.sizes, pool_size)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def pool(self, epoch: int, g: int) -> list[np.ndarray]:
        """Per corpus, the indices of its pairs in pool g (0-based) of `epoch` (1-based)."""
        if not 0 <= g < self.n_pools:
            raise ValueError(f"pool {g} of {self.n_pools}")
        out = []
        for c, (size, quota) in enumerate(zip(self.sizes, self.quotas)):
            quota, p = int(quota), self.n_pools
            base = (epoch - 1) * quota
            out.append(self._positions(c, base + quota * g // p, base + quota * (g + 1) // p))
        return out

    def _positions(self, c: int, start: int, stop: int) -> np.ndarray:
        size = self.sizes[c]
        if stop <= start or size == 0:
            return np.zeros(0, dtype=np.int64)
        parts = []
        for k in range(start // size, (stop - 1) // size + 1):  # the passes the slots fall in
            lo, hi = max(start, k * size) - k * size, min(stop, (k + 1) * size) - k * size
            parts.append(self._permutation(c, k)[lo:hi])
        return np.concatenate(parts)

    def _permutation(self, c: int, k: int) -> np.ndarray:
        key = (c, k)
        if key not in self._perms:
            if len(self._perms) >= 2 * len(self.sizes):  # a pool needs at most two passes per corpus
                self._perms.pop(next(iter(self._perms)))
            name = zlib.crc32(self.names[c].encode("utf-8"))
            self._perms[key] = np.random.default_rng([self.seed, name, k]).permutation(self.sizes[c])
        return self._perms[key]
