"""tx prepare before and after word_ids, in one run, on four corpora: the gettext corpus
(bench/gettext_corpus.py, ~52k en-de pairs, no pair repeated); it repeated to ~3M pairs; the same
with data.filters.duplicates (the repeats are dropped before tokenizing); and English to many
languages (~720k pairs, none repeated, a target side that keeps meeting new words: the corpus
that does not flatter a per-word memory). Per corpus and round, "before" runs tx prepare's own
reading, filters and writing with the tokenizer's encode_batch (what tx prepare called before
word_ids.WordIds), "after" is tx prepare itself; the two caches are compared byte for byte.
Yardsticks over pairs in memory: encode_batch_fast, its threads on and off, with the BPE model's
word cache at its default 10,000 words and at 1M; WordIds alone. Also: the time to open the big
cache and take a 50k-pair pool out of it, and what WordIds holds in memory.

    python bench/prepare_bench.py [--work DIR] [--repeat 58] [--vocab 8000] [--rounds 2] [--langs de,fr,...]

Every corpus uses one tokenizer, trained on the small corpus and copied, so tx prepare's time is
filtering, tokenizing and writing only. Timings on a shared machine move with its load: the load
average is printed with every line, and CPU seconds beside the wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = """\
name: prepare-bench
run_dir: {run}
data:
  train: {{src: {corpus}/train.en, tgt: {corpus}/train.{tgt}}}
  valid: {{src: {corpus}/valid.en, tgt: {corpus}/valid.{tgt}}}
{filters}
tokenizer: {{kind: bpe, vocab_size: {vocab}}}
"""
LANGS = ("de,fr,es,it,nl,pt,pt_BR,sv,pl,da,fi,cs,hu,ro,sk,sl,hr,ca,gl,nb,tr,id,eo,eu,lt,lv,et,ga,ast,oc,ia,af,"
         "sq,ms,vi,is,cy,nn,br,fur,rm,wa,fy,sw,zu,xh,tl,ku,uz,az")


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def corpus(work: Path, repeat: int, langs: str = "de") -> Path:
    out = work / (f"gettext-x{repeat}" if langs == "de" else "gettext-many")
    if not (out / "train.en").is_file():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gettext_corpus.py"), str(out), "--repeat", str(repeat),
                        "--lang", langs], check=True, stdout=subprocess.DEVNULL)
    return out


def recipe(work: Path, data: Path, vocab: int, name: str = "", duplicates: bool = False):
    from txcli.schema import load_recipe

    name = name or data.name
    tgt = "de" if (data / "train.de").is_file() else "many"
    path = work / f"{name}.yaml"
    filters = "  filters: {duplicates: true}" if duplicates else ""
    path.write_text(RECIPE.format(run=work / f"run-{name}", corpus=data, vocab=vocab, tgt=tgt, filters=filters),
                    encoding="utf-8")
    return load_recipe(path)


def _pairs(r, limit: int = 0) -> list[tuple[str, str]]:
    from itertools import islice

    from txcli.data import read_pairs

    pairs = read_pairs(r.data.corpora()[0])
    return list(islice(pairs, limit) if limit else pairs)


def _timed_encode(encode_src, encode_tgt, pairs) -> tuple[float, float]:
    from txcli.corpus_encoder import CHUNK

    cpu, start = cpu_seconds(), time.perf_counter()
    for i in range(0, len(pairs), CHUNK):
        chunk = pairs[i:i + CHUNK]
        encode_src([s for s, _ in chunk])
        encode_tgt([t for _, t in chunk])
    return time.perf_counter() - start, cpu_seconds() - cpu


def tokenizer_alone(r, limit: int = 0, cache: int = 0, threads: bool = True) -> tuple[float, float, int]:
    """Wall and CPU seconds encode_batch_fast takes over the corpus's pairs already in memory (both
    sides), from a freshly loaded tokenizer; `cache`: the BPE model's word cache resized to that
    many words; threads off: TOKENIZERS_PARALLELISM=false."""
    from txcli.commands.run import load_tokenizers
    from txcli.corpus_encoder import batch_ids

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    if cache:
        src_tok.hf.model._resize_cache(cache)
        tgt_tok.hf.model._resize_cache(cache)
    pairs = _pairs(r, limit)
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    if not threads:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        wall, cpu = _timed_encode(batch_ids(src_tok), batch_ids(tgt_tok), pairs)
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
        if before is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = before
    return wall, cpu, len(pairs)


def word_ids_alone(r, limit: int = 0) -> tuple[float, float, int, object]:
    """The same pairs through tx prepare's encoders (word_ids.WordIds), starting with no word known."""
    from txcli.commands.run import load_tokenizers
    from txcli.corpus_encoder import flat_encoders

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    encode_src, encode_tgt = flat_encoders(src_tok, tgt_tok)
    pairs = _pairs(r, limit)
    wall, cpu = _timed_encode(encode_src, encode_tgt, pairs)
    return wall, cpu, len(pairs), encode_src


def word_ids_bytes(w) -> tuple[int, int]:
    """(words, bytes) a WordIds holds: its dict, keys and values, and its arrays."""
    if not hasattr(w, "index"):
        return 0, 0
    held = sys.getsizeof(w.index) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in w.index.items())
    held += sum(a.buffer_info()[1] * a.itemsize for a in (w.starts, w.lengths, w.ids))
    return len(w.index), held


def yardsticks(name: str, r, limit: int) -> None:
    for label, kw in (("encode_batch_fast", {}), ("encode_batch_fast, its threads off", {"threads": False}),
                      ("encode_batch_fast, BPE word cache 1M", {"cache": 1_000_000}),
                      ("encode_batch_fast, BPE word cache 1M, threads off", {"cache": 1_000_000, "threads": False})):
        wall, cpu, n = tokenizer_alone(r, limit, **kw)
        print(f"  {name}, {n:,} pairs in memory, {label}: {n / wall:,.0f} pairs/s, {cpu * 1e6 / n:.1f} CPU us a pair "
              f"[load {os.getloadavg()[0]:.1f}]", flush=True)
    wall, cpu, n, w = word_ids_alone(r, limit)
    words, held = word_ids_bytes(w)
    print(f"  {name}, {n:,} pairs in memory, WordIds: {n / wall:,.0f} pairs/s, {cpu * 1e6 / n:.1f} CPU us a pair; "
          f"{words:,} words known, {held / 1e6:.1f} MB [load {os.getloadavg()[0]:.1f}]", flush=True)


def prepare(r) -> dict:
    from txcli.commands.prepare import prepare as run_prepare

    cpu, start = cpu_seconds(), time.perf_counter()
    result = run_prepare(r, force=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    (c,) = result.corpora
    return {"pairs": c.counts.read, "kept": c.counts.kept, "seconds": wall, "corpus_seconds": c.seconds,
            "pairs_per_s": c.counts.read / c.seconds, "cpu_us_per_pair": cpu * 1e6 / c.counts.read,
            "cache_mb": result.bytes / 1e6, "directory": result.directory}


def before(r, directory: Path) -> dict:
    """tx prepare's reading, filters and writing with the tokenizer's encode_batch: what tx prepare
    did before word_ids, into `directory`."""
    from txcli.checkpoint import tokenizer_files
    from txcli.commands.prepare import _Timed
    from txcli.commands.run import load_tokenizers
    from txcli.corpus_encoder import CorpusEncoder, _flat, _lengths
    from txcli.data import read_pairs
    from txcli.prepared import PairFilters, manifest_for, recipe_facts, write_prepared

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    paths = tokenizer_files(r.run_dir, r.tokenizer.joint)
    built_from = manifest_for(recipe_facts(r.data, paths, (src_tok.vocab_size, tgt_tok.vocab_size)), hash_sources=True)

    def flat(tok):
        def encode(texts):
            ids = tok.encode_batch(texts)
            lengths = _lengths(ids)
            return lengths, _flat(ids, lengths)
        return encode

    (c,) = r.data.corpora()
    source = _Timed(CorpusEncoder(c.name, read_pairs(c), PairFilters(r.data.filters_of(c), r.data.max_len),
                                  flat(src_tok), flat(tgt_tok), None, built_from["text"]), lambda name: None)
    cpu = cpu_seconds()
    shutil.rmtree(directory, ignore_errors=True)
    write_prepared(directory, [source], built_from)
    cpu = cpu_seconds() - cpu
    return {"pairs": source.counts.read, "kept": source.counts.kept, "corpus_seconds": source.seconds,
            "pairs_per_s": source.counts.read / source.seconds, "cpu_us_per_pair": cpu * 1e6 / source.counts.read}


def same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def before_after(name: str, r, work: Path) -> tuple[float, float]:
    """One round on one corpus: before, then after; (before, after) pairs/s."""
    old = before(r, work / f"before-{name}")
    print(f"  {name} before: {old['pairs']:,} pairs ({old['kept']:,} kept) in {old['corpus_seconds']:.1f} s, "
          f"{old['pairs_per_s']:,.0f} pairs/s, {old['cpu_us_per_pair']:.1f} CPU us a pair [load {os.getloadavg()[0]:.1f}]",
          flush=True)
    new = prepare(r)
    same = same_bytes(work / f"before-{name}", new["directory"])
    print(f"  {name} after:  {new['pairs']:,} pairs ({new['kept']:,} kept) in {new['corpus_seconds']:.1f} s, "
          f"{new['pairs_per_s']:,.0f} pairs/s, {new['cpu_us_per_pair']:.1f} CPU us a pair [load {os.getloadavg()[0]:.1f}]; "
          f"after/before {new['pairs_per_s'] / old['pairs_per_s']:.2f}x; caches {'byte-identical' if same else 'DIFFER'}",
          flush=True)
    if not same:
        raise SystemExit(f"{name}: the cache before and after differ")
    return old["pairs_per_s"], new["pairs_per_s"]


def open_and_take(r, pool: int = 50_000) -> tuple[float, float]:
    import numpy as np

    from txcli.checkpoint import tokenizer_files
    from txcli.commands.run import load_tokenizers
    from txcli.prepared import cache_directory, open_current

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    start = time.perf_counter()
    data = open_current(cache_directory(r.data, r.run_dir), r.data, tokenizer_files(r.run_dir, r.tokenizer.joint),
                        (src_tok.vocab_size, tgt_tok.vocab_size))
    opened = time.perf_counter() - start
    index = np.random.default_rng(0).permutation(len(data.corpora[0]))[:pool]
    start = time.perf_counter()
    data.corpora[0].take(index)
    return opened, time.perf_counter() - start


def report(name: str, r) -> dict:
    m = prepare(r)
    print(f"tx prepare {name}: {m['pairs']:,} pairs ({m['kept']:,} kept) in {m['seconds']:.1f} s "
          f"({m['corpus_seconds']:.1f} s the corpus: {m['pairs_per_s']:,.0f} pairs/s, "
          f"{m['cpu_us_per_pair']:.1f} CPU us a pair); cache {m['cache_mb']:,.1f} MB", flush=True)
    opened, took = open_and_take(r)
    print(f"  open the cache (checks included): {opened:.3f} s; take a 50k-pair pool: {took:.3f} s", flush=True)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="where corpora, runs and caches go (default: a temp dir, removed)")
    ap.add_argument("--repeat", type=int, default=58, help="the big corpus: the gettext training split this many times")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of before/after on every corpus")
    ap.add_argument("--langs", default=LANGS, help="the targets of the many-language corpus")
    ap.add_argument("--yardstick-pairs", type=int, default=200_000, help="pairs of each corpus the yardsticks encode")
    ap.add_argument("--only", default="", help="comma-separated corpora to run (53k, xN, xN+duplicates, many; default all)")
    ap.add_argument("--no-yardsticks", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tx-prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from txcli.commands.run import train_tokenizers

        small = recipe(work, corpus(work, 1), args.vocab)
        big_corpus = corpus(work, args.repeat)
        corpora = {"53k": small, f"x{args.repeat}": recipe(work, big_corpus, args.vocab),
                   f"x{args.repeat}+duplicates": recipe(work, big_corpus, args.vocab, "dedup", duplicates=True),
                   "many": recipe(work, corpus(work, 1, args.langs), args.vocab)}
        if not (small.run_dir / "tokenizer.json").is_file():
            train_tokenizers(small, force=True)
        for r in corpora.values():
            if r is not small:
                r.run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(small.run_dir / "tokenizer.json", r.run_dir / "tokenizer.json")
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start (a shared machine)", flush=True)
        if args.only:
            corpora = {name: r for name, r in corpora.items() if name in args.only.split(",")}
        for name in ("53k", "many"):
            if name in corpora and not args.no_yardsticks:
                yardsticks(name, corpora[name], args.yardstick_pairs)
        speeds: dict[str, list[tuple[float, float]]] = {name: [] for name in corpora}
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}:", flush=True)
            for name, r in corpora.items():
                speeds[name].append(before_after(name, r, work))
        print("summary: pairs/s before -> after (after/before), per round")
        for name, rounds in speeds.items():
            print(f"  {name}: " + "; ".join(f"{a:,.0f} -> {b:,.0f} ({b / a:.2f}x)" for a, b in rounds))
        if f"x{args.repeat}" in corpora:
            opened, took = open_and_take(corpora[f"x{args.repeat}"])
            print(f"x{args.repeat} cache: open (checks included) {opened:.3f} s; take a 50k-pair pool {took:.3f} s")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
