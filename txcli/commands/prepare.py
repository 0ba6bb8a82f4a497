"""`tx prepare`: the training corpora filtered and tokenized once into the memory-mapped cache
(txcli/prepared.py) that tx train then reads instead of the text. Trains the tokenizer into the
run directory first if there is none (as tx train does); keeps a cache that is current unless
forced; rebuilds a stale or damaged one, saying why."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..checkpoint import tokenizer_files
from ..corpus_encoder import CorpusEncoder, flat_encoders
from ..data import read_pairs
from ..errors import TxError
from ..prepared import (FilterCounts, PairFilters, cache_directory, manifest_for, open_prepared, recipe_facts,
                        remove_leftovers, tag_id, write_prepared)
from ..schema import Recipe
from .run import load_tokenizers, train_tokenizers


@dataclass
class CorpusPrepared:
    name: str
    counts: FilterCounts
    seconds: float  # reading, filtering, tokenizing and writing it (0 when the cache was current)
    bytes: int      # its arrays in the cache


@dataclass
class PrepareResult:
    directory: Path
    built: bool                # False: the cache was current and kept
    corpora: list[CorpusPrepared]
    seconds: float
    bytes: int
    rebuilt_because: Optional[str] = None  # what made an existing cache unusable
    tokenizer_trained: bool = False
    leftovers: int = 0         # half-written caches (killed writes) removed


class _Timed:
    """A corpus source whose time, from its first chunk to its last written, is measured."""

    def __init__(self, source: CorpusEncoder, on_start: Callable[[str], None]):
        self.source, self.on_start = source, on_start
        self.name, self.seconds = source.name, 0.0

    @property
    def counts(self) -> FilterCounts:
        return self.source.counts

    def chunks(self) -> Iterator:
        self.on_start(self.name)
        start = time.perf_counter()
        yield from self.source.chunks()
        self.seconds = time.perf_counter() - start


def _sizes(manifest: dict) -> dict[str, int]:
    import numpy as np

    return {e["name"]: sum(a["count"] * np.dtype(a["dtype"]).itemsize for a in e["arrays"].values())
            for e in manifest["corpora"]}


def _tokenizers(recipe: Recipe, on_tokenizer: Callable[[], None]):
    paths = tokenizer_files(recipe.run_dir, recipe.tokenizer.joint)
    trained = not all(p.is_file() for p in paths)
    if trained:
        on_tokenizer()
        train_tokenizers(recipe, force=True)  # none yet: no model can depend on one
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    return paths, src_tok, tgt_tok, trained


def prepare(recipe: Recipe, force: bool = False, on_corpus: Callable[[str], None] = lambda name: None,
            on_tokenizer: Callable[[], None] = lambda: None) -> PrepareResult:
    """Build (or keep, when current and not `force`) the recipe's cache."""
    start = time.perf_counter()
    directory = cache_directory(recipe.data, recipe.run_dir)
    paths, src_tok, tgt_tok, trained = _tokenizers(recipe, on_tokenizer)
    facts = recipe_facts(recipe.data, paths, (src_tok.vocab_size, tgt_tok.vocab_size))
    reason = None
    if directory.is_dir():
        try:
            current = open_prepared(directory, manifest_for(facts, hash_sources=False))
            if not force:
                sizes = _sizes(current.manifest)
                return PrepareResult(directory, False, [CorpusPrepared(c.name, c.counts, 0.0, sizes[c.name])
                                                        for c in current.corpora], time.perf_counter() - start,
                                     sum(sizes.values()), None, trained)
            reason = "--force"
        except TxError as err:  # stale (UsageError) or damaged: rebuilt
            reason = str(err)
    leftovers = remove_leftovers(directory)
    built_from = manifest_for(facts, hash_sources=True)  # sources stat'ed and hashed before they are read
    encode_src, encode_tgt = flat_encoders(src_tok, tgt_tok)
    sources = [_Timed(CorpusEncoder(c.name, read_pairs(c), PairFilters(recipe.data.filters_of(c), recipe.data.max_len),
                                    encode_src, encode_tgt,
                                    tag_id(src_tok, c.tag) if c.tag else None, built_from["text"]), on_corpus)
               for c in recipe.data.corpora()]
    manifest = write_prepared(directory, sources, built_from)
    sizes = _sizes(manifest)
    corpora = [CorpusPrepared(s.name, s.counts, s.seconds, sizes[s.name]) for s in sources]
    return PrepareResult(directory, True, corpora, time.perf_counter() - start, sum(sizes.values()),
                         reason, trained, len(leftovers))
