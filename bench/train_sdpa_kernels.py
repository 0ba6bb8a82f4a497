"""Which scaled-dot-product-attention kernel to train with on CPU: forward + backward time of
the fused flash kernel and the plain math path, fp32 and bf16, at sentence-like shapes
(batch 200, 4 heads, 20 positions, d_k 64; a causal and a padding-masked variant).

tx train takes the math path on CPU in bf16 (txcli/precision.py, _attention_kernel) because of
what this prints.

    .venv/bin/python bench/train_sdpa_kernels.py --batch 200 --length 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_kernel(dtype, backend, causal: bool, args) -> float:
    shape = (args.batch, args.heads, args.length, args.d_k)
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = None if causal else torch.ones(args.batch, 1, 1, args.length, dtype=torch.bool)

    def step():
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        out.sum().backward()

    step()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--d-k", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    print(f"{'dtype':<10}{'mask':<9}{'flash ms':>10}{'math ms':>10}{'flash/math':>12}")
    for dtype in (torch.float32, torch.bfloat16):
        for causal in (True, False):
            flash = time_kernel(dtype, SDPBackend.FLASH_ATTENTION, causal, args)
            math_ = time_kernel(dtype, SDPBackend.MATH, causal, args)
            name = str(dtype).replace("torch.", "")
            mask = "causal" if causal else "padding"
            rows.append({"dtype": name, "mask": mask, "flash_ms": flash, "math_ms": math_})
            print(f"{name:<10}{mask:<9}{flash:>10.1f}{math_:>10.1f}{flash / math_:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
