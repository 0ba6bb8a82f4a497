"""Training batches: pairs of token ids, bucketed by length, cut by a token budget, shuffled
per pool from the seed; the stream of a rank's batches pool after pool (BatchStream).

Which pairs a pool holds, read and tokenized how, is the pool source's business (pools.py over
mixture.py's schedule); here a pool's pairs are sorted by length (ties broken at random) and
cut into batches of at most `batch_tokens` padded tokens, and the batches are shuffled.

Layout of one pair: source = ids + </s>; target input = <s> + ids; target output = ids + </s>.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from .filters import FILTER_NAMES, FilterCounts
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

ENCODE_CHUNK = 2048  # lines per tokenizer call: bounds the tokenizer's transient memory


@dataclass
class Batch:
    src: torch.Tensor      # [B, S]  ids + </s>, padded with PAD_ID
    tgt_in: torch.Tensor   # [B, T]  <s> + ids
    tgt_out: torch.Tensor  # [B, T]  ids + </s>
    n_tgt_tokens: int      # real (non-pad) target tokens: what the loss is averaged over

    def to(self, device) -> "Batch":
        if torch.device(device).type == "cpu":
            return self
        return Batch(self.src.to(device, non_blocking=True), self.tgt_in.to(device, non_blocking=True),
                     self.tgt_out.to(device, non_blocking=True), self.n_tgt_tokens)


@dataclass
class FilterStats:
    """What length filtering did to the pairs read so far."""

    kept: int = 0
    too_long: int = 0
    empty: int = 0

    def add(self, other: "FilterStats") -> None:
        self.kept += other.kept
        self.too_long += other.too_long
        self.empty += other.empty


class EncodedPairs:
    """Token ids of many pairs in two flat int32 arrays plus offsets: compact, and slicing a batch
    out of it needs no Python objects per token."""

    def __init__(self, src: list[np.ndarray], tgt: list[np.ndarray]):
        self.src_len = np.fromiter((len(a) for a in src), dtype=np.int64, count=len(src))
        self.tgt_len = np.fromiter((len(a) for a in tgt), dtype=np.int64, count=len(tgt))
        self.src_start = np.cumsum(self.src_len) - self.src_len
        self.tgt_start = np.cumsum(self.tgt_len) - self.tgt_len
        self.src_ids = np.concatenate(src).astype(np.int32) if src else np.zeros(0, np.int32)
        self.tgt_ids = np.concatenate(tgt).astype(np.int32) if tgt else np.zeros(0, np.int32)

    @classmethod
    def from_flat(cls, src_len: np.ndarray, tgt_len: np.ndarray, src_ids: np.ndarray, tgt_ids: np.ndarray) -> "EncodedPairs":
        """Pairs from their flat arrays (lengths; all ids one after another, in pair order)."""
        self = cls.__new__(cls)
        self.src_len, self.tgt_len = np.asarray(src_len, np.int64), np.asarray(tgt_len, np.int64)
        self.src_start = np.cumsum(self.src_len) - self.src_len
        self.tgt_start = np.cumsum(self.tgt_len) - self.tgt_len
        self.src_ids, self.tgt_ids = np.asarray(src_ids), np.asarray(tgt_ids)
        return self

    @classmethod
    def concat(cls, parts: list["EncodedPairs"]) -> "EncodedPairs":
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls([], [])
        cat = np.concatenate
        return cls.from_flat(cat([p.src_len for p in parts]), cat([p.tgt_len for p in parts]),
                             cat([p.src_ids for p in parts]), cat([p.tgt_ids for p in parts]))

    def take(self, index: np.ndarray) -> "EncodedPairs":
        """These pairs (in this order) in arrays of their own."""
        index = np.asarray(index, dtype=np.int64)
        return EncodedPairs.from_flat(self.src_len[index], self.tgt_len[index],
                                      _gather(self.src_ids, self.src_start[index], self.src_len[index]),
                                      _gather(self.tgt_ids, self.tgt_start[index], self.tgt_len[index]))

    def __len__(self) -> int:
        return len(self.src_len)

    def make_batch(self, index: np.ndarray) -> Batch:
        S = int(self.src_len[index].max()) + 1
        T = int(self.tgt_len[index].max()) + 1
        src = np.full((len(index), S), PAD_ID, dtype=np.int64)
        tgt = np.full((len(index), T + 1), PAD_ID, dtype=np.int64)  # <s> ids </s>, then split
        tgt[:, 0] = BOS_ID
        for row, i in enumerate(index):
            ns, nt = self.src_len[i], self.tgt_len[i]
            src[row, :ns] = self.src_ids[self.src_start[i]:self.src_start[i] + ns]
            src[row, ns] = EOS_ID
            tgt[row, 1:nt + 1] = self.tgt_ids[self.tgt_start[i]:self.tgt_start[i] + nt]
            tgt[row, nt + 1] = EOS_ID
        tgt = torch.from_numpy(tgt)
        tgt_in = tgt[:, :-1].masked_fill(tgt[:, :-1] == EOS_ID, PAD_ID)  # </s> is never an input
        n_tokens = int(self.tgt_len[index].sum()) + len(index)
        return Batch(torch.from_numpy(src), tgt_in, tgt[:, 1:].contiguous(), n_tokens)


def _gather(ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """ids[starts[0]:starts[0]+lengths[0]], ids[starts[1]:...], ... as one array."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=ids.dtype)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return ids[np.arange(total, dtype=np.int64) + shift]


def encode_pairs(pairs: Iterable[tuple[str, str]], encode_src: Callable, encode_tgt: Callable,
                 max_len: int, kept: Optional[list[int]] = None) -> tuple[EncodedPairs, FilterStats]:
    """Tokenize pairs (in chunks), dropping empty ones and those longer than max_len tokens on
    either side. encode_* take a list of strings and return a list of id lists. The positions
    of the pairs kept are appended to `kept` when given."""
    stats = FilterStats()
    seen = 0
    src_kept: list[np.ndarray] = []
    tgt_kept: list[np.ndarray] = []
    chunk: list[tuple[str, str]] = []

    def flush():
        nonlocal seen
        src_ids = encode_src([s for s, _ in chunk])
        tgt_ids = encode_tgt([t for _, t in chunk])
        for position, (s, t) in enumerate(zip(src_ids, tgt_ids), start=seen):
            if not s or not t:
                stats.empty += 1
            elif len(s) > max_len or len(t) > max_len:
                stats.too_long += 1
            else:
                src_kept.append(np.asarray(s, dtype=np.int32))
                tgt_kept.append(np.asarray(t, dtype=np.int32))
                if kept is not None:
                    kept.append(position)
        seen += len(chunk)
        chunk.clear()

    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == ENCODE_CHUNK:
            flush()
    if chunk:
        flush()
    stats.kept = len(src_kept)
    return EncodedPairs(src_kept, tgt_kept), stats


def length_buckets(src_len: np.ndarray, tgt_len: np.ndarray, batch_tokens: int,
                   rng: Optional[np.random.Generator]) -> list[np.ndarray]:
    """Indices sorted by (target, source) length, ties in random order, cut greedily so that
    sentences x longest side (+1 for </s>) stays within batch_tokens; then the batches shuffled.
    Without an rng: sorted and unshuffled (validation)."""
    n = len(src_len)
    perm = rng.permutation(n) if rng is not None else np.arange(n)
    order = perm[np.lexsort((src_len[perm], tgt_len[perm]))]
    width = np.maximum(src_len[order], tgt_len[order]) + 1
    batches, start, longest = [], 0, 0
    for pos in range(n):
        longest_here = max(longest, int(width[pos]))
        if pos > start and (pos - start + 1) * longest_here > batch_tokens:
            batches.append(order[start:pos])
            start, longest_here = pos, int(width[pos])
        longest = longest_here
    if start < n:
        batches.append(order[start:n])
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pool_rng(seed: int, epoch: int, pool: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, pool, rank])


@dataclass
class EpochStats:
    """What an epoch's data was, over all ranks: per corpus what the filters did (pairs read,
    kept, dropped by each filter), the batches, and the real and padded tokens in them."""

    counts: dict = field(default_factory=dict)  # corpus name -> FilterCounts
    batches: int = 0
    tokens: int = 0         # real source + target tokens
    padded_tokens: int = 0  # source + target cells in the padded batches

    @property
    def kept(self) -> int:
        return sum(c.kept for c in self.counts.values())

    def to_dict(self) -> dict:
        return {"batches": self.batches, "tokens": self.tokens, "padded_tokens": self.padded_tokens,
                "corpora": {name: c.to_dict() for name, c in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "EpochStats":
        return cls({name: FilterCounts.from_dict(c) for name, c in d.get("corpora", {}).items()},
                   int(d.get("batches", 0)), int(d.get("tokens", 0)), int(d.get("padded_tokens", 0)))

    def add_pool(self, names: list[str], vector: list[float], batches: int) -> None:
        """A pool's numbers (pool_vector's layout, summed over the ranks) added to the epoch's."""
        self.batches += batches
        self.tokens += int(vector[0])
        self.padded_tokens += int(vector[1])
        width = 2 + len(FILTER_NAMES)
        for k, name in enumerate(names):
            part = vector[2 + k * width: 2 + (k + 1) * width]
            dropped = {f: int(n) for f, n in zip(FILTER_NAMES, part[2:]) if n}
            self.counts.setdefault(name, FilterCounts()).add(FilterCounts.from_dict(
                {"read": int(part[0]), "kept": int(part[1]), "dropped": dropped}))


def pool_vector(names: list[str], counts: dict, tokens: int, padded: int) -> list[float]:
    """A rank's numbers of one pool as a flat list, for one all_reduce(SUM) over the ranks."""
    out = [float(tokens), float(padded)]
    for name in names:
        c = counts[name]
        out += [float(c.read), float(c.kept), *(float(c.dropped.get(f, 0)) for f in FILTER_NAMES)]
    return out


@dataclass
class _Built:
    """One pool, ready to train on: this rank's pairs, its batches and their token counts."""

    pairs: EncodedPairs
    counts: dict
    batches: list
    tokens: np.ndarray
    padded: np.ndarray


class BatchStream:
    """This rank's training batches, pool after pool, epoch after epoch.

    `pools` gives this rank's share of any pool (pools.TextPools or pools.PreparedPools). The
    next pool is built (read, filtered, tokenized, bucketed) on a background thread while the
    current one trains, one pool ahead at most. Each rank cuts its own share into batches; the
    ranks agree on a pool's batch count with one all_reduce(MIN) (`dist`), so all take the same
    number of steps, and sum the pool's numbers with one all_reduce(SUM).

    Every random choice comes from (seed, epoch, pool, rank), so the batches of a pool are a pure
    function of those: a resumed run rebuilds only the pool it stopped in and skips the batches
    it already trained on.
    """

    def __init__(self, pools, *, batch_tokens: int, seed: int, rank: int = 0, world_size: int = 1,
                 dist=None, prefetch: bool = True):
        self.pools, self.batch_tokens, self.seed = pools, batch_tokens, seed
        self.rank, self.world_size, self.dist = rank, world_size, dist
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tx-pools") if prefetch else None
        self._pending: Optional[tuple[tuple[int, int], Future]] = None

    @property
    def n_pools(self) -> int:
        return self.pools.n_pools

    def epoch(self, epoch: int, pool: int = 0, done: int = 0,
              stats: Optional[EpochStats] = None) -> Iterator[tuple[Batch, tuple[int, int]]]:
        """This rank's batches of `epoch` (1-based) from pool `pool` on, the first `done` of that
        pool skipped (a resumed run trained on them), each with the position after it: (pool,
        batches of it done). The numbers of the pool resumed inside (done > 0) are not added to
        `stats` again: the checkpoint's already hold them."""
        stats = stats if stats is not None else EpochStats()
        for g in range(pool, self.n_pools):
            built = self._get(epoch, g)
            n = len(built.batches)
            if self.dist is not None:
                n = int(self.dist.min([float(n)])[0])
            skip = done if g == pool else 0
            if skip == 0:
                vector = pool_vector(self.pools.names, built.counts, int(built.tokens[:n].sum()),
                                     int(built.padded[:n].sum()))
                if self.dist is not None:
                    vector = self.dist.sum(vector)
                stats.add_pool(self.pools.names, vector, n * self.world_size)
            for k in range(skip, n):
                after = (g + 1, 0) if k + 1 == n and g + 1 < self.n_pools else (g, k + 1)
                yield built.pairs.make_batch(built.batches[k]), after

    def _get(self, epoch: int, g: int) -> _Built:
        """Pool g of the epoch (from the background thread when it is there), and the next
        pool started."""
        key = (epoch, g)
        if self._executor is None:
            return self._build(*key)
        if self._pending is None or self._pending[0] != key:
            if self._pending is not None:
                self._pending[1].cancel()
            self._pending = (key, self._executor.submit(self._build, *key))
        built = self._pending[1].result()
        nxt = (epoch, g + 1) if g + 1 < self.n_pools else (epoch + 1, 0)
        self._pending = (nxt, self._executor.submit(self._build, *nxt))
        return built

    def _build(self, epoch: int, g: int) -> _Built:
        pairs, counts = self.pools.pool(epoch, g, self.rank, self.world_size)
        batches = length_buckets(pairs.src_len, pairs.tgt_len, self.batch_tokens,
                                 pool_rng(self.seed, epoch, g, self.rank)) if len(pairs) else []
        s = [pairs.src_len[b] + 1 for b in batches]
        t = [pairs.tgt_len[b] + 1 for b in batches]
        tokens = np.array([int(a.sum() + b.sum()) for a, b in zip(s, t)], dtype=np.int64)
        padded = np.array([len(a) * int(a.max() + b.max()) for a, b in zip(s, t)], dtype=np.int64)
        return _Built(pairs, counts, batches, tokens, padded)

    def close(self) -> None:
        """Stop the background thread (a pool it is building is finished first) and close the
        pool source."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending = None
        self.pools.close()



def eval_batches(pool: EncodedPairs, batch_tokens: int) -> list[tuple[np.ndarray, Batch]]:
    """Validation batches: length-sorted, unshuffled, with the pair indices they hold."""
    return [(index, pool.make_batch(index)) for index in length_buckets(pool.src_len, pool.tgt_len, batch_tokens, None)]
