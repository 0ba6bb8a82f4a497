#!/usr/bin/env bash
# The demo, end to end, on the shipped synthetic corpus (data/demo). Run from the repository root
# with `tx` on the PATH (the README's first command does both).
set -euo pipefail
cd "$(dirname "$0")/.."

tx recipe check recipes/demo.yaml > /dev/null
tx train-tokenizer recipes/demo.yaml --force
tx train recipes/demo.yaml                                   # until validation BLEU 92: 3-10 min on 2 CPU cores
echo "--- five test sentences, translated"
head -n 5 data/demo/test.src | tx translate runs/demo
echo "--- BLEU / chrF on the test split"
tx evaluate runs/demo --src data/demo/test.src --ref data/demo/test.tgt
echo "--- every attention weight of three sentences, with pictures"
head -n 3 data/demo/test.src > runs/demo/three.src
tx attention-dump runs/demo --input runs/demo/three.src --format npz --output runs/demo/attention.npz --plot runs/demo/attention
echo "--- the explorer page of 20 test sentences: word alignments against gold, open it in a browser"
head -n 20 data/demo/test.src > runs/demo/twenty.src && head -n 20 data/demo/test.tgt > runs/demo/twenty.tgt
head -n 20 data/demo/test.align > runs/demo/twenty.align
tx attention-dump runs/demo --input runs/demo/twenty.src --ref runs/demo/twenty.tgt --align --align-method bidir \
    --gold runs/demo/twenty.align --output runs/demo/twenty.pharaoh --html runs/demo/explorer.html
echo "--- what the run holds, with its training curves"
tx inspect runs/demo --plot runs/demo/plots
