"""A whole training run as a user runs it, watched from outside: `tx train RECIPE` in a child
process for --minutes of wall time, its resident memory and CPU time sampled from /proc every
--every seconds, and validation BLEU from its metrics.jsonl. Prints one row per --report seconds
(elapsed, step, RSS now and peak, CPU/wall over the interval) and a summary: CPU/wall over the
whole run (start-up and tokenizer training included), peak RSS, steps, target tokens/s, the
validation scores over time. Linux only (/proc).

    python bench/gettext_corpus.py /tmp/gettext        # the real corpus (Debian's catalogs)
    python bench/train_run.py recipes/small.yaml --minutes 20 --data /tmp/gettext --run-dir /tmp/run-small

--data DIR points the recipe's train/valid/test at DIR/{train,valid,test}.{en,de}; other
overrides go through --set as for `tx train`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLOCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_usage(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds of all threads) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK  # utime + stime
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE / 1e6
    return rss, cpu


def last_step(metrics: Path) -> int:
    step = 0
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError):
                pass
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="DIR with {train,valid,test}.{en,de}")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--report", type=float, default=60.0)
    args = ap.parse_args()

    shutil.rmtree(args.run_dir, ignore_errors=True)
    sets = [f"run_dir={args.run_dir}", f"train.max_minutes={args.minutes}"]
    if args.data:
        for split in ("train", "valid", "test"):
            sets += [f"data.{split}.src={args.data / (split + '.en')}", f"data.{split}.tgt={args.data / (split + '.de')}"]
    command = [sys.executable, "-m", "txcli", "train", args.recipe]
    for s in sets + args.overrides:
        command += ["--set", s]
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, samples, rows = 0.0, [], []
    last_report = (started, 0.0)
    while child.poll() is None:
        try:
            rss, cpu = proc_usage(child.pid)
        except (OSError, IndexError, ValueError):
            break
        now = time.monotonic()
        peak = max(peak, rss)
        samples.append((now - started, rss, cpu))
        if now - last_report[0] >= args.report:
            interval = (cpu - last_report[1]) / (now - last_report[0])
            step = last_step(args.run_dir / "metrics.jsonl")
            rows.append((now - started, step, rss, peak, interval))
            print(f"{(now - started) / 60:5.1f} min  step {step:6d}  rss {rss:7.0f} MB  peak {peak:7.0f} MB  "
                  f"cpu/wall {interval:.2f}", flush=True)
            last_report = (now, cpu)
        time.sleep(args.every)
    stderr = child.communicate()[1]
    wall = time.monotonic() - started
    if child.returncode != 0:
        print(stderr[-2000:])
        raise SystemExit(f"tx train exited {child.returncode}")
    cpu_total = samples[-1][2] if samples else 0.0
    events = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    logs = [e for e in events if e.get("event") == "log"]
    valid = [e for e in events if e.get("event") == "valid" and e.get("weights", "model") == "model"]
    steady = logs[len(logs) // 4:]  # past the first quarter: warm caches, full pools
    tokens_per_s = sum(e["tokens_per_s"] for e in steady) / max(len(steady), 1)
    print(f"\n{args.recipe}, {args.minutes:g} min: {last_step(args.run_dir / 'metrics.jsonl')} steps, "
          f"{tokens_per_s:,.0f} target tokens/s (mean of the log windows past the first quarter)")
    print(f"whole process: CPU/wall {cpu_total / wall:.2f} over {wall / 60:.1f} min (sampled up to "
          f"{samples[-1][0] / 60 if samples else 0:.1f} min), peak RSS {peak:,.0f} MB")
    for e in valid:
        print(f"  valid step {e['step']:6d}  {e['elapsed'] / 60:5.1f} min  BLEU {e['bleu']:6.2f}  chrF {e['chrf']:6.2f}  "
              f"loss {e['loss']:.3f}")


if __name__ == "__main__":
    main()
