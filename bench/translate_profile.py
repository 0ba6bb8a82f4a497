"""Where beam-search decoding spends its time: torch.profiler over translating a test set.

Reports the share of wall time spent outside the matrix-multiply and attention kernels (the
rest is Python, framework dispatch and the small element-wise ops around them), and the ops
that take the most time. Each round translates the file twice: once plain, once under the
profiler, which times the kernels. The profiler costs time of its own between the ops (it records
~230 ops per decoding step), so there are two figures: kernel time over the plain pass's wall (the
share as decoding runs without a profiler: the figure) and over the profiled pass's wall (an upper
bound that counts the profiler's overhead as outside). Medians over the rounds.

    .venv/bin/python bench/translate_profile.py runs/demo --src data/demo/test.src --beam 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from txcli.commands.run import open_for_decoding  # noqa: E402
from txcli.commands.run import run_decoding as resolve_decoding  # noqa: E402
from txcli.decoding import translate_rows  # noqa: E402
from txcli.options import DecodeOptions  # noqa: E402
from txcli.translation import encode_sources  # noqa: E402

# the kernels that do the arithmetic; everything else is overhead for this benchmark's purpose
KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
           "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
           "aten::_efficient_attention_forward", "aten::_flash_attention_forward", "aten::mkldnn_linear")


def kernel_seconds(events) -> float:
    """Time inside the outermost kernel calls, including what they run themselves (addmm on CPU
    first copies the bias into its output, a child copy_ of the kernel; the math attention path
    calls bmm). Nested kernel calls are counted once, through their outermost kernel."""
    total_us = 0.0
    for e in events:
        if e.name not in KERNELS:
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name not in KERNELS:
            parent = parent.cpu_parent
        if parent is None:
            total_us += e.cpu_time_total
    return total_us / 1e6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, default=Path("data/demo/test.src"))
    ap.add_argument("--lines", type=int, default=None, help="only the first N lines")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=5,
                    help="profiled passes; the median share is the figure (a busy moment skews one pass)")
    args = ap.parse_args(argv)

    run = open_for_decoding(args.run_dir, "cpu", args.threads)
    decoding = resolve_decoding(run, DecodeOptions(beam=args.beam, precision=args.precision,
                                                   batch_tokens=args.batch_tokens))
    texts = args.src.read_text(encoding="utf-8").splitlines()[: args.lines]
    rows, _ = encode_sources(run.src_tok, texts, run.recipe.data.max_len)
    rows = [r for r in rows if r is not None]
    translate_rows(run.model, rows, decoding)  # warm-up: the first pass pays for page faults in fresh buffers

    plains, walls, kernels = [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        translate_rows(run.model, rows, decoding)
        plains.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            translate_rows(run.model, rows, decoding)
            walls.append(time.perf_counter() - start)
        kernels.append(kernel_seconds(prof.events()))
    shares = [1 - k / w for k, w in zip(kernels, plains)]
    shares_profiled = [1 - k / w for k, w in zip(kernels, walls)]
    wall = walls[-1]
    events = prof.key_averages()  # the op table is from the last pass
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]
    print(f"{'op':55s} {'calls':>8s} {'self s':>8s} {'share':>6s}")
    for e in top:
        mark = "*" if e.key in KERNELS else " "
        print(f"{mark}{e.key[:54]:54s} {e.count:8d} {e.self_cpu_time_total / 1e6:8.2f} "
              f"{e.self_cpu_time_total / 1e6 / wall:6.1%}")
    print("(* = matrix or attention kernel)")
    median = statistics.median
    result = {"sentences": len(rows), "beam": args.beam, "precision": args.precision,
              "threads": torch.get_num_threads(), "rounds": args.rounds,
              "wall_s": [round(w, 2) for w in plains], "wall_s_profiled": [round(w, 2) for w in walls],
              "kernel_s": [round(k, 2) for k in kernels],
              "share_outside_kernels": round(median(shares), 3),
              "share_outside_kernels_profiled_wall": round(median(shares_profiled), 3)}
    print(f"outside the kernels: {median(shares):.1%} of the wall time "
          f"({median(shares_profiled):.1%} counting the profiler's own overhead)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
