#!/usr/bin/env bash
# CLM's dial at a scale two CPU cores allow (issue 14), on the default model: DPO trains the
# identity layer alone, at a learning rate for a freshly added layer trained on its own
# (1e-3, as MEET's first step; the CLM paper's 2e-5 is for its scale and barely moves the
# layer in 32 steps), then alpha runs from 0 to 1.5 on held-out HH-RLHF prompts.
#
#   scripts/clm_dial_small.sh [OUT]      (repository root; about 15 min on 2 idle cores)
set -euo pipefail
OUT=${1:-reports/clm-dial-small}
DATA=hh-rlhf:../shared/data/hh-rlhf/helpful-base-test.jsonl.gz
mkdir -p "$OUT"
ctrlalign train --method clm --data "$DATA" --max-examples 128 --eval-fraction 0.2 \
    --epochs 2 --batch-size 8 --micro-batch-size 4 --lr-second 1e-3 --beta 0.1 \
    --max-length 384 --seed 42 --output "$OUT/run"
# prompts no training record had: the held-out split of the same file, first 24 dialogues
python - "$DATA" "$OUT/prompts.jsonl" <<'PY'
import sys
from ctrlalign.data import load_preference_data, split_records
from ctrlalign.data.io import write_jsonl
_, held_out = split_records(load_preference_data(sys.argv[1]), 0.2, 42)
write_jsonl(sys.argv[2], ({"prompt": r.chat} for r in held_out.records[:24]))
PY
ctrlalign alpha-sweep --run "$OUT/run" --alphas 0,0.25,0.5,0.75,1,1.25,1.5 \
    --prompts "$OUT/prompts.jsonl" --max-new-tokens 96 --batch-size 8 --output "$OUT/sweep"
