"""Translation speed: the batched, cached beam search against a naive decoder, in one run.

The naive decoder is the same search on the same model with no key/value cache (every step
recomputes the whole prefix) and one sentence at a time. Both translate the same sentences (the
whole file, or the first --naive-lines) at beam 5, the batched decoder once before and once after
the naive one; the ratio of their sentences/s is the speed-up, and their outputs must be
identical. Then the whole file is translated at beam 1 and beam 5, in fp32 and bf16 (autocast; bf16
only where the hardware has it, or with --bf16):
sentences/s and target tokens/s (subwords of the best hypotheses, </s> not counted).

    .venv/bin/python bench/translate_speed.py runs/demo --src data/demo/test.src
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from txcli.commands.run import open_for_decoding  # noqa: E402
from txcli.commands.run import run_decoding as resolve_decoding  # noqa: E402
from txcli.decoding import pad_rows, translate_rows  # noqa: E402
from txcli.options import DecodeOptions  # noqa: E402
from txcli.translation import encode_sources  # noqa: E402
from txcli.precision import bf16_is_fast  # noqa: E402
from txcli.search import beam_search  # noqa: E402
from txcli.tokenizer import BOS_ID, EOS_ID  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def naive(run, rows, decoding):
    """One sentence at a time, no cache."""
    out = []
    for r in rows:
        src = pad_rows([r], run.model.cfg.pad_id, run.device)
        out.extend(beam_search(run.model, src, decoding.search, BOS_ID, EOS_ID, use_cache=False))
    return out


def speed(run, rows, decoding) -> dict:
    hyps, seconds = timed(lambda: translate_rows(run.model, rows, decoding))
    tokens = sum(len(h[0].tokens) for h in hyps if h)
    return {"sentences": len(rows), "seconds": round(seconds, 2), "sent_per_s": round(len(rows) / seconds, 1),
            "tok_per_s": round(tokens / seconds, 1), "hyps": hyps}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, default=Path("data/demo/test.src"))
    ap.add_argument("--lines", type=int, default=None, help="translate only the first N lines")
    ap.add_argument("--naive-lines", type=int, default=None, help="the naive decoder translates only the first N")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--bf16", action="store_true", help="measure bf16 even where the hardware has no bf16")
    args = ap.parse_args(argv)

    run = open_for_decoding(args.run_dir, "cpu", args.threads)
    texts = [t for t in args.src.read_text(encoding="utf-8").splitlines()[: args.lines] if t.strip()]
    rows, _ = encode_sources(run.src_tok, texts, run.recipe.data.max_len)

    def decoding(beam, precision="fp32"):
        return resolve_decoding(run, DecodeOptions(beam=beam, precision=precision))

    translate_rows(run.model, rows[:50], decoding(5))  # warm-up
    subset = rows[: args.naive_lines]
    fast_before = speed(run, subset, decoding(5))
    slow_hyps, slow_seconds = timed(lambda: naive(run, subset, decoding(5)))
    fast_after = speed(run, subset, decoding(5))
    fast_seconds = (fast_before["seconds"] + fast_after["seconds"]) / 2
    same = all([h.tokens for h in a] == [h.tokens for h in b] for a, b in zip(slow_hyps, fast_before["hyps"]))
    result = {"threads": torch.get_num_threads(), "naive_vs_batched": {
        "sentences": len(subset), "naive_s": round(slow_seconds, 2), "batched_s": round(fast_seconds, 2),
        "naive_sent_per_s": round(len(subset) / slow_seconds, 2),
        "batched_sent_per_s": round(len(subset) / fast_seconds, 1),
        "ratio": round(slow_seconds / fast_seconds, 1), "same_output": same}}

    precisions = ["fp32"]
    if args.bf16 or bf16_is_fast(run.device):
        precisions.append("bf16")
    else:  # torch's CPU bf16 product is a slow reference loop there: minutes, and no information
        print("bf16 skipped: this CPU has no AVX512-BF16 or AMX (--bf16 measures it anyway)")
    table = []
    for beam in (1, 5):
        for precision in precisions:
            r = speed(run, rows, decoding(beam, precision))
            r.pop("hyps")
            table.append({"beam": beam, "precision": precision, **r})
    result["full"] = table

    n = result["naive_vs_batched"]
    print(f"naive (no cache, one sentence at a time) vs batched, beam 5, {n['sentences']} sentences: "
          f"{n['naive_sent_per_s']} vs {n['batched_sent_per_s']} sent/s = {n['ratio']}x "
          f"(identical output: {n['same_output']})")
    print(f"{'beam':>4} {'precision':>9} {'sentences':>9} {'seconds':>8} {'sent/s':>8} {'tok/s':>8}")
    for r in table:
        print(f"{r['beam']:>4} {r['precision']:>9} {r['sentences']:>9} {r['seconds']:>8} "
              f"{r['sent_per_s']:>8} {r['tok_per_s']:>8}")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
