"""What tokenizing the next pool on a background thread costs the training thread, with the
Hugging Face tokenizer's own thread pool on (its default) and off (TOKENIZERS_PARALLELISM=false).

Each configuration runs in its own child process (the variable is read by the tokenizer
library): the training thread runs a fixed forward/backward of a Transformer layer for a number
of steps, alone and then while another thread tokenizes the recipe's training text again and
again. Printed: steps/s alone, steps/s with the tokenizing thread, their ratio, and the pairs/s
the thread managed meanwhile.

    .venv/bin/python bench/pool_overlap.py recipes/demo.yaml --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(parallel: bool, args, run_dir: str, queue) -> None:
    if not parallel:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.data import read_pairs
    from txcli.schema import load_recipe

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, [f"run_dir={run_dir}"])
    if not (Path(run_dir) / "tokenizer.json").exists():
        train_tokenizers(recipe, force=True)
    tok, _ = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    texts = [s for s, _ in zip((p[0] for p in read_pairs(recipe.data.train[0])), range(args.pairs))]
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
    x = torch.randn(32, 40, 256)

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            layer(x).sum().backward()
        return n / (time.perf_counter() - start)

    steps(5)
    alone = steps(args.steps)
    stop, encoded = threading.Event(), [0]

    def tokenize():
        while not stop.is_set():
            for i in range(0, len(texts), 2048):
                tok.encode_batch(texts[i:i + 2048])
                encoded[0] += len(texts[i:i + 2048])

    worker = threading.Thread(target=tokenize)
    start = time.perf_counter()
    worker.start()
    together = steps(args.steps)
    stop.set()
    worker.join()
    queue.put({"alone": alone, "together": together, "pairs_per_s": encoded[0] / (time.perf_counter() - start)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tx-bench-") as tmp:
        for r in range(args.rounds):
            for parallel in (True, False):
                queue = ctx.Queue()
                proc = ctx.Process(target=child, args=(parallel, args, str(Path(tmp) / "run"), queue))
                proc.start()
                res = queue.get()
                proc.join()
                print(f"round {r + 1} tokenizer threads {'on ' if parallel else 'off'}: alone {res['alone']:.1f} steps/s, "
                      f"with the tokenizing thread {res['together']:.1f} ({res['together'] / res['alone']:.2f}x), "
                      f"{res['pairs_per_s']:,.0f} pairs/s tokenized meanwhile", flush=True)


if __name__ == "__main__":
    main()
