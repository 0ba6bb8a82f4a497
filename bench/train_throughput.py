"""Training throughput of `tx train` against a bare PyTorch loop, measured in the same run.

The reference is what one would write by hand: torch.nn.Transformer of the same shape (pre-norm,
batch_first), shared embeddings with sinusoidal positions, a tied output projection, boolean
masks, F.cross_entropy with label smoothing, gradient clipping and AdamW. Both train on the
same batches (the first steps of epoch 1 of the recipe's corpus, as tx batches them) with the
same optimizer settings. tx is timed through its real loop (Trainer.fit: batch building,
schedule, accumulation, loss), the reference on batches built beforehand.

Every configuration runs in its own child process (so peak memory is its own), alternating
reference and tx for --rounds rounds; the table shows the median tokens/s (target tokens) and
the ratio of the medians.

    .venv/bin/python bench/train_throughput.py recipes/demo.yaml --steps 40 --rounds 3
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
    from txcli.recipe import load_recipe

    recipe = load_recipe(recipe_path, [*overrides, f"run_dir={run_dir}"])
    if not (Path(run_dir) / "tokenizer.json").exists() and not (Path(run_dir) / "src_tokenizer.json").exists():
        train_tokenizers(recipe, force=True)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    return recipe, src_tok, tgt_tok


def make_stream(recipe, src_tok, tgt_tok):
    from txcli.batching import BatchStream
    from txcli.data import read_pairs

    return BatchStream(lambda: read_pairs(recipe.data.train), src_tok.encode_batch, tgt_tok.encode_batch,
                       max_len=recipe.data.max_len, batch_tokens=recipe.train.batch_tokens, seed=recipe.seed,
                       pool_size=recipe.train.pool_size)


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
            tokens, start = 0, time.perf_counter()
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
    return {"tokens_per_s": tokens / seconds, "final_loss": float(loss)}


def run_tx(recipe, mcfg, src_tok, tgt_tok, steps: int, warmup: int, run_dir: str) -> dict:
    import torch

    from txcli.model import Seq2SeqTransformer
    from txcli.training import Trainer

    torch.manual_seed(recipe.seed)
    model = Seq2SeqTransformer(mcfg)
    logs = []
    trainer = Trainer(model, mcfg.to_dict(), recipe.train, make_stream(recipe, src_tok, tgt_tok), None,
                      Path(run_dir) / "bench", torch.device("cpu"), on_event=logs.append)
    trainer.fit()
    windows = [e for e in logs if e["event"] == "log"][1:]  # the first window is the warmup
    # equal windows of equal batches: the token-weighted rate is the harmonic mean of the rates
    return {"tokens_per_s": statistics.harmonic_mean([e["tokens_per_s"] for e in windows])}


def child(kind: str, precision: str, args, run_dir: str, queue) -> None:
    import torch

    from txcli.commands.run import model_config

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*args.set, f"train.precision={precision}", f"train.max_steps={args.steps}",
                 f"train.log_every={args.warmup}", "train.eval_every=1000000", "train.max_minutes=null"]
    recipe, src_tok, tgt_tok = load(args.recipe, overrides, run_dir)
    mcfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    if kind == "bare":
        stream = make_stream(recipe, src_tok, tgt_tok)
        batches = [b for _, b in zip(range(args.steps), stream.epoch(1))]
        result = run_reference(recipe, mcfg, batches, precision, args.warmup)
    else:
        result = run_tx(recipe, mcfg, src_tok, tgt_tok, args.steps, args.warmup, run_dir)
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.steps % args.warmup:
        parser.error("--steps must be a multiple of --warmup (tx reports one log window per --warmup steps)")

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="tx-bench-") as tmp:
        configs = [(kind, p) for p in args.precisions.split(",") for kind in ("bare", "tx")]
        for r in range(args.rounds):
            for kind, precision in configs:
                res = measure(kind, precision, args, str(Path(tmp) / "run"))  # one tokenizer for all
                results.setdefault((kind, precision), []).append(res)
                print(f"round {r + 1} {kind:>4} {precision}: {res['tokens_per_s']:8.0f} tok/s, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    report(results, args)


def report(results: dict, args) -> None:
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in results.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    ref = med.get(("bare", "fp32"))
    rows = []
    print(f"\n{'loop':<28}{'tokens/s':>10}{'vs bare fp32':>14}{'vs bare same':>14}{'peak RSS MB':>13}")
    for (kind, precision), value in med.items():
        same = med.get(("bare", precision))
        name = f"{'tx train' if kind == 'tx' else 'bare nn.Transformer'} {precision}"
        r_ref = value / ref if ref else float("nan")
        r_same = value / same if same else float("nan")
        print(f"{name:<28}{value:>10.0f}{r_ref:>14.2f}{r_same:>14.2f}{rss[(kind, precision)]:>13.0f}")
        rows.append({"loop": kind, "precision": precision, "tokens_per_s": value, "ratio_vs_bare_fp32": r_ref,
                     "ratio_vs_bare_same_precision": r_same, "peak_rss_mb": rss[(kind, precision)],
                     "all_tokens_per_s": [r["tokens_per_s"] for r in results[(kind, precision)]]})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
