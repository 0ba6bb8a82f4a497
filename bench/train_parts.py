"""The training step's parts that tx replaces with cheaper ones, timed against what they replace,
on one thread, on this machine (the figures behind the reasons txcli/fast_dropout.py and
txcli/optim.py give):

  - drawing a step's random bits: numpy's SFC64 (fast_dropout.random_bits) against torch's
    mt19937 (Tensor.random_), 10M 64-bit draws;
  - a dropout call on a [4096, 1024] float32 activation: PackedDropout against nn.Dropout;
  - the mask: a multiply by a numeric mask against torch.where with a boolean one, and the
    comparison written straight into the dtype against a boolean mask converted afterwards;
  - one AdamW step of the recipe's model: fused against the for-each kernel.

    .venv/bin/python bench/train_parts.py [--repeats 20] [--recipe recipes/demo.yaml]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def ms(fn, repeats: int) -> float:
    """Median milliseconds of a call, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def adamw_ms(recipe_path: str, repeats: int) -> tuple[float, float]:
    """One AdamW step over the recipe's model (tokenizer.vocab_size on both sides), fused and not."""
    from txcli.commands.run import model_config
    from txcli.model import Seq2SeqTransformer
    from txcli.schema import load_recipe

    recipe = load_recipe(recipe_path)
    v = recipe.tokenizer.vocab_size
    model = Seq2SeqTransformer(model_config(recipe, v, v))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    fused, for_each = (torch.optim.AdamW(model.parameters(), lr=1e-4, fused=f) for f in (True, False))
    return ms(fused.step, repeats), ms(for_each.step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--recipe", default="recipes/demo.yaml", help="the model whose AdamW step is timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from txcli.fast_dropout import PackedDropout, random_bits

    r, n = args.repeats, 10_000_000
    x = torch.randn(4096, 1024)
    keep = torch.rand_like(x) > 0.1
    numeric = keep.float()
    bits = torch.randint(-32768, 32767, x.shape, dtype=torch.int16)
    rows = [
        ("random bits, 10M: SFC64 | torch mt19937",
         ms(lambda: random_bits(n, torch.device("cpu")), r), ms(lambda: torch.empty(n, dtype=torch.int64).random_(), r)),
        ("dropout p=0.1, 4096x1024 fp32: PackedDropout | nn.Dropout",
         ms(lambda: PackedDropout(0.1)(x), r), ms(lambda: torch.nn.Dropout(0.1)(x), r)),
        ("apply a mask: x * mask | torch.where(mask, x, 0)",
         ms(lambda: x * numeric, r), ms(lambda: torch.where(keep, x, 0.0), r)),
        ("make a mask: ge(out=x's dtype) | ge, then .to(dtype)",
         ms(lambda: torch.ge(bits, 3277, out=torch.empty_like(x)), r), ms(lambda: (bits >= 3277).to(x.dtype), r)),
        (f"AdamW step, {args.recipe}: fused | for-each", *adamw_ms(args.recipe, r)),
    ]
    for name, ours, theirs in rows:
        print(f"{name:<62} {ours:8.2f} ms | {theirs:8.2f} ms  ({theirs / ours:.2f}x)")


if __name__ == "__main__":
    main()
