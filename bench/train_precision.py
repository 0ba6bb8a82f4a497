"""bf16 autocast against fp32: validation loss at the same step, and training speed.

Trains the recipe twice from the same seed on the same batches, once per precision, for
--steps steps with a validation every --eval-every steps (validation always runs in fp32, so
it measures the weights, not the arithmetic of the evaluation). Reports the validation loss
and BLEU of both at each validation and their relative difference, plus tokens/s.

`--runs fp32,bf16,fp32-nudged` adds a control: fp32 once more from initial weights moved by
about one unit in the last place, to show how far rounding-sized differences alone move the
curve in its steep part.

    .venv/bin/python bench/train_precision.py recipes/demo.yaml --steps 600 --eval-every 100 \
        --runs fp32,bf16,fp32-nudged
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from txcli.openmp import short_spin_waits  # noqa: E402

short_spin_waits()  # as `tx train` does (before torch loads)


def run(recipe: str, kind: str, args, run_dir: Path) -> dict:
    from txcli.commands.train import train
    from txcli.schema import load_recipe

    precision = "bf16" if kind == "bf16" else "fp32"
    if kind == "fp32-nudged":
        nudge_initial_weights()
    events = []
    overrides = [*args.set, f"run_dir={run_dir}", f"train.precision={precision}", f"train.max_steps={args.steps}",
                 f"train.eval_every={args.eval_every}", "train.max_minutes=null", "train.early_stop=null"]
    train(load_recipe(recipe, overrides), progress=events.append)
    valid = {e["step"]: e for e in events if e["event"] == "valid"}
    speeds = [e["tokens_per_s"] for e in events if e["event"] == "log"][1:]
    return {"valid": valid, "tokens_per_s": statistics.median(speeds) if speeds else float("nan")}


def nudge_initial_weights() -> None:
    """The control: fp32 again, with every initial weight moved by about one unit in the last
    place (relative 1e-7), to show how far rounding-sized differences alone move the curve."""
    import torch

    from txcli.commands import train as train_command

    base = train_command.Seq2SeqTransformer

    class Nudged(base):
        def __init__(self, cfg):
            super().__init__(cfg)
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in self.parameters():
                    p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g))

    train_command.Seq2SeqTransformer = Nudged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--runs", default="fp32,bf16",
                        help="fp32, bf16 and/or fp32-nudged (the control); the first is the reference")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json")
    args = parser.parse_args()
    kinds = args.runs.split(",")

    results = {}
    with tempfile.TemporaryDirectory(prefix="tx-prec-") as tmp:
        first = Path(tmp) / kinds[0]
        for kind in kinds:
            run_dir = Path(tmp) / kind
            run_dir.mkdir(exist_ok=True)
            for f in first.glob("*tokenizer.json"):  # the same tokenizer, so the same batches
                (run_dir / f.name).write_bytes(f.read_bytes())
            results[kind] = run(args.recipe, kind, args, run_dir)
    report(kinds, results, args)


def report(kinds: list[str], results: dict, args) -> None:
    ref = kinds[0]
    header = f"{'step':>6}" + "".join(f"{k + ' loss':>20}" for k in kinds)
    header += "".join(f"{k + ' vs ' + ref:>24}" for k in kinds[1:]) + "".join(f"{k + ' BLEU':>20}" for k in kinds)
    print(header)
    rows = []
    for step in sorted(results[ref]["valid"]):
        v = {k: results[k]["valid"][step] for k in kinds}
        rel = {k: (v[k]["loss"] - v[ref]["loss"]) / v[ref]["loss"] for k in kinds[1:]}
        rows.append({"step": step, **{f"{k}_loss": v[k]["loss"] for k in kinds},
                     **{f"{k}_bleu": v[k]["bleu"] for k in kinds}, **{f"{k}_relative_difference": rel[k] for k in rel}})
        print(f"{step:>6}" + "".join(f"{v[k]['loss']:>20.4f}" for k in kinds)
              + "".join(f"{100 * rel[k]:>23.2f}%" for k in kinds[1:]) + "".join(f"{v[k]['bleu']:>20.2f}" for k in kinds))
    speeds = {k: results[k]["tokens_per_s"] for k in kinds}
    print("tokens/s: " + ", ".join(f"{k} {s:.0f}" for k, s in speeds.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"validations": rows, "tokens_per_s": speeds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
