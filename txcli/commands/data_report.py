"""`tx data`: what a recipe does to its training data, before any training.

Each corpus is read through the training pipeline's own steps (data.read_pairs, the duplicate
hashes, filters.PairFilters on the text, the tokenizer, PairFilters on the subword counts) and
reported: pairs read and kept, what each filter dropped (with examples), subword lengths of the
kept pairs, the share of the training pairs each corpus really gets, and the padding batching
will cost. The tokenizer is trained into the run directory if there is none, as tx train does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..batching import length_buckets
from ..checkpoint import tokenizer_files
from ..data import read_pairs
from ..filters import EXAMPLES, FilterCounts, PairFilters, SeenHashes, pair_hashes
from ..mixture import corpus_shares, epoch_quotas
from ..schema import Recipe
from ..tokenizer import tag_id
from .run import load_tokenizers, train_tokenizers

CHUNK = 4096  # pairs filtered and tokenized at a time: bounds memory, keeps the tokenizer's threads busy
PERCENTILES = (50, 90, 99)


@dataclass
class CorpusReport:
    name: str
    files: list[str]
    weight: float
    tag: Optional[str]
    counts: FilterCounts
    src_len: np.ndarray = field(repr=False)  # subwords of each kept pair's text (without the tag)
    tgt_len: np.ndarray = field(repr=False)
    share: float = 0.0   # of the training pairs, after the filters
    passes: float = 0.0  # times an epoch goes through this corpus

    def lengths(self, side: str) -> dict[str, int]:
        a = self.src_len if side == "src" else self.tgt_len
        if len(a) == 0:
            return {}
        values = np.percentile(a, PERCENTILES, method="higher")
        return {**{f"p{p}": int(v) for p, v in zip(PERCENTILES, values)}, "max": int(a.max())}

    def to_dict(self, examples: int) -> dict:
        return {"name": self.name, "files": self.files, "weight": self.weight, "tag": self.tag,
                **self.counts.to_dict(),
                "examples": {name: [list(pair) for pair in pairs[:examples]]
                             for name, pairs in self.counts.examples.items() if examples},
                "lengths": {"src": self.lengths("src"), "tgt": self.lengths("tgt")},
                "share": self.share, "epoch_passes": self.passes}


@dataclass
class Batching:
    pool_pairs: int       # pairs of one simulated pool (after the filters)
    batch_tokens: int
    batches: int          # in that pool
    padding: float        # share of the batch cells (source + target) that are padding

    def to_dict(self) -> dict:
        return {"pool_pairs": self.pool_pairs, "batch_tokens": self.batch_tokens, "batches": self.batches,
                "pairs_per_batch": self.pool_pairs / self.batches if self.batches else 0.0,
                "padding": self.padding}


@dataclass
class DataReport:
    corpora: list[CorpusReport]
    batching: Batching
    sample: Optional[int]        # pairs read per corpus at most (None: all)
    trained_tokenizer: bool      # tx data trained the run's tokenizer
    examples: int = EXAMPLES

    def to_dict(self) -> dict:
        return {"corpora": [c.to_dict(self.examples) for c in self.corpora], "batching": self.batching.to_dict(),
                "sample": self.sample, "trained_tokenizer": self.trained_tokenizer}


def data_report(recipe: Recipe, examples: int = EXAMPLES, sample: Optional[int] = None,
                progress: Callable[[str], None] = lambda message: None) -> DataReport:
    """Read every training corpus of the recipe (at most `sample` pairs each) and report it."""
    src_path, tgt_path = tokenizer_files(recipe.run_dir, recipe.tokenizer.joint)
    trained = not (src_path.is_file() and tgt_path.is_file())
    if trained:
        progress(f"training {recipe.tokenizer.kind} tokenizer ({recipe.tokenizer.vocab_size} subwords)")
        train_tokenizers(recipe)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    reports = []
    for corpus in recipe.data.corpora():
        if corpus.tag:
            tag_id(src_tok, corpus.tag)  # a tokenizer trained before the tag was added: say so now
        filters = PairFilters(recipe.data.filters_of(corpus), recipe.data.max_len)
        counts = FilterCounts(max_examples=examples)
        src_len, tgt_len = _read_corpus(corpus, filters, src_tok, tgt_tok, counts, sample,
                                        lambda n, name=corpus.name: progress(f"{name}: {n:,} pairs read"))
        reports.append(CorpusReport(corpus.name, [str(p) for p in corpus.files()], corpus.weight, corpus.tag,
                                    counts, src_len, tgt_len))
    fill_shares(reports)
    batching = _batching(reports, recipe.train.pool_size, recipe.train.batch_tokens, recipe.seed)
    return DataReport(reports, batching, sample, trained, examples)


def _read_corpus(corpus, filters: PairFilters, src_tok, tgt_tok, counts: FilterCounts, sample: Optional[int],
                 progress: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
    """Filter and tokenize one corpus as training does: duplicates (file order), text, subword counts."""
    seen = SeenHashes() if filters.dedup else None
    src_lengths: list[np.ndarray] = []
    tgt_lengths: list[np.ndarray] = []
    pairs = read_pairs(corpus)
    while True:
        limit = CHUNK if sample is None else min(CHUNK, sample - counts.read)
        chunk = [pair for _, pair in zip(range(limit), pairs)]
        if not chunk:
            break
        counts.read += len(chunk)
        duplicate = seen.add(pair_hashes(chunk)) if seen is not None else None
        texts = [chunk[i] for i in filters.keep_texts(chunk, counts, duplicate)]
        src_ids = src_tok.encode_batch([s for s, _ in texts])
        tgt_ids = tgt_tok.encode_batch([t for _, t in texts])
        kept = filters.keep_tokens(texts, src_ids, tgt_ids, counts)
        src_lengths.append(np.array([len(src_ids[i]) for i in kept], dtype=np.int32))
        tgt_lengths.append(np.array([len(tgt_ids[i]) for i in kept], dtype=np.int32))
        progress(counts.read)
    empty = np.zeros(0, dtype=np.int32)
    return (np.concatenate(src_lengths) if src_lengths else empty,
            np.concatenate(tgt_lengths) if tgt_lengths else empty)


def fill_shares(reports: list[CorpusReport]) -> None:
    """Each corpus's share of the training pairs and its passes per epoch, as training's schedule
    gives them (mixture): an epoch holds as many slots as the corpora have pairs together, split
    by weight (`epoch_quotas`); the filters keep kept_c/read_c of corpus c's slots
    (`corpus_shares`), and corpus c is gone through quota_c / read_c times an epoch."""
    sizes = [r.counts.read for r in reports]
    weights = [r.weight for r in reports]
    shares = corpus_shares(sizes, weights, [r.counts.kept for r in reports])
    for r, share, quota in zip(reports, shares, epoch_quotas(sizes, weights)):
        r.share = float(share)
        r.passes = float(quota) / r.counts.read if r.counts.read else 0.0


def _batching(reports: list[CorpusReport], pool_size: int, batch_tokens: int, seed: int) -> Batching:
    """One pool as training makes it (the pairs of each corpus by its share, a tagged source one
    subword longer), cut into batches by batching.length_buckets: how much of it is padding."""
    rng = np.random.default_rng(seed)
    total_kept = sum(r.counts.kept for r in reports)
    slots = min(pool_size, total_kept)
    src, tgt = [], []
    for r in reports:
        n = int(round(slots * r.share))
        if n == 0 or len(r.src_len) == 0:
            continue
        pick = rng.choice(len(r.src_len), size=n, replace=n > len(r.src_len))
        src.append(r.src_len[pick].astype(np.int64) + (1 if r.tag else 0))
        tgt.append(r.tgt_len[pick].astype(np.int64))
    if not src:
        return Batching(0, batch_tokens, 0, 0.0)
    src_len, tgt_len = np.concatenate(src), np.concatenate(tgt)
    batches = length_buckets(src_len, tgt_len, batch_tokens, rng)
    real = int(src_len.sum() + tgt_len.sum()) + 2 * len(src_len)  # + </s> (source), <s> or </s> (target)
    cells = sum(len(b) * int(src_len[b].max() + 1 + tgt_len[b].max() + 1) for b in batches)
    return Batching(len(src_len), batch_tokens, len(batches), 1.0 - real / cells)
