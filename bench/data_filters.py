"""What data.filters and data.sampling cost the data pipeline, in one run: pairs a second read,
filtered and tokenized, each way against plain reading + deterministic tokenization.

    python bench/gettext_corpus.py /tmp/gettext
    python bench/data_filters.py /tmp/gettext/train.src /tmp/gettext/train.tgt [--vocab 8000] [--pairs 200000]

Ways measured: encode (read + tokenize, what training does today), + every text and count filter
but langid (duplicates included), the same with str.split for a tokenizer (the filters' own speed), + langid (py3langid, when installed; on fewer pairs: it is
by far the dearest), BPE-dropout 0.1 instead of the deterministic encoder. The ratios are what
matters (the machine may be shared): a ratio near 1 means the filters are noise next to
tokenization.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from types import SimpleNamespace

from txcli.data import read_pairs
from txcli.filters import FilterCounts, PairFilters, SeenHashes, pair_hashes
from txcli.tokenizer import train_tokenizer, training_encoder

CHUNK = 4096
ALL_BUT_LANGID = dict(min_tokens=1, max_tokens=200, min_chars=1, max_chars=2000, max_ratio=3.0, same=True,
                      duplicates=True, min_letters=0.5, control_chars=True, langid=None)
NONE = {k: (False if isinstance(v, bool) else None) for k, v in ALL_BUT_LANGID.items()}


def run(pairs_of, encode, settings: dict, limit: int) -> tuple[float, FilterCounts]:
    """Pairs a second through read -> (duplicates, text filters) -> encode -> count filters."""
    filters = PairFilters(SimpleNamespace(**settings), max_len=256)
    counts, seen = FilterCounts(), SeenHashes() if filters.dedup else None
    pairs = itertools.islice(pairs_of(), limit)
    start = time.perf_counter()
    while chunk := list(itertools.islice(pairs, CHUNK)):
        counts.read += len(chunk)
        dup = seen.add(pair_hashes(chunk)) if seen is not None else None
        texts = [chunk[i] for i in filters.keep_texts(chunk, counts, dup)]
        src, tgt = encode([s for s, _ in texts]), encode([t for _, t in texts])
        filters.keep_tokens(texts, src, tgt, counts)
    return counts.read / (time.perf_counter() - start), counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("tgt", type=Path)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--pairs", type=int, default=200_000)
    args = ap.parse_args()
    corpus = SimpleNamespace(format="text", src=args.src, tgt=args.tgt)
    pairs_of = lambda: read_pairs(corpus)  # noqa: E731
    lines = (side for pair in itertools.islice(pairs_of(), 100_000) for side in pair)
    tok = train_tokenizer(lines, "bpe", args.vocab)
    start = time.perf_counter()
    n = sum(1 for _ in itertools.islice(pairs_of(), args.pairs))
    print(f"read only: {n / (time.perf_counter() - start):,.0f} pairs/s ({n:,} pairs)")
    base, _ = run(pairs_of, tok.encode_batch, NONE, args.pairs)
    print(f"read + encode (no filters): {base:,.0f} pairs/s")
    words = lambda texts: [t.split() for t in texts]  # noqa: E731 (no tokenizer: the filters' own cost)
    rows = [("+ every filter but langid", tok.encode_batch, ALL_BUT_LANGID, args.pairs),
            ("every filter but langid, words for subwords (the filters alone)", words, ALL_BUT_LANGID, args.pairs),
            ("no filters, words for subwords (reading alone)", words, NONE, args.pairs),
            ("BPE-dropout 0.1, no filters", training_encoder(tok, SimpleNamespace(dropout=0.1, alpha=None)), NONE,
             args.pairs)]
    try:
        import py3langid  # noqa: F401

        rows.append(("+ langid en/de only", tok.encode_batch,
                     {**NONE, "langid": SimpleNamespace(src="en", tgt="de")}, min(args.pairs, 20_000)))
    except ImportError:
        print("langid: py3langid not installed, not measured")
    for name, encode, settings, limit in rows:
        rate, counts = run(pairs_of, encode, settings, limit)
        print(f"{name}: {rate:,.0f} pairs/s = {rate / base:.2f}x of no filters; kept {counts.kept:,} of "
              f"{counts.read:,} ({', '.join(f'{k} {v:,}' for k, v in counts.to_dict()['dropped'].items()) or 'none dropped'})")


if __name__ == "__main__":
    main()
