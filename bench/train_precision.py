"""bf16 autocast against fp32: validation loss at the same step, and training speed.

Trains the recipe twice from the same seed on the same batches, once per precision, for
--steps steps with a validation every --eval-every steps (validation always runs in fp32, so
it measures the weights, not the arithmetic of the evaluation). Reports the validation loss
and BLEU of both at each validation and their relative difference, plus tokens/s.

    .venv/bin/python bench/train_precision.py recipes/demo.yaml --steps 300 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `tx train` does (before torch loads)


def run(recipe: str, precision: str, args, run_dir: Path) -> dict:
    from txcli.commands.train import train
    from txcli.recipe import load_recipe

    events = []
    overrides = [*args.set, f"run_dir={run_dir}", f"train.precision={precision}", f"train.max_steps={args.steps}",
                 f"train.eval_every={args.eval_every}", "train.max_minutes=null", "train.early_stop=null"]
    train(load_recipe(recipe, overrides), progress=events.append)
    valid = {e["step"]: e for e in events if e["event"] == "valid"}
    speeds = [e["tokens_per_s"] for e in events if e["event"] == "log"][1:]
    return {"valid": valid, "tokens_per_s": statistics.median(speeds) if speeds else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tx-prec-") as tmp:
        tok_dir = Path(tmp) / "fp32"
        fp32 = run(args.recipe, "fp32", args, tok_dir)
        bf16_dir = Path(tmp) / "bf16"
        bf16_dir.mkdir()
        for f in tok_dir.glob("*tokenizer.json"):  # the same tokenizer, so the same batches
            (bf16_dir / f.name).write_bytes(f.read_bytes())
        bf16 = run(args.recipe, "bf16", args, bf16_dir)

    rows = []
    print(f"{'step':>6}{'fp32 loss':>11}{'bf16 loss':>11}{'rel diff':>10}{'fp32 BLEU':>11}{'bf16 BLEU':>11}")
    for step in sorted(fp32["valid"]):
        a, b = fp32["valid"][step], bf16["valid"][step]
        rel = (b["loss"] - a["loss"]) / a["loss"]
        rows.append({"step": step, "fp32_loss": a["loss"], "bf16_loss": b["loss"], "relative_difference": rel,
                     "fp32_bleu": a["bleu"], "bf16_bleu": b["bleu"]})
        print(f"{step:>6}{a['loss']:>11.4f}{b['loss']:>11.4f}{100 * rel:>9.2f}%{a['bleu']:>11.2f}{b['bleu']:>11.2f}")
    ratio = bf16["tokens_per_s"] / fp32["tokens_per_s"]
    print(f"tokens/s: fp32 {fp32['tokens_per_s']:.0f}, bf16 {bf16['tokens_per_s']:.0f} (x{ratio:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"validations": rows, "fp32_tokens_per_s": fp32["tokens_per_s"],
                                               "bf16_tokens_per_s": bf16["tokens_per_s"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
