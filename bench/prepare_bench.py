"""tx prepare on the gettext corpus (bench/gettext_corpus.py, ~52k en-de pairs) and on it repeated
to ~3M pairs: time, pairs/s, CPU seconds, cache size; the time to open the big cache (what tx
train pays at start) and to take a 50k-pair pool out of it; and, as the yardstick, the tokenizer
alone (encode_batch over the same pairs already in memory) in the same run.

    python bench/prepare_bench.py [--work DIR] [--repeat 58] [--vocab 8000] [--rounds 3]

Both corpora use one tokenizer, trained once on the small corpus and copied, so tx prepare's time
is filtering, tokenizing and writing only. Timings on a shared machine move with its load: the
load average is printed before and after, and CPU seconds beside the wall time.
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
  train: {{src: {corpus}/train.en, tgt: {corpus}/train.de}}
  valid: {{src: {corpus}/valid.en, tgt: {corpus}/valid.de}}
tokenizer: {{kind: bpe, vocab_size: {vocab}}}
"""


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def corpus(work: Path, repeat: int) -> Path:
    out = work / f"gettext-x{repeat}"
    if not (out / "train.en").is_file():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gettext_corpus.py"), str(out), "--repeat", str(repeat)],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def recipe(work: Path, data: Path, vocab: int):
    from txcli.schema import load_recipe

    path = work / f"{data.name}.yaml"
    path.write_text(RECIPE.format(run=work / f"run-{data.name}", corpus=data, vocab=vocab), encoding="utf-8")
    return load_recipe(path)


def tokenizer_alone(r) -> tuple[float, float, int]:
    """Wall and CPU seconds encode_batch takes over the corpus's pairs already in memory (both sides)."""
    from txcli.commands.run import load_tokenizers
    from txcli.corpus_encoder import CHUNK, batch_ids
    from txcli.data import read_pairs

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    pairs = list(read_pairs(r.data.corpora()[0]))
    encode_src, encode_tgt = batch_ids(src_tok), batch_ids(tgt_tok)
    cpu, start = cpu_seconds(), time.perf_counter()
    for i in range(0, len(pairs), CHUNK):
        chunk = pairs[i:i + CHUNK]
        encode_src([s for s, _ in chunk])
        encode_tgt([t for _, t in chunk])
    return time.perf_counter() - start, cpu_seconds() - cpu, len(pairs)


def prepare(r) -> dict:
    from txcli.commands.prepare import prepare as run_prepare

    cpu, start = cpu_seconds(), time.perf_counter()
    result = run_prepare(r, force=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    (c,) = result.corpora
    return {"pairs": c.counts.read, "kept": c.counts.kept, "seconds": wall, "corpus_seconds": c.seconds,
            "pairs_per_s": c.counts.read / c.seconds, "cpu_us_per_pair": cpu * 1e6 / c.counts.read,
            "cache_mb": result.bytes / 1e6, "directory": result.directory}


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
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the small corpus (tokenizer alone, then tx prepare)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tx-prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from txcli.commands.run import train_tokenizers

        small, big = (recipe(work, corpus(work, n), args.vocab) for n in (1, args.repeat))
        if not (small.run_dir / "tokenizer.json").is_file():
            train_tokenizers(small, force=True)
        big.run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(small.run_dir / "tokenizer.json", big.run_dir / "tokenizer.json")
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start (a shared machine)")
        ratios = []
        for round_ in range(1, args.rounds + 1):  # alternated, so that both see the same load
            wall, cpu, n = tokenizer_alone(small)
            print(f"round {round_}: tokenizer alone, {n:,} pairs in memory: {wall:.2f} s, {n / wall:,.0f} pairs/s, "
                  f"{cpu * 1e6 / n:.1f} CPU us a pair")
            m = report("53k", small)
            ratios.append(m["corpus_seconds"] / wall)
        print(f"tx prepare / tokenizer alone, wall: {', '.join(f'{x:.2f}' for x in ratios)}")
        report(f"x{args.repeat}", big)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
