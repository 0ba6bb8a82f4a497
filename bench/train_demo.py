"""The demo, timed: `tx train recipes/demo.yaml` into a fresh run directory, then BLEU on the
demo test split, and the validation curve (BLEU against minutes) from metrics.jsonl.

Training runs as a user runs it (a `tx train` subprocess) until the recipe stops it (the demo:
validation BLEU 90, train.stop_at); the wall time and the stopping step are printed. Test BLEU
is computed twice: greedy, with the training loop's own validator (sacrebleu corpus BLEU), and
with `tx evaluate` (the recipe's decode settings: beam).

    .venv/bin/python bench/train_demo.py recipes/demo.yaml --run-dir /tmp/demo-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(recipe: str, run_dir: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "txcli", "train", recipe, "--set", f"run_dir={run_dir}"]
    for o in overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def greedy_test_scores(run_dir: Path) -> dict:
    import torch

    from txcli.batching import encode_pairs
    from txcli.commands.run import open_run
    from txcli.data import read_pairs
    from txcli.validation import Validator

    run = open_run(run_dir, device="cpu")
    pairs = list(read_pairs(run.recipe.data.test))
    kept: list[int] = []
    encoded, stats = encode_pairs(pairs, run.src_tok.encode_batch, run.tgt_tok.encode_batch,
                                  run.recipe.data.max_len, kept)
    d = run.recipe.decode
    validator = Validator(encoded, [pairs[i][1] for i in kept], run.tgt_tok.decode_batch, d.batch_tokens,
                          d.max_len_a, d.max_len_b, None, torch.device("cpu"))
    start = time.perf_counter()
    scores = validator(run.model)
    return {**scores, "sentences": len(encoded), "dropped": stats.too_long + stats.empty,
            "seconds": time.perf_counter() - start}


def tx_evaluate(run_dir: Path) -> dict | None:
    result = subprocess.run([sys.executable, "-m", "txcli", "evaluate", str(run_dir), "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        print(f"tx evaluate failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"output": result.stdout.strip()}


def curve(run_dir: Path) -> list[dict]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{"minutes": round(e["elapsed"] / 60, 2), "step": e["step"], "bleu": round(e["bleu"], 2),
             "chrf": round(e["chrf"], 2), "loss": round(e["loss"], 4)} for e in events if e["event"] == "valid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--run-dir", default="/tmp/tx-demo-bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json")
    args = parser.parse_args()
    run_dir = Path(args.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)

    wall = train(args.recipe, run_dir, args.set)
    points = curve(run_dir)
    greedy = greedy_test_scores(run_dir)
    beam = tx_evaluate(run_dir)
    end = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()][-1]
    print(f"\ntx train wall time: {wall / 60:.2f} min (tokenizer, training, validation, checkpoints); "
          f"stopped at step {end['step']} ({end['reason']})")
    print(f"{'minutes':>8}{'step':>7}{'valid BLEU':>12}{'chrF':>8}{'loss':>9}")
    for p in points:
        print(f"{p['minutes']:>8.2f}{p['step']:>7}{p['bleu']:>12.2f}{p['chrf']:>8.2f}{p['loss']:>9.4f}")
    print(f"test split, greedy: BLEU {greedy['bleu']:.2f}  chrF {greedy['chrf']:.2f} "
          f"({greedy['sentences']} sentences)")
    if beam is not None:
        print(f"test split, tx evaluate: {json.dumps(beam)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_seconds": wall, "end": end, "curve": points, "test_greedy": greedy,
                                               "test_evaluate": beam}, indent=2) + "\n")


if __name__ == "__main__":
    main()
