#!/usr/bin/env bash
# CLM's dial at a scale two CPU cores allow (issue 14), on the default model: DPO trains the
# identity layer alone on the project's demo pairs (concise preferred over detailed), then
# alpha runs from 0 to 1.5 on held-out prompts (mean length, the attr:length judge) and
# held-out pairs (the DPO reward margin). Results: docs/results/clm_dial_small.md.
# A layer trained alone with DPO's usual beta 0.1 degenerates on pairs this easy to tell
# apart: at lr 5e-4 (2 epochs) and 2e-4 (1 epoch) the held-out log-ratio margin runs to
# ~480 nats and the aligned stream answers "1111..." or nothing from alpha 0.5 on. beta 1
# makes DPO's loss saturate at a ~12 times smaller margin (41 nats), which keeps the layer
# near the base model: at lr 1e-4 for one epoch the mean length falls monotonically from
# 90.5 to 20.3 words over alpha 0..1.5.
#
#   scripts/clm_dial_small.sh [OUT]      (repository root; about 15 min on 2 idle cores)
set -euo pipefail
OUT=${1:-reports/clm-dial-small}
LR=${LR:-1e-4}          # the layer's learning rate; EPOCHS: passes over the 227 pairs
EPOCHS=${EPOCHS:-1}
BETA=${BETA:-1}       # DPO's beta: higher keeps the layer nearer the base model
DATA=preferences:ctrlalign/demo_data/concise_detailed.jsonl
BIN=${BIN:-.venv/bin}   # the environment `make test` / `make demo` set up
mkdir -p "$OUT"
"$BIN/ctrlalign" train --method clm --data "$DATA" --chosen concise --rejected detailed \
    --eval-fraction 0.2 --epochs "$EPOCHS" --batch-size 8 --micro-batch-size 4 --learning-rate "$LR" \
    --beta "$BETA" --max-length 256 --seed 42 --output "$OUT/run"
# what no training record had: the run's own held-out split, 16 of its prompts to answer
# and all its pairs for the reward margin
"$BIN/python" - "$DATA" "$OUT" <<'PY'
import sys
from ctrlalign.data import load_preference_data, split_records
from ctrlalign.data.io import write_jsonl
data = load_preference_data(sys.argv[1], chosen="concise", rejected="detailed")
_, held_out = split_records(data, 0.2, 42)
write_jsonl(f"{sys.argv[2]}/prompts.jsonl", ({"prompt": r.chat} for r in held_out.records[:16]))
pairs = ({"prompt": r.chat, "chosen": r.responses["concise"], "rejected": r.responses["detailed"]}
         for r in held_out.records)
write_jsonl(f"{sys.argv[2]}/pairs.jsonl", pairs)
PY
"$BIN/ctrlalign" alpha-sweep --run "$OUT/run" --alphas 0,0.25,0.5,0.75,1,1.25,1.5 \
    --prompts "$OUT/prompts.jsonl" --pairs "pairwise:$OUT/pairs.jsonl" --judge attr:length \
    --max-new-tokens 128 --batch-size 8 --output "$OUT/sweep"
