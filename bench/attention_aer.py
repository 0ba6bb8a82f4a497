"""Alignment error rate of cross-attention alignments against gold, per method and decoder layer.

    .venv/bin/python bench/attention_aer.py [RUN_DIR] [--src F --ref F --gold F] [--limit N]

Defaults: runs/demo and the demo test split (data/demo/test.{src,tgt,align}). Forced decoding on
the reference targets (the gold links are between the source and the reference words).

The methods are those of txcli/alignment.py (`tx attention-dump --align --align-method`):
  predict  heads averaged, the row whose output predicts target token t (its input is t-1)
  shift    heads averaged, the row whose decoder input is token t ("shift-att", one step later)
  bidir    heads averaged, links sharpened by each source word's share of its attention
For each layer: heads averaged, and the best single head (chosen on all the gold: an optimistic
figure). Then layers combined (`layers`, `bidir` over every layer), and `--align-select`'s
protocol: tuned on the first half of the sentences, AER on the other half (the honest figure).
Finally the command's own code path (dump_attention --align --gold) must report the same numbers.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from txcli.alignment import Method, SentenceScores, corpus_aer, select_method, split, standard_method  # noqa: E402
from txcli.attention import Selection, parse_pharaoh, subword_word_ids  # noqa: E402
from txcli.commands.attention import DumpRequest, attention_stream, default_align_layer, dump_attention  # noqa: E402
from txcli.commands.run import run_decoding  # noqa: E402
from txcli.options import DecodeOptions  # noqa: E402
from txcli.commands.run import open_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default=str(ROOT / "runs/demo"))
    ap.add_argument("--src", default=str(ROOT / "data/demo/test.src"))
    ap.add_argument("--ref", default=str(ROOT / "data/demo/test.tgt"))
    ap.add_argument("--gold", default=str(ROOT / "data/demo/test.align"))
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    args = ap.parse_args()

    run = open_run(Path(args.run_dir), device="cpu")
    read = lambda p: Path(p).read_text(encoding="utf-8").splitlines()[: args.limit]  # noqa: E731
    src, ref, gold = read(args.src), read(args.ref), [parse_pharaoh(line) for line in read(args.gold)]
    sure, possible = [g[0] for g in gold], [g[1] for g in gold]
    n_heads = run.model.cfg.heads
    layers = list(range(run.model.cfg.decoder_layers))
    wordpiece = run.recipe.tokenizer.kind == "wordpiece"

    start = time.perf_counter()
    sentences = []
    records = attention_stream(run, zip(src, ref), Selection(kinds=("cross",)), run_decoding(run, DecodeOptions()))
    for rec in records:
        sentences.append(SentenceScores(rec.weights["cross"], subword_word_ids(rec.src_tokens, wordpiece),
                                        subword_word_ids(rec.tgt_tokens, wordpiece)))
    seconds = time.perf_counter() - start
    every = range(len(sentences))
    aer = lambda m, idx=every: corpus_aer(sentences, m, sure, possible, idx)  # noqa: E731

    table: dict = {}
    print(f"AER on {len(src)} sentences ({args.src}), forced decoding, attention in {seconds:.1f} s")
    print(f"{'layer':>5} | {'predict':>7} {'best head':>12} | {'shift':>7} {'best head':>12} | {'bidir':>7}")
    for layer in layers:
        row = {}
        cells = []
        for name, r in (("predict", "output"), ("shift", "input")):
            mean = aer(standard_method(name, layer, layers))
            heads = {h: aer(Method(name, r, ((layer, h),))) for h in range(n_heads)}
            best = min(heads, key=heads.get)
            row[name], row[f"{name}_heads"] = mean, heads
            cells.append(f"{mean:>7.3f} {heads[best]:>7.3f} (h{best})")
        row["bidir"] = aer(Method("bidir", "output", ((layer, None),), "bidir"))
        table[layer] = row
        print(f"{layer:>5} | {cells[0]} | {cells[1]} | {row['bidir']:>7.3f}")
    combined = {name: aer(standard_method(name, 0, layers)) for name in ("layers", "bidir")}
    print(f"  all | layers (every head and layer averaged) {combined['layers']:.3f} | bidir {combined['bidir']:.3f}")

    t0 = time.perf_counter()
    tune, rest = split(len(sentences))
    chosen, tune_aer = select_method(sentences, sure, possible, layers, n_heads, tune)
    held = aer(chosen, rest)
    single, _ = min(((m, aer(m, tune)) for m in (Method("select", "output", ((layer, h),)) for layer in layers
                                                 for h in range(n_heads))), key=lambda x: x[1])
    print(f"select (tuned on the first {len(tune)}, {time.perf_counter() - t0:.1f} s): {chosen.describe()}")
    print(f"       AER tune {tune_aer:.3f}, held-out {len(rest)}: {held:.3f}   "
          f"(best single head on the tune half: {single.describe()} -> held-out {aer(single, rest):.3f})")

    # the command's own path must report the same numbers
    if args.limit is None:
        req = DumpRequest(run.run_dir, input=Path(args.src), ref=Path(args.ref), gold=Path(args.gold), align=True,
                          output=Path("/dev/null"), device="cpu")
        report = dump_attention(req, sys.stdout.buffer)
        default = default_align_layer(run)
        assert abs(report.aer_by_layer[default] - table[default]["predict"]) < 1e-12, report.aer_by_layer
        assert abs(report.aer_by_method["bidir"]["all"] - combined["bidir"]) < 1e-12, report.aer_by_method
        print(f"tx attention-dump --align (default layer {default}, predict): AER {report.aer_by_layer[default]:.3f}; "
              f"--align-method bidir: {report.aer_by_method['bidir']['all']:.3f}")
    result = {"sentences": len(src), "seconds": round(seconds, 2),
              "per_layer": {layer: {k: round(v, 4) for k, v in row.items() if not k.endswith("_heads")}
                            for layer, row in table.items()},
              "all_layers": {k: round(v, 4) for k, v in combined.items()},
              "select": {"method": chosen.describe(), "tune": len(tune), "tune_aer": round(tune_aer, 4),
                         "heldout": len(rest), "heldout_aer": round(held, 4)}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
