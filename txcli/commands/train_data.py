"""The training data of a recipe as `tx train` reads it: every corpus of data.train opened for
random access with its filters and tag, tokenized for training (data.sampling), mixed by weight
into pools, and this rank's batches of them (batching.BatchStream). Shared by the commands and
benches that read training data the way training does."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from ..filters import PairFilters
from ..tokenizer import tag_id, training_encoder
from ..batching import BatchStream
from ..corpora import CorpusIndex
from ..distributed import Dist
from ..checkpoint import tokenizer_files
from ..errors import UsageError
from ..pools import PreparedPools, TextPools
from ..prepared import MANIFEST, cache_directory, open_current
from ..schema import Recipe

TOKENIZER_THREADS = "TOKENIZERS_PARALLELISM"  # read by the tokenizers library at each call


def training_stream(recipe: Recipe, src_tok, tgt_tok, dist: Optional[Dist] = None, prefetch: bool = True) -> BatchStream:
    """This rank's training batches: every corpus of data.train opened for random access, its
    filters and tag, tokenized for training (data.sampling), mixed by weight."""
    dist = dist or Dist()
    data = recipe.data
    corpora = data.corpora()
    filters = [PairFilters(data.filters_of(c), data.max_len) for c in corpora]
    tags = [tag_id(src_tok, c.tag) if c.tag else None for c in corpora]
    encode_src, encode_tgt = training_encoder(src_tok, data.sampling), training_encoder(tgt_tok, data.sampling)
    cache = prepared_cache(recipe, (src_tok.vocab_size, tgt_tok.vocab_size))
    if cache is not None:
        pools = PreparedPools(cache, [c.weight for c in corpora], seed=recipe.seed, pool_size=recipe.train.pool_size,
                              encoders=(encode_src, encode_tgt) if data.sampling else None, filters=filters, tags=tags)
        return _stream(recipe, pools, dist, prefetch)
    opened: list[CorpusIndex] = []
    try:
        for corpus, f in zip(corpora, filters):
            opened.append(CorpusIndex(corpus.name, corpus, recipe.run_dir, dedup=f.dedup))
    except BaseException:
        for index in opened:
            index.close()
        raise
    pools = TextPools(opened, [c.weight for c in corpora], filters, tags, encode_src, encode_tgt, seed=recipe.seed,
                      pool_size=recipe.train.pool_size, keep=data.sampling is None)
    return _stream(recipe, pools, dist, prefetch)


def prepared_cache(recipe: Recipe, vocab: tuple[int, int]):
    """The `tx prepare` cache training reads, when there is one: data.prepared (which must then
    exist), else RUN_DIR/prepared if it holds a cache. Stale or damaged: one line, rerun tx prepare."""
    directory = cache_directory(recipe.data, recipe.run_dir)
    if not (directory / MANIFEST).is_file():
        if recipe.data.prepared is not None:
            raise UsageError(f"data.prepared: {directory}: no tx prepare cache there; run tx prepare on this recipe first")
        return None
    paths = tokenizer_files(recipe.run_dir, recipe.tokenizer.joint)
    return open_current(directory, recipe.data, paths, vocab)


def _stream(recipe: Recipe, pools, dist: Dist, prefetch: bool) -> BatchStream:
    return BatchStream(pools, batch_tokens=recipe.train.batch_tokens, seed=recipe.seed, rank=dist.rank,
                       world_size=dist.world_size, dist=dist if dist.world_size > 1 else None, prefetch=prefetch)


@contextlib.contextmanager
def tokenizer_threads_off():
    """While training, the next pool is tokenized on a background thread beside the step: the
    tokenizer's own thread pool then slows the training thread more than it speeds tokenizing
    (bench/pool_overlap.py), so it is off unless TOKENIZERS_PARALLELISM says otherwise. The
    tokenizer is trained before this, with its threads."""
    before = os.environ.get(TOKENIZER_THREADS)
    os.environ.setdefault(TOKENIZER_THREADS, "false")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKENIZER_THREADS, None)
