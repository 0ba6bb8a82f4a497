"""Training batches: encode, filter by length, bucket by length, cut by a token budget, shuffle
per epoch from the seed, shard per rank.

The corpus is read as a stream in pools of `pool_size` pairs, so memory is bounded by the pool,
not the corpus. Inside a pool pairs are sorted by length (ties broken at random) and cut into
batches of at most `batch_tokens` padded tokens, and the batches are shuffled. A corpus that
fits in one pool is encoded once and kept; a larger one is re-read each epoch.

Every random choice comes from (seed, epoch, pool), so the batch sequence of an epoch is a pure
function of those: a resumed run skips the batches it already trained on and sees the same
batches next as a run that never stopped.

Layout of one pair: source = ids + </s>; target input = <s> + ids; target output = ids + </s>.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

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
        self.src_start = np.concatenate([[0], np.cumsum(self.src_len)[:-1]]).astype(np.int64)
        self.tgt_start = np.concatenate([[0], np.cumsum(self.tgt_len)[:-1]]).astype(np.int64)
        self.src_ids = np.concatenate(src).astype(np.int32) if src else np.zeros(0, np.int32)
        self.tgt_ids = np.concatenate(tgt).astype(np.int32) if tgt else np.zeros(0, np.int32)

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


def epoch_rng(seed: int, epoch: int, pool: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, pool])


@dataclass
class EpochStats:
    filtered: FilterStats = field(default_factory=FilterStats)
    batches: int = 0
    tokens: int = 0         # real source + target tokens
    padded_tokens: int = 0  # source + target cells in the padded batches


class BatchStream:
    """The training batches of one epoch after another, for one rank.

    `read_pairs` is called once per pass over the corpus and returns a fresh iterator of
    (source, target) strings. Each rank gets every world_size-th batch of a pool whose batch
    count was cut to a multiple of world_size, so all ranks take the same number of steps.
    """

    def __init__(self, read_pairs: Callable[[], Iterator[tuple[str, str]]], encode_src: Callable,
                 encode_tgt: Callable, *, max_len: int, batch_tokens: int, seed: int,
                 pool_size: int = 50_000, rank: int = 0, world_size: int = 1):
        self.read_pairs = read_pairs
        self.encode_src, self.encode_tgt = encode_src, encode_tgt
        self.max_len, self.batch_tokens, self.seed = max_len, batch_tokens, seed
        self.pool_size, self.rank, self.world_size = pool_size, rank, world_size
        self._cached: Optional[list[tuple[EncodedPairs, FilterStats]]] = None  # corpus fits one pool

    def _pools(self) -> Iterator[tuple[EncodedPairs, FilterStats]]:
        if self._cached is not None:
            yield from self._cached
            return
        pairs = self.read_pairs()
        n_pools, first = 0, None
        while True:
            chunk = list(_take(pairs, self.pool_size))
            if not chunk:
                break
            pool = encode_pairs(chunk, self.encode_src, self.encode_tgt, self.max_len)
            del chunk
            n_pools += 1
            first = pool if n_pools == 1 else None  # several pools: re-read each epoch, keep none
            yield pool
        if n_pools == 1 and first is not None:
            self._cached = [first]

    def epoch(self, epoch: int, skip: int = 0, stats: Optional[EpochStats] = None) -> Iterator[Batch]:
        """This rank's batches of `epoch` (1-based), after skipping the first `skip` global
        batches (all ranks together) that a resumed run already trained on."""
        stats = stats if stats is not None else EpochStats()
        global_index = 0
        for pool_index, (pool, filtered) in enumerate(self._pools()):
            stats.filtered.add(filtered)
            if len(pool) == 0:
                continue
            batches = length_buckets(pool.src_len, pool.tgt_len, self.batch_tokens,
                                     epoch_rng(self.seed, epoch, pool_index))
            batches = batches[: len(batches) - len(batches) % self.world_size]
            stats.batches += len(batches)
            for index in batches:
                s, t = pool.src_len[index] + 1, pool.tgt_len[index] + 1
                stats.tokens += int(s.sum() + t.sum())
                stats.padded_tokens += len(index) * int(s.max() + t.max())
            if global_index + len(batches) <= skip:
                global_index += len(batches)
                continue
            for k in range(self.rank, len(batches), self.world_size):
                if global_index + k >= skip:
                    yield pool.make_batch(batches[k])
            global_index += len(batches)


def _take(iterator: Iterator, n: int) -> Iterator:
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            return
        yield item


def eval_batches(pool: EncodedPairs, batch_tokens: int) -> list[tuple[np.ndarray, Batch]]:
    """Validation batches: length-sorted, unshuffled, with the pair indices they hold."""
    return [(index, pool.make_batch(index)) for index in length_buckets(pool.src_len, pool.tgt_len, batch_tokens, None)]
