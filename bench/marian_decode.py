"""Beam-4 decoding of Marian-shaped weights: transformers' generate against tx's engines, and the
import's own cost. The issue's Numbers section (issue 20).

    .venv/bin/python bench/marian_decode.py [--work DIR] [--sentences 1000] [--threads N]
                                            [--train-steps 400] [--train-minutes 25] [--rounds 2]
                                            [--scale marian|tiny]

1. Weights: a tx model of Marian's shape (6+6 layers, d_model 512, 8 heads, ff 2048, a
   sentencepiece vocabulary of 8,000 per side) in Marian's layout (post-norm, SiLU, output bias),
   trained briefly so its outputs have natural lengths; exported with `tx export huggingface`,
   then imported back with `tx import marian` (timed: wall time and peak memory of the whole
   process). Every decoder below reads these same weights. The tokenizers are trained on the demo
   corpus and the real English -> German gettext corpus (bench/gettext_corpus.py, from this
   machine's catalogs), which fills the 8,000-piece vocabularies (the demo corpus alone has ~1,000
   words a side); the model on the demo pairs alone, learnt in the fewest steps, so that outputs
   end where they should. Training stops at validation BLEU 20, --train-steps or --train-minutes,
   whichever comes first.
2. Decoding of the first --sentences lines of data/demo/test.src, beam 4, no length penalty, at
   most floor(1.2 x source + 10) tokens and </s>, --threads threads each (default: all cores):
   transformers' generate (batches of 32 sentences of similar length, the sentences sorted by
   length as tx sorts them, under inference_mode), tx torch fp32 and int8, and --engine
   ctranslate2 fp32 and int8. Each in its own process: whole-process wall time (imports and
   loading included), decoding-only time, output tokens per second of decoding, the peak resident
   memory, the outputs' mean length in words against the references', and how many outputs equal
   generate's. --rounds 2 runs the decoders a second time in reverse order, so a machine's load
   falls on both sides alike; the table shows each decoder's best round.
   --min-len N forbids </s> before N tokens in every decoder alike (transformers' min_new_tokens),
   and --max-len-a/--max-len-b set the limit (a x source + b): for weights whose training stopped
   before they learnt where sentences end, `--min-len 1000 --max-len-a 1 --max-len-b 0` holds every
   output to its source's length (transformers and CTranslate2: the longest source's of its batch).
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

# model section, tokenizer vocabulary. No dropout: the brief training learns faster without it,
# and decoding does the same work either way.
SCALES = {
    "marian": ("{d_model: 512, heads: 8, ff: 2048, encoder_layers: 6, decoder_layers: 6, dropout: 0.0, "
               "norm: post, activation: silu, tie_embeddings: true, output_bias: true}", 8000),
    "tiny": ("{d_model: 32, heads: 4, ff: 64, encoder_layers: 2, decoder_layers: 2, dropout: 0.0, "
             "norm: post, activation: silu, tie_embeddings: true, output_bias: true}", 1000),
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
train: {{batch_tokens: 1024, lr: 1.0e-3, warmup: 50, max_steps: {steps}, max_minutes: {minutes},
        eval_every: {eval_every}, valid_max_sentences: 100, stop_at: {{metric: bleu, value: 20}},
        early_stop: null, compile: false, precision: auto, threads: {threads}}}
decode: {{beam: 4, alpha: 0.0}}
"""

# run in a fresh process: decoding-only seconds and output tokens on stdout as JSON, the outputs'
# text to a file
TX_DECODE = """
import json, sys, time
from pathlib import Path
from txcli.engines import open_engine
from txcli.options import DecodeOptions
from txcli.translation import encode_sources
run, engine, precision, threads, min_len, len_a, len_b, src, out = sys.argv[1:10]
lines = Path(src).read_text(encoding="utf-8").splitlines()
opts = DecodeOptions(beam=4, alpha=0.0, max_len_a=float(len_a), max_len_b=int(len_b), min_len=int(min_len),
                     precision=precision)
translator = open_engine(engine, Path(run), opts, "cpu", int(threads))
rows, _ = encode_sources(translator.src_tok, lines, translator.max_len)
start = time.perf_counter()
hyps = translator.translate_rows(rows)
seconds = time.perf_counter() - start
texts = [translator.tgt_tok.decode(h[0].tokens) for h in hyps]
Path(out).write_text("\\n".join(texts) + "\\n", encoding="utf-8")
print(json.dumps({"seconds": seconds, "tokens": sum(len(h[0].tokens) + 1 for h in hyps)}))
"""

# generate as a careful user runs it: inference_mode, the thread count set, batches of 32 sentences
# of similar length (sorted as tx sorts them), each batch's longest source setting its limit: at
# most floor(1.2 x source + 10) tokens and </s>, tx's limit for that source
HF_DECODE = """
import json, sys, time
import torch
from pathlib import Path
from transformers import MarianMTModel, MarianTokenizer
hf, threads, min_len, len_a, len_b, src, out = sys.argv[1:8]
torch.set_num_threads(int(threads))
lines = Path(src).read_text(encoding="utf-8").splitlines()
model, tok = MarianMTModel.from_pretrained(hf).eval(), MarianTokenizer.from_pretrained(hf)
start, tokens = time.perf_counter(), 0
lengths = [len(ids) for ids in tok(lines)["input_ids"]]
order = sorted(range(len(lines)), key=lambda i: -lengths[i])
texts = [""] * len(lines)
with torch.inference_mode():
    for i in range(0, len(lines), 32):
        part = order[i:i + 32]
        batch = tok([lines[j] for j in part], padding=True, return_tensors="pt")
        longest = int(batch["attention_mask"].sum(1).max())
        limit = int(float(len_a) * longest + int(len_b)) + 1
        ids = model.generate(**batch, num_beams=4, length_penalty=0.0, max_new_tokens=limit,
                             min_new_tokens=min(int(min_len), limit - 1))  # as tx: the limit wins
        tokens += int(((ids[:, 1:] != model.config.pad_token_id)).sum())
        for j, text in zip(part, tok.batch_decode(ids, skip_special_tokens=True)):
            texts[j] = text
seconds = time.perf_counter() - start
Path(out).write_text("\\n".join(texts) + "\\n", encoding="utf-8")
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


def vocabulary_pairs(work: Path, env: dict) -> Path:
    """The demo corpus and, where this machine has German catalogs, the gettext corpus, in one
    directory: what the tokenizers are trained on."""
    out = work / "vocabulary-data"
    if (out / "train.tgt").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    demo, gettext = ROOT / "data" / "demo", work / "gettext"
    if not (gettext / "train.de").is_file():
        run([PYTHON, str(ROOT / "bench" / "gettext_corpus.py"), str(gettext)], env)
    for side, ext in (("src", "en"), ("tgt", "de")):
        text = (demo / f"train.{side}").read_text(encoding="utf-8")
        extra = gettext / f"train.{ext}"
        if extra.is_file():  # no catalogs: the demo alone, a smaller vocabulary (the table says which)
            text += extra.read_text(encoding="utf-8")
        (out / f"train.{side}").write_text(text, encoding="utf-8")
        (out / f"valid.{side}").write_bytes((demo / f"valid.{side}").read_bytes())
    return out


def train_weights(a, work: Path, env: dict) -> Path:
    """Tokenizers from the demo + gettext pairs, then the model on the demo pairs alone: the easy
    pairs teach it where sentences end in the fewest steps."""
    trained = work / "trained"
    if not (trained / "model.safetensors").is_file():
        model, vocab = SCALES[a.scale]
        for name, data in (("vocabulary", vocabulary_pairs(work, env)), ("model", ROOT / "data" / "demo")):
            recipe = work / f"recipe-{name}.yaml"
            recipe.write_text(RECIPE.format(run_dir=trained, data=data, vocab=vocab, model=model, steps=a.train_steps,
                                            minutes=a.train_minutes, eval_every=min(50, a.train_steps),
                                            threads=a.threads), encoding="utf-8")
        if not (trained / "tgt_tokenizer.json").is_file():
            print("training the tokenizers ...", file=sys.stderr)
            run(tx("train-tokenizer", str(work / "recipe-vocabulary.yaml")), env)
        print(f"training {a.scale} weights: at most {a.train_steps} steps, {a.train_minutes} min ...", file=sys.stderr)
        run(tx("train", str(work / "recipe-model.yaml")), env)
    return trained


def decode_rows(a, cases, work: Path, env: dict) -> list[dict]:
    """Every decoder once per round (odd rounds in reverse order); each decoder's rounds."""
    results: dict[str, list[dict]] = {name: [] for name, _ in cases}
    for r in range(a.rounds):
        for name, args in (cases if r % 2 == 0 else cases[::-1]):
            print(f"round {r + 1}: decoding with {name} ...", file=sys.stderr)
            out = work / f"out-{name.replace(' ', '-')}.txt"
            wall, peak, stdout = measure(args + [str(out)], env)
            inner = json.loads(stdout.strip().splitlines()[-1])
            texts = out.read_text(encoding="utf-8").splitlines()
            print(f"  {name}: process {wall:.1f} s, decoding {inner['seconds']:.1f} s, {inner['tokens']} tokens, "
                  f"peak {peak:.0f} MB", file=sys.stderr)
            results[name].append({"process_s": round(wall, 2), "decode_s": round(inner["seconds"], 2),
                                  "tokens_per_s": round(inner["tokens"] / inner["seconds"], 1),
                                  "peak_mb": round(peak), "output_tokens": inner["tokens"],
                                  "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 2),
                                  "empty": sum(not t.strip() for t in texts), "texts": texts})
    rows = []
    generate = results[cases[0][0]][0]["texts"]
    for name, rounds in results.items():
        best = min(rounds, key=lambda x: x["decode_s"])
        same = sum(x == y for x, y in zip(best["texts"], generate))
        rows.append({"decoder": name, **{k: v for k, v in best.items() if k != "texts"}, "same_as_generate": same,
                     "rounds_decode_s": [x["decode_s"] for x in rounds],
                     "rounds_process_s": [x["process_s"] for x in rounds]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-marian"))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--train-minutes", type=float, default=25)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--min-len", type=int, default=0,
                    help="no </s> before this many tokens, for every decoder (weights that stop too early)")
    ap.add_argument("--max-len-a", type=float, default=1.2)
    ap.add_argument("--max-len-b", type=int, default=10)
    ap.add_argument("--scale", choices=sorted(SCALES), default="marian")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}

    trained = train_weights(a, work, env)
    hf = work / "hf"
    run(tx("export", "huggingface", str(trained), str(hf)), env)
    imported = work / "imported"
    if imported.exists():
        import shutil

        shutil.rmtree(imported)
    import_wall, import_peak, _ = measure(tx("import", "marian", str(hf), str(imported)), env)

    src = work / "src.txt"
    demo = ROOT / "data" / "demo"
    lines = (demo / "test.src").read_text(encoding="utf-8").splitlines()[: a.sentences]
    refs = (demo / "test.tgt").read_text(encoding="utf-8").splitlines()[: a.sentences]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # the CTranslate2 engine converts a run on first use: done here, outside the timings
    one = work / "one.txt"
    one.write_text(lines[0] + "\n", encoding="utf-8")
    run(tx("translate", str(imported), "--engine", "ctranslate2", "-i", str(one), "--max-len-b", "1"), env)
    lengths = (str(a.min_len), str(a.max_len_a), str(a.max_len_b))
    cases = [("transformers generate", [PYTHON, "-c", HF_DECODE, str(hf), str(a.threads), *lengths, str(src)])]
    for engine, precision in (("torch", "fp32"), ("torch", "int8"), ("ctranslate2", "fp32"), ("ctranslate2", "int8")):
        cases.append((f"tx {engine} {precision}",
                      [PYTHON, "-c", TX_DECODE, str(imported), engine, precision, str(a.threads), *lengths, str(src)]))
    rows = decode_rows(a, cases, work, env)
    report(a, rows, refs, import_wall, import_peak, hf)


def report(a, rows: list[dict], refs: list[str], import_wall: float, import_peak: float, hf: Path) -> None:
    config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    vocab = (config["vocab_size"], config.get("decoder_vocab_size") or config["vocab_size"])
    base = rows[0]["tokens_per_s"]
    ref_words = round(sum(len(t.split()) for t in refs) / len(refs), 2)
    print(f"{'decoder':<24} {'process s':>10} {'decode s':>9} {'tokens/s':>9} {'x generate':>10} {'peak MB':>8} "
          f"{'words':>6} {'empty':>5} {'=generate':>9}")
    for r in rows:
        print(f"{r['decoder']:<24} {r['process_s']:>10} {r['decode_s']:>9} {r['tokens_per_s']:>9} "
              f"{r['tokens_per_s'] / base:>10.2f} {r['peak_mb']:>8} {r['mean_words']:>6} {r['empty']:>5} "
              f"{r['same_as_generate']:>9}")
    print(f"vocabularies {vocab[0]:,} / {vocab[1]:,}; references: {ref_words} words a sentence; "
          f"import: {import_wall:.1f} s, peak {import_peak:.0f} MB")
    print(json.dumps({"scale": a.scale, "threads": a.threads, "min_len": a.min_len, "max_len": [a.max_len_a, a.max_len_b], "sentences": len(refs), "rows": rows,
                      "reference_words": ref_words, "import_s": round(import_wall, 2),
                      "import_peak_mb": round(import_peak), "vocabularies": vocab}))


if __name__ == "__main__":
    main()
