"""Training throughput of `tx train` against a bare PyTorch loop, measured in the same run.

The reference is what one would write by hand: torch.nn.Transformer of the same shape (pre-norm,
batch_first), shared embeddings with sinusoidal positions, a tied output projection, boolean
masks, F.cross_entropy with label smoothing, gradient clipping and AdamW. Both train on the
same batches (the first steps of epoch 1 of the recipe's corpus, as tx batches them) with the
same optimizer settings. tx is timed through its real loop (Trainer.fit: batch building,
schedule, accumulation, loss), the reference on batches built beforehand.

Dropout is the recipe's in both loops, in the same places: embeddings, attention weights, the
feed-forward hidden layer and every sublayer output (nn.Transformer's dropout, dropout1/2/3).

Every configuration runs in its own child process (so peak memory is its own), alternating
reference, eager tx and compiled tx (train.compile) for --rounds rounds; the table shows the
median tokens/s (target tokens), the ratio of the medians, the best round and its ratio, tokens
per CPU-second (the figure other processes on a shared machine disturb least), peak RSS (the
first child's includes training the tokenizer), the CPU utilisation of the
timed steps (process CPU seconds / wall seconds: 2.0 keeps two cores busy) and, for compiled tx,
the first step's wall time (compiling included) and the number of graphs built (more than 2, the
model's and the loss's, means recompiles).

    .venv/bin/python bench/train_throughput.py recipes/demo.yaml --steps 40 --rounds 3
    .venv/bin/python bench/train_throughput.py recipes/small.yaml --threads 2 --steps 30 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(recipe_path: str, overrides: list[str], run_dir: str):
    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.schema import load_recipe

    recipe = load_recipe(recipe_path, [*overrides, f"run_dir={run_dir}"])
    if not (Path(run_dir) / "tokenizer.json").exists() and not (Path(run_dir) / "src_tokenizer.json").exists():
        train_tokenizers(recipe, force=True)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    return recipe, src_tok, tgt_tok


def make_stream(recipe, src_tok, tgt_tok):
    from txcli.commands.train_data import training_stream

    return training_stream(recipe, src_tok, tgt_tok)


class BareModel:
    """nn.Transformer plus embeddings and output projection, built like tx's model."""

    @staticmethod
    def build(cfg):
        import torch
        from torch import nn

        from txcli.model import sinusoidal_positions

        class Bare(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model)
                nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
                self.register_buffer("pe", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False)
                self.drop = nn.Dropout(cfg.dropout)
                self.transformer = nn.Transformer(
                    cfg.d_model, cfg.heads, cfg.encoder_layers, cfg.decoder_layers, cfg.ff, cfg.dropout,
                    activation=cfg.activation, batch_first=True, norm_first=cfg.norm == "pre")
                self.out = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
                self.out.weight = self.embed.weight

            def emb(self, x):
                return self.drop(self.embed(x) * math.sqrt(cfg.d_model) + self.pe[: x.size(1)])

            def forward(self, src, tgt_in):
                src_pad, tgt_pad = src == cfg.pad_id, tgt_in == cfg.pad_id
                T = tgt_in.size(1)
                causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu(1)  # True = masked
                h = self.transformer(self.emb(src), self.emb(tgt_in), tgt_mask=causal,
                                     src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                                     memory_key_padding_mask=src_pad)
                return self.out(h)

        return Bare()


def run_reference(recipe, mcfg, batches, precision: str, warmup: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    model = BareModel.build(mcfg)
    model.train()
    t = recipe.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    tokens, start = 0, None
    for i, b in enumerate(batches):
        if i == warmup:
            tokens, start, cpu_start = 0, time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(b.src, b.tgt_in)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), b.tgt_out.reshape(-1),
                                   ignore_index=mcfg.pad_id, label_smoothing=t.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
        opt.step()
        tokens += b.n_tgt_tokens
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "cpu_per_wall": (time.process_time() - cpu_start) / seconds,
            "final_loss": float(loss)}


def run_tx(recipe, mcfg, src_tok, tgt_tok, steps: int, warmup: int, run_dir: str,
           packed_dropout: bool = True) -> dict:
    import torch

    from txcli import events
    from txcli.model import Seq2SeqTransformer
    from txcli.training import Trainer

    torch.manual_seed(recipe.seed)
    model = Seq2SeqTransformer(mcfg)
    logs, clocks = [], []

    def on_event(e):
        logs.append(e)
        if isinstance(e, events.Log):  # CPU and wall clock at each window's end
            clocks.append((time.process_time(), time.perf_counter()))

    trainer = Trainer(model, mcfg.to_dict(), recipe.train, make_stream(recipe, src_tok, tgt_tok), None,
                      Path(run_dir) / "bench", torch.device("cpu"), on_event=on_event,
                      packed_dropout=packed_dropout)
    trainer.fit()
    windows = [e for e in logs if isinstance(e, events.Log)][1:]  # the first window is the warmup
    compiled = [e for e in logs if isinstance(e, events.Compiled)]
    # equal windows of equal batches: the token-weighted rate is the harmonic mean of the rates
    return {"tokens_per_s": statistics.harmonic_mean([e.tokens_per_s for e in windows]),
            "cpu_per_wall": (clocks[-1][0] - clocks[0][0]) / (clocks[-1][1] - clocks[0][1]),
            "first_step_s": compiled[0].step_seconds if compiled else None,
            "graphs": compiled[-1].graphs if compiled else None}


def child(kind: str, precision: str, args, run_dir: str, queue) -> None:
    from txcli.heap import keep_freed_memory

    if not args.default_heap:
        keep_freed_memory()  # as `tx train` does; both loops alike
    import torch

    from txcli.commands.run import model_config

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*args.set, f"train.precision={precision}", f"train.max_steps={args.steps}",
                 f"train.log_every={args.warmup}", "train.eval_every=1000000", "train.max_minutes=null",
                 f"train.compile={'true' if kind.startswith('txc') else 'false'}"]
    recipe, src_tok, tgt_tok = load(args.recipe, overrides, run_dir)
    mcfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    if kind == "bare":
        stream = make_stream(recipe, src_tok, tgt_tok)
        batches = [b for _, (b, _) in zip(range(args.steps), stream.epoch(1))]
        stream.close()
        result = run_reference(recipe, mcfg, batches, precision, args.warmup)
    else:
        # kinds ending in n: torch's own dropout, for comparison
        result = run_tx(recipe, mcfg, src_tok, tgt_tok, args.steps, args.warmup, run_dir,
                        packed_dropout=not kind.endswith("n"))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def measure(kind: str, precision: str, args, run_dir: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(kind, precision, args, run_dir, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    from txcli.openmp import short_spin_waits

    short_spin_waits()  # as `tx train` does; both loops alike (the children inherit it)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=40, help="steps per measurement, warmup included")
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed (and tx's log window)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--loops", default="bare,tx,txc",
                        help="bare: nn.Transformer; tx: eager; txc: compiled; txn, txcn: the same with torch's dropout")
    parser.add_argument("--default-heap", action="store_true",
                        help="leave glibc's malloc as it is (tx train keeps freed memory: txcli/heap.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.steps % args.warmup:
        parser.error("--steps must be a multiple of --warmup (tx reports one log window per --warmup steps)")

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="tx-bench-") as tmp:
        configs = [(kind, p) for p in args.precisions.split(",") for kind in args.loops.split(",")]
        for r in range(args.rounds):
            for kind, precision in configs:
                res = measure(kind, precision, args, str(Path(tmp) / "run"))  # one tokenizer for all
                results.setdefault((kind, precision), []).append(res)
                print(f"round {r + 1} {kind:>4} {precision}: {res['tokens_per_s']:8.0f} tok/s, "
                      f"CPU {res['cpu_per_wall']:.2f}, peak RSS {res['peak_rss_mb']:.0f} MB"
                      + (f", first step {res['first_step_s']:.1f} s, {res['graphs']} graphs"
                         if res.get("first_step_s") else ""), file=sys.stderr, flush=True)
    report(results, args)


def report(results: dict, args) -> None:
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in results.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["cpu_per_wall"] for r in v) for k, v in results.items()}
    best = {k: max(r["tokens_per_s"] for r in v) for k, v in results.items()}
    # tokens per CPU-second: what other processes on a shared machine disturb least
    per_cpu = {k: statistics.median(r["tokens_per_s"] / r["cpu_per_wall"] for r in v) for k, v in results.items()}
    first = {k: max((r.get("first_step_s") or 0.0) for r in v) for k, v in results.items()}
    graphs = {k: max((r.get("graphs") or 0) for r in v) for k, v in results.items()}
    names = {"bare": "bare nn.Transformer", "tx": "tx train eager", "txc": "tx train compiled",
             "txn": "tx eager, torch dropout", "txcn": "tx compiled, torch dropout"}
    ref = med.get(("bare", "fp32"))
    rows = []
    print(f"\n{'loop':<30}{'tokens/s':>10}{'vs bare fp32':>14}{'vs bare same':>14}{'best':>8}{'vs bare':>9}"
          f"{'tok/CPU-s':>11}{'vs bare':>9}{'peak RSS MB':>13}{'CPU/wall':>10}{'1st step s':>12}{'graphs':>8}")
    for (kind, precision), value in med.items():
        same = med.get(("bare", precision))
        name = f"{names[kind]} {precision}"
        r_ref = value / ref if ref else float("nan")
        r_same = value / same if same else float("nan")
        k = (kind, precision)
        b_same = best[k] / best[("bare", precision)] if ("bare", precision) in best else float("nan")
        c_same = per_cpu[k] / per_cpu[("bare", precision)] if ("bare", precision) in per_cpu else float("nan")
        print(f"{name:<30}{value:>10.0f}{r_ref:>14.2f}{r_same:>14.2f}{best[k]:>8.0f}{b_same:>9.2f}"
              f"{per_cpu[k]:>11.0f}{c_same:>9.2f}{rss[k]:>13.0f}{cpu[k]:>10.2f}"
              + (f"{first[k]:>12.1f}{graphs[k]:>8}" if kind.startswith("txc") else ""))
        rows.append({"loop": kind, "precision": precision, "tokens_per_s": value, "ratio_vs_bare_fp32": r_ref,
                     "ratio_vs_bare_same_precision": r_same, "best_tokens_per_s": best[k], "best_ratio": b_same,
                     "tokens_per_cpu_s": per_cpu[k], "per_cpu_ratio": c_same, "peak_rss_mb": rss[k], "cpu_per_wall": cpu[k],
                     "first_step_s": first[k] or None, "graphs": graphs[k] or None,
                     "all_tokens_per_s": [r["tokens_per_s"] for r in results[k]]})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
