#!/usr/bin/env bash
# Behaviour check for restructurings: the outputs of every decoding path and of 50 training steps,
# written to OUT_DIR so that two trees can be compared byte for byte (diff -r).
#   bash bench/golden.sh RUN_DIR OUT_DIR     # RUN_DIR: a trained demo run, the same for both trees
# Uses whatever `tx` is on the PATH (activate the tree's venv first).
set -euo pipefail
run=$1 out=$2
mkdir -p "$out"
src=data/demo/test.src ref=data/demo/test.tgt
head -n 60 "$src" > "$out/in.src"; head -n 60 "$ref" > "$out/in.tgt"
tx translate "$run" --threads 1 < "$out/in.src" > "$out/beam.txt"
tx translate "$run" --threads 1 --beam 1 < "$out/in.src" > "$out/greedy.txt"
tx translate "$run" --threads 1 --nbest 3 --format jsonl < "$out/in.src" > "$out/nbest.jsonl"
tx translate "$run" --threads 1 --sample --top-p 0.9 --nbest 2 --seed 3 --format jsonl < "$out/in.src" > "$out/sample.jsonl"
tx translate "$run" --threads 1 --precision int8 < "$out/in.src" > "$out/int8.txt"
tx score "$run" --src "$out/in.src" --tgt "$out/in.tgt" > "$out/score.txt"
# the wall time and the output folder differ between runs: left out of the comparison
tx evaluate "$run" --src "$out/in.src" --ref "$out/in.tgt" --json | grep -v '"seconds"' | sed "s|$out|OUT|g" > "$out/evaluate.json"
head -n 5 "$out/in.src" > "$out/five.src"; head -n 5 "$out/in.tgt" > "$out/five.tgt"
tx attention-dump "$run" --input "$out/five.src" --format jsonl --output "$out/attention.jsonl"
tx attention-dump "$run" --input "$out/five.src" --ref "$out/five.tgt" --align --output "$out/align.pharaoh"
# training: the losses of the first 50 demo steps, one a step
rm -rf "$out/train"
tx train recipes/demo.yaml --set run_dir="$out/train" --set train.max_steps=50 --set train.log_every=1 \
    --set train.eval_every=1000 > /dev/null 2>&1
python -c "import json,sys; [print(r['step'], r['loss']) for r in map(json.loads, open(sys.argv[1])) if r.get('event') == 'log']" \
    "$out/train/metrics.jsonl" > "$out/train_losses.txt"
rm -rf "$out/train"
wc -l "$out"/*.txt "$out"/*.jsonl | tail -n 1
