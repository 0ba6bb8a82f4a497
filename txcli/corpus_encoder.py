"""One training corpus filtered and tokenized in file order, in chunks: what `tx prepare` writes
into its cache (txcli/prepared.py).

Per pair, in this order: the duplicates filter (a pair whose hash occurred earlier in the corpus,
whatever became of that earlier pair: the first occurrence is kept), the text filters
(PairFilters.text_reason), then tokenization and the token filters (PairFilters.token_reason on the
subword counts without the tag; a side that tokenizes to nothing is "empty"). The pairs kept are
the same whatever the order; the order decides only which name a pair dropped by several filters
is counted under. The corpus tag's id goes before each kept source.

Speed: a chunk is tokenized in one call, to flat numpy arrays without a Python step per token: by
word_ids.WordIds (each distinct word tokenized once) when the tokenizer has the shape tx trains,
else by the tokenizer's own batch call. The token filters are asked once per distinct (source
length, target length) in a chunk, not once a pair. Duplicates are dropped before tokenizing.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .filters import SeenHashes
from .prepared import EncodedChunk, FilterCounts, PairFilters, pair_hash
from .word_ids import WordIds

CHUNK = 16_384  # pairs per tokenizer call: large enough to keep every core busy, small in memory


def _flat(ids: list[list[int]], lengths: np.ndarray) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))


def _lengths(ids: list[list[int]]) -> np.ndarray:
    return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))


def batch_ids(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """tokenizer.encode_batch; for a Hugging Face tokenizer the same ids through encode_batch_fast,
    which skips the character offsets nothing here reads."""
    hf = getattr(tokenizer, "hf", None)
    if hf is not None and hasattr(hf, "encode_batch_fast"):
        return lambda texts: [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer.encode_batch


FlatEncoder = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # texts -> (ids per text, all ids)


def flat_encoder(tokenizer) -> FlatEncoder:
    """The fastest exact way to tokenize a chunk with `tokenizer`: WordIds when it applies, else
    batch_ids made flat."""
    word_ids = WordIds.of(tokenizer)
    if word_ids is not None:
        return word_ids
    encode = batch_ids(tokenizer)

    def flat(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = encode(texts)
        lengths = _lengths(ids)
        return lengths, _flat(ids, lengths)

    return flat


def flat_encoders(src_tok, tgt_tok) -> tuple[FlatEncoder, FlatEncoder]:
    """One flat encoder per side; one for both when the two are the same `tokenizers` model (a
    joint vocabulary), so that a word both sides use is tokenized once."""
    src = flat_encoder(src_tok)
    src_hf, tgt_hf = getattr(src_tok, "hf", None), getattr(tgt_tok, "hf", None)
    if isinstance(src, WordIds) and tgt_hf is not None and src_hf.to_str() == tgt_hf.to_str():
        return src, src
    return src, flat_encoder(tgt_tok)


def token_reasons(filters: PairFilters, src_len: np.ndarray, tgt_len: np.ndarray) -> list[Optional[str]]:
    """Per pair, the token filter dropping it (or None), asking `filters` once per distinct pair
    of lengths: its answer depends on the lengths only."""
    width = int(tgt_len.max(initial=0)) + 1
    keys, inverse = np.unique(src_len * width + tgt_len, return_inverse=True)
    table = []
    for key in keys.tolist():
        n_src, n_tgt = divmod(key, width)
        table.append("empty" if n_src == 0 or n_tgt == 0 else filters.token_reason(n_src, n_tgt))
    return [table[i] for i in inverse.ravel().tolist()]


def _ahead(produce: Callable[[], Iterator]) -> Iterator:
    """The items of produce() computed one ahead in a daemon thread; its exception is raised here."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                ready.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer is gone

    def work():
        try:
            for item in produce():
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as err:  # handed to the consumer, raised there
            put(("error", err))

    thread = threading.Thread(target=work, name="tx-prepare-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class CorpusEncoder:
    """A corpus as write_prepared reads it: `chunks()` filters and tokenizes it once, and `counts`
    is complete when they are done."""

    def __init__(self, name: str, pairs: Iterable[tuple[str, str]], filters: PairFilters,
                 encode_src: FlatEncoder, encode_tgt: FlatEncoder,
                 tag_id: Optional[int] = None, keep_text: bool = False, chunk: int = CHUNK):
        self.name, self.pairs, self.filters = name, pairs, filters
        self.encode_src, self.encode_tgt = encode_src, encode_tgt
        self.tag_id, self.keep_text, self.chunk = tag_id, keep_text, chunk
        self.counts = FilterCounts()

    def chunks(self) -> Iterator[EncodedChunk]:
        """Reading and the text filters run one chunk ahead in a thread, while the tokenizer
        (which lets go of the GIL) works on the chunk before."""
        seen = SeenHashes() if self.filters.dedup else None
        pairs = iter(self.pairs)
        read = iter(lambda: list(itertools.islice(pairs, self.chunk)), [])
        for n_read, survivors, dropped in _ahead(lambda: (self._text_filtered(chunk, seen) for chunk in read)):
            self.counts.read += n_read
            for reason, src, tgt in dropped:  # counted here: the counts belong to this thread alone
                self.counts.drop(reason, src, tgt)
            yield self._encode(survivors)

    def _text_filtered(self, chunk: list[tuple[str, str]], seen: Optional[SeenHashes]):
        """(pairs read, pairs the duplicate and text filters keep, (reason, src, tgt) of the others)."""
        text_reason = self.filters.text_reason
        dup = None
        if seen is not None:
            dup = seen.add(np.fromiter((pair_hash(s, t) for s, t in chunk), dtype=np.uint64, count=len(chunk)))
        survivors, dropped = [], []
        for i, (src, tgt) in enumerate(chunk):
            reason = "duplicate" if dup is not None and dup[i] else text_reason(src, tgt)
            if reason is None:
                survivors.append((src, tgt))
            else:
                dropped.append((reason, src, tgt))
        return len(chunk), survivors, dropped

    def _encode(self, survivors: list[tuple[str, str]]) -> EncodedChunk:
        srcs = [s for s, _ in survivors]
        tgts = [t for _, t in survivors]
        (src_len, src_flat), (tgt_len, tgt_flat) = self.encode_src(srcs), self.encode_tgt(tgts)
        reasons = token_reasons(self.filters, src_len, tgt_len)
        keep = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
        for i in np.flatnonzero(~keep).tolist():
            self.counts.drop(reasons[i], srcs[i], tgts[i])
        self.counts.kept += int(keep.sum())
        src_flat, tgt_flat = src_flat[np.repeat(keep, src_len)], tgt_flat[np.repeat(keep, tgt_len)]
        src_len, tgt_len = src_len[keep], tgt_len[keep]
        if self.tag_id is not None:
            src_flat = np.insert(src_flat, np.cumsum(src_len) - src_len, self.tag_id)
            src_len = src_len + 1
        text_src = text_tgt = None
        if self.keep_text:
            kept = np.flatnonzero(keep).tolist()
            text_src, text_tgt = [srcs[i] for i in kept], [tgts[i] for i in kept]
        return EncodedChunk(src_len, src_flat, tgt_len, tgt_flat, text_src, text_tgt)
