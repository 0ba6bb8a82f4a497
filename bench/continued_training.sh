#!/usr/bin/env bash
# Fine-tuning, ensembles and EMA on the demo (README, Performance). Short runs: the numbers
# compare settings at equal steps, they are not the demo's best.
#
#   bench/continued_training.sh DEMO_RUN WORK_DIR     (DEMO_RUN: a trained runs/demo, only read)
#
# In WORK_DIR: seed1, seed2 (demo recipe, 600 steps, seeds 1 and 2), seed1-ema (seed 1 with
# train.ema 0.999), ft-demo / ft-seed1 (DEMO_RUN / seed1 fine-tuned on data/demo-negation for
# 300 steps), scratch (the same 300 steps from random weights). Runs that exist are reused.
# Set LOCK=/tmp/tx-bench.lock to take that lock around every training and timing command.
set -euo pipefail
DEMO=$1 W=$2
TX="${LOCK:+flock $LOCK} ${TX_BIN:-tx}"
NEG=data/demo-negation
STEPS=(--set train.max_minutes=null)
mkdir -p "$W"

train() {  # run_dir recipe overrides...
  local dir=$1 recipe=$2; shift 2
  [ -f "$dir/model.safetensors" ] || $TX train "$recipe" --set run_dir="$dir" "${STEPS[@]}" "$@" > "$dir.log" 2>&1
}
bleu() {  # label, then tx evaluate arguments: prints label, BLEU, seconds
  $TX evaluate "${@:2}" --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(f'$1\t{r[\"bleu\"]}\t{r[\"seconds\"]}s')"
}

train "$W/seed1" recipes/demo.yaml --set seed=1 --set train.max_steps=600
train "$W/seed2" recipes/demo.yaml --set seed=2 --set train.max_steps=600
train "$W/seed1-ema" recipes/demo.yaml --set seed=1 --set train.max_steps=600 --set train.ema=0.999
train "$W/ft-demo" recipes/finetune-demo.yaml --set train.init_from="$DEMO"
train "$W/ft-seed1" recipes/finetune-demo.yaml --set train.init_from="$W/seed1"
train "$W/scratch" recipes/finetune-demo.yaml --set train.init_from=null --set train.lr=2e-3 --set train.warmup=150

echo "== fine-tuning: BLEU on the negation test slice ($NEG/test, 147 sentences, beam 5)"
for run in "$DEMO" "$W/seed1"; do bleu "before: $run" "$run" --src $NEG/test.src --ref $NEG/test.tgt; done
for run in ft-demo ft-seed1 scratch; do bleu "after: $run" "$W/$run"; done

echo "== ensembles: BLEU on the demo test split (1000 sentences, beam 5) and decoding time"
T=(--src data/demo/test.src --ref data/demo/test.tgt)
bleu "seed1" "$W/seed1" "${T[@]}"
bleu "seed2" "$W/seed2" "${T[@]}"
bleu "seed1+seed2" "$W/seed1" "$W/seed2" "${T[@]}"
bleu "demo" "$DEMO" "${T[@]}"
bleu "demo+seed2" "$DEMO" "$W/seed2" "${T[@]}"

echo "== EMA: validation BLEU by step (greedy, 200 valid sentences), seed1 vs seed1-ema"
python3 - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
def valid(run, weights):
    return {e["step"]: e["bleu"] for e in map(json.loads, (w / run / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "valid" and e.get("weights", "model") == weights}
a, m, e = valid("seed1", "model"), valid("seed1-ema", "model"), valid("seed1-ema", "ema")
print("step\tno EMA\tEMA run: weights\tEMA run: average")
for s in sorted(a):
    print(f"{s}\t{a[s]:.2f}\t{m.get(s, float('nan')):.2f}\t{e.get(s, float('nan')):.2f}")
PY
bleu "seed1-ema (model.safetensors: the better weights)" "$W/seed1-ema" "${T[@]}"
