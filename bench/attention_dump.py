"""Time and peak memory of dumping every attention weight, and whether memory stays flat.

    .venv/bin/python bench/attention_dump.py [RUN_DIR] [--src F --ref F] [--sizes 100 1000]
                                             [--formats jsonl npz] [--translate N]

Defaults: runs/demo and the demo test split. Each measurement is one `tx attention-dump` process
(all kinds, layers and heads) writing to a file under /tmp; its peak resident memory comes from
the kernel (wait4's ru_maxrss). The reference is the smallest size in the same run: memory is flat
when larger dumps peak at about the smaller one's memory (what is held is one window of sentences
and one batch's weights, whatever the number of sentences; the input file is repeated as needed). Forced decoding on the reference
targets by default; --translate N adds a run of N sentences translated first (recipe settings).
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one tx process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "txcli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"tx {' '.join(args)} failed:\n{err}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def head(path: str, n: int, folder: Path) -> Path:
    """The first n lines of a file, going round again when it has fewer."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = folder / f"{Path(path).name}.{n}"
    out.write_text("".join(lines[i % len(lines)] + "\n" for i in range(n)), encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default=str(ROOT / "runs/demo"))
    ap.add_argument("--src", default=str(ROOT / "data/demo/test.src"))
    ap.add_argument("--ref", default=str(ROOT / "data/demo/test.tgt"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000],
                    help="sentences per dump (the input file is repeated to reach them)")
    ap.add_argument("--formats", nargs="+", default=["jsonl", "npz"], choices=["jsonl", "npz"])
    ap.add_argument("--translate", type=int, metavar="N", help="also dump N sentences translated first (npz)")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="tx-attention-bench-") as tmp:
        folder = Path(tmp)
        cases = [(fmt, n, True) for fmt in args.formats for n in sorted(args.sizes)]
        if args.translate:
            cases.append(("npz", args.translate, False))
        for fmt, n, forced in cases:
            out = folder / f"dump.{fmt}"
            cmd = ["attention-dump", args.run_dir, "--input", str(head(args.src, n, folder)),
                   "--format", fmt, "--output", str(out), "--device", "cpu"]
            if forced:
                cmd += ["--ref", str(head(args.ref, n, folder))]
            seconds, peak = measure(cmd)
            rows.append({"format": fmt, "sentences": n, "mode": "forced" if forced else "translated",
                         "seconds": round(seconds, 2), "ms_per_sentence": round(1000 * seconds / n, 2),
                         "peak_rss_mib": round(peak, 1), "output_mib": round(out.stat().st_size / 2**20, 1)})
            out.unlink()
    for row in rows:  # memory against the smallest dump of the same format and mode
        ref = min((r for r in rows if r["format"] == row["format"] and r["mode"] == "forced"),
                  key=lambda r: r["sentences"])
        row["peak_vs_smallest"] = round(row["peak_rss_mib"] / ref["peak_rss_mib"], 3)
        row["peak_over_smallest_mib"] = round(row["peak_rss_mib"] - ref["peak_rss_mib"], 1)
    print(f"{'format':<6} {'mode':<10} {'sentences':>9} {'seconds':>8} {'ms/sent':>8} {'peak MiB':>9} "
          f"{'x smallest':>10} {'+MiB':>6} {'output MiB':>10}")
    for r in rows:
        print(f"{r['format']:<6} {r['mode']:<10} {r['sentences']:>9} {r['seconds']:>8.2f} {r['ms_per_sentence']:>8.2f} "
              f"{r['peak_rss_mib']:>9.1f} {r['peak_vs_smallest']:>10.3f} {r['peak_over_smallest_mib']:>6.1f} "
              f"{r['output_mib']:>10.1f}")
    print(json.dumps({"run_dir": args.run_dir, "results": rows}))


if __name__ == "__main__":
    main()
