"""The issue-21 numbers in one run: a large corpus against a small one, streamed and from the
`tx prepare` cache, with `recipes/small.yaml`'s model (d 256, 4 heads, ff 1024, 3+3 layers,
4,096-token batches); and what the filters and BPE-dropout cost the training loop.

    python bench/big_corpus.py [--work DIR] [--repeat 58] [--steps 50] [--warmup 10] [--rounds 2]

The corpora are bench/prepare_bench.py's: the gettext corpus (bench/gettext_corpus.py, ~52k en-de
pairs) and it repeated --repeat times (~3M pairs), one 8k joint BPE tokenizer trained once on the
small one and copied into every run (so no run trains a tokenizer). Measured, each `tx train` a
child process with log_every 1, stopped by SIGTERM (which saves checkpoints/last) after --steps:

- tx prepare (in process, prepare_bench's code): time, pairs/s, CPU us a pair, cache size;
- time from spawning `tx train` to the first step's log line (and to its start event), steady
  target tokens/s over the steps after --warmup (and per CPU-second: the machine is shared), peak
  RSS (wait4), for the four combinations {small, big} x {streamed, cache}, interleaved over rounds;
- a late resume of the big corpus: the checkpoint of a short run is edited to stand at step
  --resume-step, in the pool that step falls in (batches per pool counted on pool 0) -- the run
  did not train that long -- and the time from spawning `tx train --resume` to its first step;
- filters (all but langid) and BPE-dropout 0.1 against neither, as training tokens/s with the
  background pool thread, on a copy of the small corpus every filter keeps (so the three train on
  the same pairs and batches: only the work differs) and --filter-pool pairs a pool, so that the
  window of steps holds several pool builds (each trained pair is tokenized once whatever the pool
  size: the share of the work is the same as with 50k-pair pools).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import prepare_bench  # noqa: E402  (the corpora and the tx prepare measurement)

FILTERS = {"min_tokens": 1, "max_tokens": 100, "min_chars": 2, "max_chars": 400, "max_ratio": 3.0, "same": True,
           "duplicates": True, "min_letters": 0.5, "control_chars": True}
POLL = 0.02  # seconds between looks at metrics.jsonl while waiting for a step


def write_recipe(work: Path, name: str, corpus: Path, extra: dict) -> Path:
    """recipes/small.yaml's model and training settings on `corpus`; stopped from outside."""
    raw = yaml.safe_load((ROOT / "recipes" / "small.yaml").read_text(encoding="utf-8"))
    raw["name"], raw["run_dir"] = f"big-corpus-{name}", str(work / "runs" / name)
    raw["data"] = {"train": {"src": str(corpus / "train.en"), "tgt": str(corpus / "train.de")},
                   "valid": {"src": str(corpus / "valid.en"), "tgt": str(corpus / "valid.de")},
                   "max_len": raw["data"]["max_len"], **extra}
    raw["train"].update(max_steps=100_000, eval_every=100_000, log_every=1, valid_max_sentences=16)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def events_after(metrics: Path, after: int) -> list[dict]:
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (e.get("event") == "log" and e["step"] > after) or (e.get("event") == "start" and e["step"] == after):
            out.append(e)
    return out


def train(recipe: Path, run_dir: Path, sets: list[str], steps: int, after: int = 0, tokenizer: Path = None) -> dict:
    """Spawn `tx train` (--resume when `after`), wait for step after+steps, SIGTERM it. Returns
    the seconds from spawning to its start event and to its first step, its log events after
    `after`, and its peak RSS."""
    if tokenizer is not None:
        run_dir.mkdir(parents=True)
        shutil.copy(tokenizer, run_dir / tokenizer.name)
    cmd = [sys.executable, "-m", "txcli", "train", str(recipe), "--set", f"run_dir={run_dir}"]
    cmd += ["--resume"] * bool(after) + [x for s in sets for x in ("--set", s)]
    metrics, marks, memory = run_dir / "metrics.jsonl", {}, {}
    with open(run_dir.parent / f"{run_dir.name}.stderr", "w") as err:
        t0 = time.monotonic()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic() - t0
            if "last" not in marks:
                seen = events_after(metrics, after)
                for e in seen:
                    key = "start" if e["event"] == "start" else "first" if e["step"] == after + 1 else None
                    if key:
                        marks.setdefault(key, now)
                if any(e["event"] == "log" and e["step"] >= after + steps for e in seen):
                    marks["last"], memory = now, proc_memory(child.pid)
                    child.send_signal(signal.SIGTERM)  # saves checkpoints/last and stops
            if now > 1800:
                child.kill()
            time.sleep(POLL if "last" not in marks else 0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
    logs = [e for e in events_after(metrics, after) if e["event"] == "log" and e["step"] <= after + steps]
    if len(logs) < steps or "first" not in marks:
        tail = (run_dir.parent / f"{run_dir.name}.stderr").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{run_dir}: tx train stopped early (exit {child.returncode}):\n{tail}")
    return {"start_s": marks.get("start"), "first_s": marks["first"], "logs": logs,
            "peak_rss_mb": usage.ru_maxrss * 1024 / 1e6, "step1_rss_mb": logs[0]["rss_mb"], **memory}


def proc_memory(pid: int) -> dict:
    """What the process holds now, split: anonymous memory (the heap, tensors, arrays) and mapped
    file pages (the libraries, and the memory-mapped corpus or cache pages it has touched)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024 / 1e6
    return {"rss_anon_mb": fields.get("RssAnon"), "rss_file_mb": fields.get("RssFile")}


def steady(logs: list[dict], after: int, warmup: int) -> tuple[float, float]:
    """(target tokens/s, target tokens per CPU-second) over the steps after the warm-up: each log
    line covers one step (log_every 1) and the wall time since the line before."""
    by_step = {e["step"]: e for e in logs}
    tokens = cpu = wall = 0.0
    for step in range(after + warmup + 1, max(by_step) + 1):
        dt = by_step[step]["elapsed"] - by_step[step - 1]["elapsed"]
        tokens += by_step[step]["tokens_per_s"] * dt
        cpu += (by_step[step]["cpu_per_wall"] or 0.0) * dt
        wall += dt
    return tokens / wall, tokens / max(cpu, 1e-9)


def measure(name: str, recipe: Path, work: Path, tokenizer: Path, sets: list[str], args, results: dict) -> Path:
    run_dir = work / "runs" / f"{name}-{len(results.setdefault(name, []))}"
    r = train(recipe, run_dir, sets, args.steps, tokenizer=tokenizer)
    r["tokens_per_s"], r["tokens_per_cpu_s"] = steady(r["logs"], 0, args.warmup)
    del r["logs"]
    results[name].append(r)
    print(f"  {name}: start {r['start_s']:.1f} s, first step {r['first_s']:.1f} s, {r['tokens_per_s']:,.0f} tok/s "
          f"({r['tokens_per_cpu_s']:,.0f} per CPU-s), peak RSS {r['peak_rss_mb']:,.0f} MB (at step 1 "
          f"{r['step1_rss_mb']:,.0f}; at the end anon {r['rss_anon_mb']:,.0f} + file {r['rss_file_mb']:,.0f}) "
          f"[load {os.getloadavg()[0]:.1f}]", flush=True)
    return run_dir


def late_position(recipe: Path, run_dir: Path, target: int) -> tuple[int, int, int, int]:
    """(pool, batches done in it, batches of pool 0, pools an epoch): where step `target` of a
    one-rank run would stand, counting every pool as long as pool 0 (kept inside epoch 1)."""
    from txcli.commands.run import load_tokenizers
    from txcli.commands.train_data import training_stream
    from txcli.schema import load_recipe

    r = load_recipe(recipe, [f"run_dir={run_dir}"])
    tok, _ = load_tokenizers(run_dir, True)
    stream = training_stream(r, tok, tok, prefetch=False)
    try:
        per = 0
        for _, (pool, _done) in stream.epoch(1):
            per += 1
            if pool != 0:  # the last batch of pool 0 points at pool 1
                break
        n_pools = stream.n_pools
    finally:
        stream.close()
    pool, done = divmod(target, per)
    if pool >= n_pools - 1:
        pool, done = n_pools - 2, per // 2
    return pool, done, per, n_pools


def late_resume(name: str, recipe: Path, run_dir: Path, sets: list[str], args) -> dict:
    """Move run_dir's checkpoints/last to step --resume-step (see late_position), resume, time it."""
    pool, done, per, n_pools = late_position(recipe, run_dir, args.resume_step)
    path = run_dir / "checkpoints" / "last" / "state.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    state["step"] = args.resume_step
    state["train_state"].update(step=args.resume_step, batches_done=args.resume_step, pool=pool, pool_batches=done)
    path.write_text(json.dumps(state), encoding="utf-8")
    r = train(recipe, run_dir, sets, args.resume_steps, after=args.resume_step)
    print(f"  {name}: resumed at step {args.resume_step:,} = pool {pool} of {n_pools} (pool 0 has {per} batches), "
          f"batch {done}: first step after {r['first_s']:.1f} s (start event {r['start_s']:.1f} s), "
          f"peak RSS {r['peak_rss_mb']:,.0f} MB [load {os.getloadavg()[0]:.1f}]", flush=True)
    return {"pool": pool, "pool_batches": done, "n_pools": n_pools, "first_s": r["first_s"],
            "start_s": r["start_s"], "peak_rss_mb": r["peak_rss_mb"]}


def clean_copy(small: Path, out: Path, tokenizer_dir: Path, max_len: int) -> int:
    """The small corpus without the pairs FILTERS or data.max_len would drop: filtering it drops
    nothing, so training with and without the filters sees the same pairs."""
    from txcli.commands.run import load_tokenizers
    from txcli.filters import PairFilters
    from txcli.schema.data import Filters

    filters = PairFilters(Filters(**FILTERS), max_len)
    tok, _ = load_tokenizers(tokenizer_dir, True)
    src = (small / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (small / "train.de").read_text(encoding="utf-8").splitlines()
    seen, pairs = set(), []
    for pair in zip(src, tgt):
        if pair not in seen and filters.text_reason(*pair) is None:
            seen.add(pair)
            pairs.append(pair)
    ids = zip(tok.encode_batch([s for s, _ in pairs]), tok.encode_batch([t for _, t in pairs]))
    kept = [p for p, (a, b) in zip(pairs, ids) if a and b and filters.token_reason(len(a), len(b)) is None]
    out.mkdir(parents=True, exist_ok=True)
    for split in ("valid",):
        for lang in ("en", "de"):
            shutil.copy(small / f"{split}.{lang}", out / f"{split}.{lang}")
    (out / "train.en").write_text("".join(s + "\n" for s, _ in kept), encoding="utf-8")
    (out / "train.de").write_text("".join(t + "\n" for _, t in kept), encoding="utf-8")
    return len(kept)


def ratio_line(what: str, values: list[float], base: list[float]) -> str:
    ratios = [v / b for v, b in zip(values, base)]
    return f"{what}: {', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})"


def tokenizer_once(work: Path, small: Path) -> Path:
    """One 8k joint BPE tokenizer from the small corpus, copied into every run."""
    from txcli.commands.run import train_tokenizers
    from txcli.schema import load_recipe

    out = work / "tokenizer"
    if not (out / "tokenizer.json").is_file():
        train_tokenizers(load_recipe(write_recipe(work, "tokenizer", small, {}), [f"run_dir={out}"]), force=True)
    return out


def prepare_both(work: Path, recipes: dict, tok_dir: Path) -> dict:
    from txcli.schema import load_recipe

    out = {}
    for name, recipe in recipes.items():
        r = load_recipe(recipe, [f"run_dir={tok_dir}", f"data.prepared={work / ('cache-' + name)}"])
        if name == "small":
            wall, cpu, n = prepare_bench.tokenizer_alone(r)
            print(f"  tokenizer alone (yardstick), {n:,} pairs in memory: {n / wall:,.0f} pairs/s, "
                  f"{cpu * 1e6 / n:.1f} CPU us a pair", flush=True)
        m = prepare_bench.report(name, r)
        out[name] = {k: m[k] for k in ("pairs", "kept", "seconds", "pairs_per_s", "cpu_us_per_pair", "cache_mb")}
    return out


def main_runs(work: Path, recipes: dict, tok_dir: Path, args) -> tuple[dict, dict]:
    tokenizer, results, last_dirs = tok_dir / "tokenizer.json", {}, {}
    plan = [(f"{size}-{mode}", recipes[size], [f"data.prepared={work / ('cache-' + size)}"] if mode == "cache" else [])
            for mode in ("stream", "cache") for size in ("small", "big")]
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} of {args.rounds}: {args.steps} steps each, steady over the last "
              f"{args.steps - args.warmup}", flush=True)
        for name, recipe, sets in (plan if round_ % 2 == 0 else plan[::-1]):
            last_dirs[name] = (measure(name, recipe, work, tokenizer, sets, args, results), sets)
    resumes = {}
    for name in ("big-stream", "big-cache"):
        run_dir, sets = last_dirs[name]
        resumes[name] = late_resume(name, recipes["big"], run_dir, sets, args)
    return results, resumes


def filter_runs(work: Path, small: Path, tok_dir: Path, args) -> dict:
    clean = work / "gettext-clean"
    n = clean_copy(small, clean, tok_dir, max_len=128)
    print(f"filters and BPE-dropout: {n:,} pairs every filter keeps, pools of {args.filter_pool:,} pairs", flush=True)
    recipes = {"none": write_recipe(work, "clean-none", clean, {}),
               "filters": write_recipe(work, "clean-filters", clean, {"filters": FILTERS}),
               "dropout": write_recipe(work, "clean-dropout", clean, {"sampling": {"dropout": 0.1}})}
    results, sets = {}, [f"train.pool_size={args.filter_pool}"]
    for round_ in range(args.filter_rounds):
        order = list(recipes) if round_ % 2 == 0 else list(recipes)[::-1]
        for name in order:
            run_dir = measure(name, recipes[name], work, tok_dir / "tokenizer.json", sets, args, results)
            if name == "filters":  # the epoch's counts so far, saved with the checkpoint: nothing dropped
                saved = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
                counts = saved["train_state"]["epoch_data"].get("corpora", {})
                print(f"    filter counts so far: {counts}", flush=True)
    return results


def median(results: dict, name: str, key: str) -> float:
    return statistics.median(r[key] for r in results[name])


def summary(prep, runs, resumes, costs) -> None:
    """The targets, met or not, from whichever phases ran (medians over rounds; ratios per round)."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("\nsummary (medians over rounds; ratios per round)")
    if runs:
        first = median(runs, "big-cache", "first_s")
        print(f"  first step, big corpus from the cache: {first:.1f} s (< 10 s: {verdict(first < 10)}); "
              f"streamed {median(runs, 'big-stream', 'first_s'):.1f} s; small {median(runs, 'small-cache', 'first_s'):.1f} / "
              f"{median(runs, 'small-stream', 'first_s'):.1f} s (cache / streamed)")
        resume = resumes["big-cache"]["first_s"]
        print(f"  first step after the late resume, from the cache: {resume:.1f} s (< 10 s: {verdict(resume < 10)}); "
              f"streamed {resumes['big-stream']['first_s']:.1f} s")
        for mode in ("cache", "stream"):
            print("  " + size_ratios(mode, runs[f"big-{mode}"], runs[f"small-{mode}"], verdict))
    if prep:
        pps = prep["big"]["pairs_per_s"]
        print(f"  tx prepare, big corpus: {pps:,.0f} pairs/s (>= 100k: {verdict(pps >= 100_000)}); "
              f"cache {prep['big']['cache_mb']:,.0f} MB vs {prep['small']['cache_mb']:,.1f} MB")
    if costs:
        base = [r["tokens_per_s"] for r in costs["none"]]
        base_cpu = [r["tokens_per_cpu_s"] for r in costs["none"]]
        for name in ("filters", "dropout"):
            tps = [r["tokens_per_s"] for r in costs[name]]
            cost = 1 - statistics.median(t / b for t, b in zip(tps, base))
            print(f"  {ratio_line(name + '/none tokens/s', tps, base)}: cost {cost:+.1%} (< 5%: {verdict(cost < 0.05)}); "
                  f"{ratio_line('per CPU-s', [r['tokens_per_cpu_s'] for r in costs[name]], base_cpu)}")


def size_ratios(mode: str, big: list[dict], small: list[dict], verdict) -> str:
    tps = [b["tokens_per_s"] / s["tokens_per_s"] for b, s in zip(big, small)]
    cpu = [b["tokens_per_cpu_s"] / s["tokens_per_cpu_s"] for b, s in zip(big, small)]
    rss = [b["peak_rss_mb"] / s["peak_rss_mb"] for b, s in zip(big, small)]
    line = (f"{mode}: big/small tokens/s {', '.join(f'{x:.3f}' for x in tps)} "
            f"(within 5%: {verdict(abs(statistics.median(tps) - 1) <= 0.05)}); per CPU-s "
            f"{', '.join(f'{x:.3f}' for x in cpu)}; peak RSS {', '.join(f'{x:.3f}' for x in rss)} "
            f"(within 10%: {verdict(statistics.median(rss) <= 1.10)})")
    if all("rss_anon_mb" in r for r in big + small):
        first = [b["step1_rss_mb"] - s["step1_rss_mb"] for b, s in zip(big, small)]
        parts = [(b["rss_anon_mb"] - s["rss_anon_mb"], b["rss_file_mb"] - s["rss_file_mb"]) for b, s in zip(big, small)]
        line += (f"; big - small at step 1 {', '.join(f'{x:+,.0f}' for x in first)} MB, at the end anon / file "
                 f"{', '.join(f'{a:+,.0f} / {f:+,.0f}' for a, f in parts)} MB")
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="corpora, caches and runs (default: a temp dir, removed)")
    ap.add_argument("--repeat", type=int, default=58, help="the big corpus: the gettext training split this many times")
    ap.add_argument("--steps", type=int, default=50, help="training steps a run")
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the steady tokens/s")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the four {small, big} x {streamed, cache} runs")
    ap.add_argument("--resume-step", type=int, default=10_000)
    ap.add_argument("--resume-steps", type=int, default=3, help="steps the resumed run trains")
    ap.add_argument("--filter-rounds", type=int, default=2)
    ap.add_argument("--filter-pool", type=int, default=4000, help="pairs a pool in the filter/dropout runs")
    ap.add_argument("--skip", default="", help="comma-separated phases to leave out: prepare, runs, filters")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tx-big-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    skip = set(filter(None, args.skip.split(",")))
    try:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start (a shared machine)", flush=True)
        small, big = prepare_bench.corpus(work, 1), prepare_bench.corpus(work, args.repeat)
        tok_dir = tokenizer_once(work, small)
        recipes = {"small": write_recipe(work, "small", small, {}), "big": write_recipe(work, "big", big, {})}
        prep = prepare_both(work, recipes, tok_dir) if "prepare" not in skip else None
        runs, resumes = main_runs(work, recipes, tok_dir, args) if "runs" not in skip else (None, None)
        costs = filter_runs(work, small, tok_dir, args) if "filters" not in skip else None
        (work / "results.json").write_text(json.dumps({"prepare": prep, "runs": runs, "resumes": resumes,
                                                       "costs": costs}, indent=1), encoding="utf-8")
        summary(prep, runs, resumes, costs)
        print(f"load average {os.getloadavg()[0]:.1f} at the end; figures in {work / 'results.json'}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
