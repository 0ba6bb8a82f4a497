"""Peak memory of `tx translate` against input length: it should be flat.

Makes inputs of each size by cycling through a source file, pipes each through
`tx translate RUN_DIR` (output thrown away) in a fresh process, and reads the child's peak
resident set size. Also reports lines/s, so the figures show the work was really done.

    .venv/bin/python bench/translate_memory.py runs/demo --src data/demo/test.src --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a fresh interpreter per size: its RUSAGE_CHILDREN peak is exactly that one translation's
MEASURE = """
import resource, subprocess, sys
with open(sys.argv[1], 'rb') as src, open(sys.argv[2], 'wb') as out:
    rc = subprocess.run(sys.argv[3:], stdin=src, stdout=out).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_input(src: Path, lines: int, folder: Path) -> Path:
    path = folder / f"input-{lines}.txt"
    source = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for line in itertools.islice(itertools.cycle(source), lines):
            f.write(line + "\n")
    return path


def measure(run_dir: Path, path: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "txcli", "translate", str(run_dir), *extra]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(out), *cmd],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    rc, peak_kib = (int(x) for x in done.stdout.split())
    if rc != 0:
        raise SystemExit(f"tx translate failed on {path}: exit {rc}")
    n_in = sum(1 for _ in open(path, "rb"))
    n_out = sum(1 for _ in open(out, "rb"))
    return {"lines": n_in, "lines_out": n_out, "peak_rss_mib": round(peak_kib / 1024, 1),
            "seconds": round(seconds, 1), "lines_per_s": round(n_in / seconds, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, default=Path("data/demo/test.src"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--beam", type=int, default=1, help="the search does not change how memory grows with input")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    extra = ["--beam", str(args.beam)] + (["--threads", str(args.threads)] if args.threads else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="tx-mem-") as tmp:
        folder = Path(tmp)
        for n in args.sizes:
            path = make_input(args.src, n, folder)
            rows.append(measure(args.run_dir, path, folder / "out.txt", extra))
            os.unlink(path)
    print(f"{'lines':>8} {'lines out':>9} {'peak RSS MiB':>12} {'seconds':>8} {'lines/s':>8}")
    for r in rows:
        print(f"{r['lines']:>8} {r['lines_out']:>9} {r['peak_rss_mib']:>12} {r['seconds']:>8} {r['lines_per_s']:>8}")
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(json.dumps({"beam": args.beam, "runs": rows, "peak_ratio_largest_to_smallest": round(growth, 3)}))


if __name__ == "__main__":
    main()
