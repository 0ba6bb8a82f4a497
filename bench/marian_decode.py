"""Beam-4 decoding of Marian-shaped weights: transformers' generate against tx's engines, and the
import's own cost. The issue's Numbers section (issue 20).

    .venv/bin/python bench/marian_decode.py [--work DIR] [--sentences 1000] [--threads 4]
                                            [--train-steps 300] [--scale marian|tiny]

1. Weights: a tx model of Marian's shape (6+6 layers, d_model 512, 8 heads, ff 2048, a
   sentencepiece vocabulary of 8,000 per side) in Marian's layout (post-norm, SiLU, output bias),
   trained briefly on the demo corpus so its outputs have natural lengths; exported with
   `tx export huggingface`, then imported back with `tx import marian` (timed: wall time and
   peak memory of the whole process). Every decoder below reads these same weights.
2. Decoding of the first --sentences lines of data/demo/test.src, beam 4, no length penalty, at
   most 1.2 x source + 10 tokens, --threads threads each: transformers' generate (batches of 32,
   the way most people run OPUS-MT), tx torch fp32 and int8, and --engine ctranslate2 fp32 and
   int8. Each in its own process: whole-process wall time (imports and loading included),
   decoding-only time, output tokens per second of decoding, and the peak resident memory.
   --scale tiny makes everything small, to check the script itself in a minute.

Prints a table and one JSON line. Anchor (CTranslate2's published table, 4 threads): OPUS-MT via
transformers 147 tokens/s, via CTranslate2 int8 696 tokens/s; target: tx's best >= 4x generate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

SCALES = {  # model section, tokenizer vocabulary
    "marian": ("{d_model: 512, heads: 8, ff: 2048, encoder_layers: 6, decoder_layers: 6, dropout: 0.1, "
               "norm: post, activation: silu, tie_embeddings: true, output_bias: true}", 8000),
    "tiny": ("{d_model: 32, heads: 4, ff: 64, encoder_layers: 2, decoder_layers: 2, dropout: 0.0, "
             "norm: post, activation: silu, tie_embeddings: true, output_bias: true}", 200),
}

RECIPE = """\
name: marian-bench
run_dir: {run_dir}
data:
  train: {{src: {data}/train.src, tgt: {data}/train.tgt}}
  valid: {{src: {data}/valid.src, tgt: {data}/valid.tgt}}
  max_len: 64
tokenizer: {{kind: sentencepiece, vocab_size: {vocab}, joint: false}}
model: {model}
train: {{batch_tokens: 4096, lr: 1.0e-3, warmup: 100, max_steps: {steps}, eval_every: {steps},
        valid_max_sentences: 50, compile: false, threads: {threads}}}
decode: {{beam: 4, alpha: 0.0}}
"""

# run in a fresh process: decoding-only seconds and output tokens on stdout as JSON
TX_DECODE = """
import json, sys, time
from pathlib import Path
from txcli.engines import open_engine
from txcli.options import DecodeOptions
from txcli.translation import encode_sources
run, engine, precision, threads, src = sys.argv[1:6]
lines = Path(src).read_text(encoding="utf-8").splitlines()
opts = DecodeOptions(beam=4, alpha=0.0, max_len_a=1.2, max_len_b=10, precision=precision)
translator = open_engine(engine, Path(run), opts, "cpu", int(threads))
rows, _ = encode_sources(translator.src_tok, lines, translator.max_len)
start = time.perf_counter()
hyps = translator.translate_rows([r for r in rows if r is not None])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(len(h[0].tokens) + 1 for h in hyps if h)}))
"""

HF_DECODE = """
import json, sys, time
import torch
from pathlib import Path
from transformers import MarianMTModel, MarianTokenizer
hf, threads, src = sys.argv[1:4]
torch.set_num_threads(int(threads))
lines = Path(src).read_text(encoding="utf-8").splitlines()
model, tok = MarianMTModel.from_pretrained(hf).eval(), MarianTokenizer.from_pretrained(hf)
start, tokens = time.perf_counter(), 0
with torch.inference_mode():
    for i in range(0, len(lines), 32):
        batch = tok(lines[i:i + 32], padding=True, return_tensors="pt")
        longest = int(batch["attention_mask"].sum(1).max())
        out = model.generate(**batch, num_beams=4, length_penalty=0.0, max_new_tokens=int(1.2 * longest) + 11)
        tokens += int(((out[:, 1:] != model.config.pad_token_id)).sum())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": tokens}))
"""


PROBE = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
         "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "w = time.perf_counter() - t; sys.stderr.write(r.stderr); "
         "print(json.dumps({'out': r.stdout, 'rc': r.returncode, 'wall': w, "
         "'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")


def run(args: list[str], env: dict) -> None:
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:5])} ...: failed\n{result.stderr[-3000:]}")


def measure(args: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of one process, run under a helper process of
    its own: the helper's RUSAGE_CHILDREN maximum is then that process's peak alone."""
    result = subprocess.run([PYTHON, "-c", PROBE, *args], capture_output=True, text=True, env=env)
    record = json.loads(result.stdout)
    if record["rc"] != 0:
        raise SystemExit(f"{' '.join(args[:5])} ...: failed\n{result.stderr[-3000:]}")
    return record["wall"], record["peak_mb"], record["out"]


def tx(*args: str) -> list[str]:
    return [PYTHON, "-m", "txcli", *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-marian"))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--scale", choices=sorted(SCALES), default="marian")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model, vocab = SCALES[a.scale]
    data = ROOT / "data" / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}

    trained = work / "trained"
    if not (trained / "model.safetensors").is_file():
        recipe = work / "recipe.yaml"
        recipe.write_text(RECIPE.format(run_dir=trained, data=data, vocab=vocab, model=model, steps=a.train_steps,
                                        threads=a.threads), encoding="utf-8")
        print(f"training {a.scale} weights for {a.train_steps} steps ...", file=sys.stderr)
        run(tx("train", str(recipe)), env)
    hf = work / "hf"
    run(tx("export", "huggingface", str(trained), str(hf)), env)
    imported = work / "imported"
    if imported.exists():
        import shutil

        shutil.rmtree(imported)
    import_wall, import_peak, _ = measure(tx("import", "marian", str(hf), str(imported)), env)

    src = work / "src.txt"
    lines = (data / "test.src").read_text(encoding="utf-8").splitlines()[: a.sentences]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # the CTranslate2 engine converts a run on first use: done here, outside the timings
    run(tx("translate", str(imported), "--engine", "ctranslate2", "-i", str(src), "--max-len-b", "1"), env)
    rows = []
    cases = [("transformers generate", [PYTHON, "-c", HF_DECODE, str(hf), str(a.threads), str(src)])]
    for engine, precision in (("torch", "fp32"), ("torch", "int8"), ("ctranslate2", "fp32"), ("ctranslate2", "int8")):
        cases.append((f"tx {engine} {precision}",
                      [PYTHON, "-c", TX_DECODE, str(imported), engine, precision, str(a.threads), str(src)]))
    for name, args in cases:
        print(f"decoding with {name} ...", file=sys.stderr)
        wall, peak, out = measure(args, env)
        inner = json.loads(out.strip().splitlines()[-1])
        rows.append({"decoder": name, "process_s": round(wall, 2), "decode_s": round(inner["seconds"], 2),
                     "tokens_per_s": round(inner["tokens"] / inner["seconds"], 1), "peak_mb": round(peak),
                     "output_tokens": inner["tokens"]})
    base = rows[0]["tokens_per_s"]
    print(f"{'decoder':<24} {'process s':>10} {'decode s':>9} {'tokens/s':>9} {'x generate':>10} {'peak MB':>8}")
    for r in rows:
        print(f"{r['decoder']:<24} {r['process_s']:>10} {r['decode_s']:>9} {r['tokens_per_s']:>9} "
              f"{r['tokens_per_s'] / base:>10.2f} {r['peak_mb']:>8}")
    print(f"import: {import_wall:.1f} s, peak {import_peak:.0f} MB")
    print(json.dumps({"scale": a.scale, "threads": a.threads, "sentences": len(lines), "rows": rows,
                      "import_s": round(import_wall, 2), "import_peak_mb": round(import_peak)}))


if __name__ == "__main__":
    main()
