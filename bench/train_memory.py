"""Peak memory of `tx train` does not grow with the corpus.

Two measurements, each in its own child process (peak RSS = ru_maxrss of that process):
  data:  one full epoch of tx's batching (read, tokenize, filter, bucket, batch) over the corpus;
  train: the recipe's training loop for --steps steps.
Both on the demo corpus and on a corpus --factor times larger, made with data/demo/generate.py
(the same generator, more training pairs) into a temporary folder.

    .venv/bin/python bench/train_memory.py recipes/demo.yaml --factor 10 --steps 30
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from txcli.openmp import short_spin_waits  # noqa: E402

short_spin_waits()  # as `tx train` does (before torch loads)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_epoch(recipe_path: str, overrides: list[str], queue) -> None:
    from txcli.batching import EpochStats
    from txcli.commands.run import load_tokenizers
    from txcli.commands.train_data import training_stream
    from txcli.schema import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    before = rss_mb()
    stream = training_stream(recipe, src_tok, tgt_tok)
    stats = EpochStats()
    start = time.perf_counter()
    batches = sum(1 for _ in stream.epoch(1, stats=stats))
    stream.close()
    queue.put({"pairs": stats.kept, "batches": batches, "seconds": time.perf_counter() - start,
               "rss_before_mb": before, "peak_rss_mb": rss_mb()})


def train_steps(recipe_path: str, overrides: list[str], queue) -> None:
    from txcli.commands.train import train
    from txcli.schema import load_recipe

    result = train(load_recipe(recipe_path, overrides))
    queue.put({"steps": result.step, "peak_rss_mb": rss_mb()})


def in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def make_corpus(out: Path, factor: int) -> Path:
    demo_train = sum(1 for _ in open(ROOT / "data/demo/train.src", encoding="utf-8"))
    subprocess.run([sys.executable, str(ROOT / "data/demo/generate.py"), "--out", str(out),
                    "--train", str(demo_train * factor)], check=True, capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="tx-mem-") as tmp:
        big = make_corpus(Path(tmp) / "big", args.factor)
        corpora = {"demo": [], f"demo x{args.factor}": [f"data.train.src={big / 'train.src'}",
                                                      f"data.train.tgt={big / 'train.tgt'}"]}
        tokenizer_run = Path(tmp) / "tok"  # one tokenizer (from the demo corpus) for both
        for name, data in corpora.items():
            common = [*args.set, *data, "train.max_minutes=null", "train.eval_every=1000000",
                      f"train.max_steps={args.steps}", "train.valid_max_sentences=1"]
            run_dir = Path(tmp) / name.replace(" ", "_")
            run_dir.mkdir()
            if not tokenizer_run.exists():
                from txcli.commands.run import train_tokenizers
                from txcli.schema import load_recipe

                train_tokenizers(load_recipe(args.recipe, [*args.set, f"run_dir={tokenizer_run}"]), force=True)
            for f in tokenizer_run.glob("*tokenizer.json"):
                (run_dir / f.name).write_bytes(f.read_bytes())
            data_res = in_child(data_epoch, args.recipe, [*common, f"run_dir={run_dir}"])
            train_res = in_child(train_steps, args.recipe, [*common, f"run_dir={run_dir}"])
            rows.append({"corpus": name, **{f"data_{k}": v for k, v in data_res.items()},
                         "train_steps": train_res["steps"], "train_peak_rss_mb": train_res["peak_rss_mb"]})
            print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)

    print(f"\n{'corpus':<12}{'pairs':>10}{'batches':>9}{'epoch s':>9}{'data peak MB':>14}{'train peak MB':>15}")
    for r in rows:
        print(f"{r['corpus']:<12}{r['data_pairs']:>10}{r['data_batches']:>9}{r['data_seconds']:>9.1f}"
              f"{r['data_peak_rss_mb']:>14.0f}{r['train_peak_rss_mb']:>15.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
