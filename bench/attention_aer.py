"""Alignment error rate of cross-attention alignments against gold, for every decoder layer.

    .venv/bin/python bench/attention_aer.py [RUN_DIR] [--src F --ref F --gold F] [--limit N]

Defaults: runs/demo and the demo test split (data/demo/test.{src,tgt,align}). Forced decoding on
the reference targets (the gold links are between the source and the reference words).

For every decoder layer it reports AER with heads averaged (what `tx attention-dump --align`
writes) and the best single head, for both ways of choosing the decoder row that speaks for
target token t:
  output  the row whose output predicts token t (its input is token t-1); the default
  input   the row whose decoder input is token t (the step that predicts t+1; "shift-att")
then runs the command's own code path (dump_attention with --align --gold, default layer and row)
and checks it reports the same number. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from txcli.attention import Selection, align_words, alignment_error_rate, parse_pharaoh, subword_word_ids  # noqa: E402
from txcli.commands.attention import DumpRequest, attention_stream, default_align_layer, dump_attention, search_config  # noqa: E402
from txcli.commands.run import open_run  # noqa: E402

ROWS = ("output", "input")


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
    heads = list(range(run.model.cfg.heads))
    wordpiece = run.recipe.tokenizer.kind == "wordpiece"

    start = time.perf_counter()
    predicted: dict[tuple, list[set]] = {}  # (layer, row, head or "mean") -> links per sentence
    records = attention_stream(run, zip(src, ref), Selection(kinds=("cross",)), search_config(DumpRequest(run.run_dir), run))
    for rec in records:
        src_words = subword_word_ids(rec.src_tokens, wordpiece)
        tgt_words = subword_word_ids(rec.tgt_tokens, wordpiece)
        for layer, w in rec.weights["cross"].items():
            for row in ROWS:
                for head, matrix in [("mean", w.mean(0))] + [(h, w[h]) for h in heads]:
                    links = align_words(matrix, src_words, tgt_words, row)
                    predicted.setdefault((layer, row, head), []).append(set(links))
    seconds = time.perf_counter() - start
    aer = {key: alignment_error_rate(links, sure, possible) for key, links in predicted.items()}

    layers = sorted({k[0] for k in aer})
    print(f"AER on {len(src)} sentences ({args.src}), forced decoding, {seconds:.1f} s")
    print(f"{'layer':>5} | {'output: mean':>12} {'best head':>12} | {'input: mean':>12} {'best head':>12}")
    for layer in layers:
        cells = []
        for row in ROWS:
            best_head = min(heads, key=lambda h: aer[(layer, row, h)])
            cells.append(f"{aer[(layer, row, 'mean')]:>12.3f} {aer[(layer, row, best_head)]:>7.3f} (h{best_head})")
        print(f"{layer:>5} | {cells[0]} | {cells[1]}")
    best = min(((layer, row) for layer in layers for row in ROWS), key=lambda k: aer[(k[0], k[1], "mean")])
    print(f"best (heads averaged): layer {best[0]}, row '{best[1]}': AER {aer[(best[0], best[1], 'mean')]:.3f}")

    # the command's own path, default layer and row, must report the same number
    req = DumpRequest(run.run_dir, input=Path(args.src), ref=Path(args.ref), gold=Path(args.gold), align=True,
                      output=Path("/dev/null"), device="cpu")
    if args.limit is None:
        report = dump_attention(req, sys.stdout.buffer)
        default = (default_align_layer(run), req.align_row)
        cli_aer = report.aer_by_layer[default[0]]
        assert abs(cli_aer - aer[(default[0], default[1], "mean")]) < 1e-12, (cli_aer, aer)
        print(f"tx attention-dump --align (default layer {default[0]}, row '{default[1]}'): AER {cli_aer:.3f}")
    result = {"sentences": len(src), "seconds": round(seconds, 2),
              "aer_mean_heads": {row: {layer: round(aer[(layer, row, "mean")], 4) for layer in layers} for row in ROWS},
              "best": {"layer": best[0], "row": best[1], "aer": round(aer[(best[0], best[1], "mean")], 4)}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
