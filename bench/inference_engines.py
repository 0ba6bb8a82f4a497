"""Inference engines side by side: torch fp32, torch int8, CTranslate2 fp32, CTranslate2 int8.

For each engine/precision and beam (5 and 1) on a test split:
  whole process  `tx translate RUN --engine E --precision P --beam B -i SRC -o OUT`: wall time,
                 peak RSS (the child's own rusage), BLEU of OUT against REF (sacrebleu)
  decoding only  the engine's translate_rows over the whole split, in a fresh process, timed
                 around the call only (model loaded, sources encoded)
plus: CTranslate2 called directly (one translate_batch over the same token rows, token-budget
batches) against `--engine ctranslate2` decoding the same rows; the greedy agreement of the two
engines; start-up on a one-line input (CTranslate2 engine, torch engine) and `import torch`.

--vocab8k also builds an untrained model of the reference shape (d_model 256, 4 heads, ff 1024,
3+3 layers) with an 8,000-subword joint vocabulary, saved as a run, and times decoding only
(speed needs no training: the outputs are meaningless, every sentence runs to its length limit).

Every measured process holds /tmp/tx-bench.lock (one benchmark at a time on a shared machine).

    .venv/bin/python bench/inference_engines.py runs/demo --src data/demo/test.src --ref data/demo/test.tgt
    .venv/bin/python bench/inference_engines.py runs/demo --vocab8k --only-decoding
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "/tmp/tx-bench.lock"
CONFIGS = [("torch", "fp32"), ("torch", "int8"), ("ctranslate2", "fp32"), ("ctranslate2", "int8")]

# decoding only, in a fresh interpreter: open the engine, encode, time translate_rows alone
DECODE_ONLY = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from txcli.engines import open_engine
from txcli.options import DecodeOptions
from txcli.translation import encode_sources
engine_name, run_dir, src, precision, beam, threads, direct = sys.argv[2:9]
opts = DecodeOptions(beam=int(beam), precision=precision)
engine = open_engine(engine_name, run_dir, opts, "cpu", int(threads))
texts = open(src, encoding="utf-8").read().splitlines()
rows, _ = encode_sources(engine.src_tok, texts, engine.max_len)
todo = [r for r in rows if r is not None]
if engine_name == "torch":
    import torch
    with torch.inference_mode():
        engine.translate_rows(todo[:8])  # first-call allocations out of the timing
        start = time.perf_counter(); hyps = engine.translate_rows(todo); seconds = time.perf_counter() - start
else:
    engine.translate_rows(todo[:8])
    start = time.perf_counter(); hyps = engine.translate_rows(todo); seconds = time.perf_counter() - start
out = {"seconds": seconds, "sentences": len(todo), "tokens": [h[0].tokens for h in hyps]}
if direct == "1":  # the same rows through ctranslate2 itself: its own batching, one call
    s = engine.s
    source = [[engine.src_tokens[i] for i in r] for r in todo]
    limit = max(engine._limit(len(r)) for r in todo)
    start = time.perf_counter()
    engine.translator.translate_batch(source, max_batch_size=s["batch_tokens"], batch_type="tokens",
                                      beam_size=s["beam"], length_penalty=s["alpha"], max_decoding_length=limit,
                                      max_input_length=0)
    out["direct_seconds"] = time.perf_counter() - start
print(json.dumps(out))
"""

# a whole `tx` process with its stdin/stdout on files; its own peak RSS from rusage
WHOLE = r"""
import json, os, resource, subprocess, sys, time
with open(sys.argv[1], 'rb') as src, open(sys.argv[2], 'wb') as out:
    start = time.perf_counter()
    rc = subprocess.run(sys.argv[3:], stdin=src, stdout=out, stderr=subprocess.DEVNULL).returncode
    seconds = time.perf_counter() - start
print(json.dumps({"rc": rc, "seconds": seconds, "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


@contextmanager
def bench_lock():
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def python(code: str, *args: str) -> dict:
    with bench_lock():
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def whole_process(run_dir: Path, src: Path, out: Path, engine: str, precision: str, beam: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "txcli", "translate", str(run_dir), "--engine", engine, "--precision", precision,
           "--beam", str(beam), "--threads", str(threads)]
    r = python(WHOLE, str(src), str(out), *cmd)
    if r["rc"] != 0:
        raise SystemExit(f"tx translate failed: {' '.join(cmd)}")
    return r


def bleu(hyp: Path, ref: Path) -> float:
    from sacrebleu.metrics import BLEU

    hyps = hyp.read_text(encoding="utf-8").splitlines()
    refs = ref.read_text(encoding="utf-8").splitlines()
    return round(BLEU().corpus_score(hyps, [refs]).score, 2)


def startup(run_dir: Path, engine: str, threads: int, rounds: int = 3) -> float:
    """Best of `rounds` wall times of a whole process translating one line."""
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "one.txt"
        src.write_text("the dog sees a cat .\n", encoding="utf-8")
        for _ in range(rounds):
            r = whole_process(run_dir, src, Path(tmp) / "out.txt", engine, "fp32", 1, threads)
            best = min(best, r["seconds"])
    return round(best, 2)


def import_torch(rounds: int = 3) -> float:
    code = "import json, subprocess, sys, time\nt = time.perf_counter()\nsubprocess.run([sys.executable, '-c', 'import torch'])\nprint(json.dumps({'s': time.perf_counter() - t}))"
    return round(min(python(code)["s"] for _ in range(rounds)), 2)


def random_run(folder: Path, vocab: int = 8000) -> Path:
    """An untrained model of the reference shape with a `vocab`-subword joint BPE (trained on the
    demo corpus text repeated with numbered words so that the vocabulary fills), saved as a run."""
    sys.path.insert(0, str(ROOT))
    import torch

    from txcli.checkpoint import MODEL_FILE, RECIPE_FILE, save_model, write_text_atomic
    from txcli.commands.run import load_tokenizers, model_config, train_tokenizers
    from txcli.model import Seq2SeqTransformer
    from txcli.schema import dump_yaml, load_recipe

    folder.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(vocab * 2)]
    lines = [" ".join(words[(i * 7 + k) % len(words)] for k in range(12)) for i in range(4000)]
    (folder / "train.src").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "train.tgt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "recipe.yaml").write_text(
        "name: vocab8k\nrun_dir: run\ndata:\n  train: {src: train.src, tgt: train.tgt}\n  valid: {src: train.src, tgt: train.tgt}\n"
        "  max_len: 96\n"
        f"tokenizer: {{kind: bpe, vocab_size: {vocab}, joint: true, min_frequency: 1}}\n"
        "model: {d_model: 256, heads: 4, ff: 1024, encoder_layers: 3, decoder_layers: 3, dropout: 0.0}\n"
        "decode: {beam: 5, alpha: 0.6, max_len_a: 1.2, max_len_b: 10}\n", encoding="utf-8")
    recipe = load_recipe(folder / "recipe.yaml")
    if not (recipe.run_dir / MODEL_FILE).is_file():
        train_tokenizers(recipe, force=True)
        src_tok, tgt_tok = load_tokenizers(recipe.run_dir, True)
        torch.manual_seed(0)
        cfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
        save_model(recipe.run_dir / MODEL_FILE, Seq2SeqTransformer(cfg), cfg.to_dict())
        write_text_atomic(recipe.run_dir / RECIPE_FILE, dump_yaml(recipe.to_plain()))
    return recipe.run_dir


def decoding_table(run_dir: Path, src: Path, beams: list[int], threads: int, direct: bool) -> dict:
    results = {}
    for beam in beams:
        for engine, precision in CONFIGS:
            r = python(DECODE_ONLY, str(ROOT), engine, str(run_dir), str(src), precision, str(beam), str(threads),
                       "1" if direct and engine == "ctranslate2" and precision == "fp32" else "0")
            key = f"{engine}/{precision}/beam{beam}"
            results[key] = r
            extra = (f"; ctranslate2 called directly {r['sentences'] / r['direct_seconds']:.1f} sent/s"
                     f" (engine/direct time {r['seconds'] / r['direct_seconds']:.3f})" if "direct_seconds" in r else "")
            print(f"decoding only  {key:26s} {r['sentences'] / r['seconds']:7.1f} sent/s ({r['seconds']:.2f} s){extra}",
                  flush=True)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, default=ROOT / "data/demo/test.src")
    ap.add_argument("--ref", type=Path, default=ROOT / "data/demo/test.tgt")
    ap.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only-decoding", action="store_true", help="skip whole-process runs, BLEU and start-up")
    ap.add_argument("--vocab8k", action="store_true", help="also (with --only-decoding: only) the 8k-vocabulary model")
    ap.add_argument("--vocab8k-lines", type=int, default=300)
    args = ap.parse_args(argv)
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not (args.vocab8k and args.only_decoding):
            # the first --engine ctranslate2 use exports into RUN_DIR/ctranslate2; do it before timing
            python(DECODE_ONLY, str(ROOT), "ctranslate2", str(args.run_dir), str(args.src), "fp32", "1", "1", "0")
            report["decoding"] = dec = decoding_table(args.run_dir, args.src, args.beams, args.threads, direct=True)
            if 1 in args.beams:
                a, b = dec["torch/fp32/beam1"]["tokens"], dec["ctranslate2/fp32/beam1"]["tokens"]
                same = sum(x == y for x, y in zip(a, b))
                report["greedy_agreement"] = same / len(a)
                print(f"greedy: ctranslate2 gives the torch engine's tokens on {same}/{len(a)} sentences", flush=True)
        if not args.only_decoding:
            report["whole"] = {}
            for beam in args.beams:
                for engine, precision in CONFIGS:
                    out = tmp / f"{engine}-{precision}-{beam}.txt"
                    r = whole_process(args.run_dir, args.src, out, engine, precision, beam, args.threads)
                    lines = sum(1 for _ in open(args.src, "rb"))
                    r.update(bleu=bleu(out, args.ref), sentences_per_s=lines / r["seconds"])
                    report["whole"][f"{engine}/{precision}/beam{beam}"] = r
                    print(f"whole process  {engine}/{precision}/beam{beam}: {r['sentences_per_s']:6.1f} sent/s "
                          f"({r['seconds']:.2f} s), peak RSS {r['peak_kib'] / 1024:.0f} MiB, BLEU {r['bleu']}", flush=True)
            report["startup"] = {"ctranslate2": startup(args.run_dir, "ctranslate2", args.threads),
                                 "torch": startup(args.run_dir, "torch", args.threads), "import_torch": import_torch()}
            s = report["startup"]
            print(f"start-up, one line: ctranslate2 {s['ctranslate2']} s; torch {s['torch']} s "
                  f"(import torch alone {s['import_torch']} s: {s['torch'] - s['import_torch']:.2f} s beyond it)")
        if args.vocab8k:
            run8k = random_run(tmp / "vocab8k")
            src8k = tmp / "src8k.txt"
            src8k.write_text("".join(line + "\n" for line in args.src.read_text(encoding="utf-8").splitlines()[: args.vocab8k_lines]),
                             encoding="utf-8")
            python(DECODE_ONLY, str(ROOT), "ctranslate2", str(run8k), str(src8k), "fp32", "1", "1", "0")
            print(f"8k vocabulary, untrained reference-shape model, {args.vocab8k_lines} sentences:")
            report["vocab8k"] = decoding_table(run8k, src8k, args.beams, args.threads, direct=False)
    for part in report.get("decoding", {}).values():
        part.pop("tokens", None)
    for part in report.get("vocab8k", {}).values():
        part.pop("tokens", None)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
