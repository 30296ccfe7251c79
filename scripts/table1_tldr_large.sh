#!/usr/bin/env bash
# Table 1 (TL;DR) at the large scale (issue 29), then CLM's dial on the same posts: the
# seven rows took about three hours alone on 2 CPU cores under bf16 (2026-12-06), the dial
# about an hour and a half more (its sweep answers 7 alphas x 600 posts), in as many
# sittings as it takes. Every step resumes: the experiment skips trained runs and cached
# answers, `train` finds a finished run of the same settings done (and refuses one of other
# settings), the sweep answers only the blocks its cache lacks.
# Results: docs/results/table1_tldr_large.md.
#
#   scripts/table1_tldr_large.sh [OUT] [EVAL_DATA]     (repository root)
#
# EVAL_DATA (KIND:PATH, e.g. prompts:other-posts.jsonl) answers another file of posts and
# references instead; it must share no post with the training records.
#
# CLM's settings were fixed before any result: DPO on the table's own split and records,
# at the paper's 512 tokens (more pairs fit than at the table's 448), beta 1 and lr 1e-4
# for one epoch, the settings that moved the layer without degenerating it on the demo's
# pairs (docs/results/clm_dial_small.md).
set -euo pipefail
OUT=${1:-reports/table1-large}
EVAL_DATA=${2:-}
BIN=${BIN:-.venv/bin}   # the environment `make test` / `make demo` set up
DATA=pairwise:../shared/data/tldr/gpt4-judged-pairs.jsonl
"$BIN/ctrlalign" experiment experiments/paper_table1_tldr.yaml --scale large --output "$OUT" \
    ${EVAL_DATA:+--eval-data "$EVAL_DATA"}
"$BIN/ctrlalign" train --method clm --data "$DATA" --eval-fraction 0.47 --seed 42 \
    --max-examples 512 --max-eval-examples 64 --max-length 512 --epochs 1 --batch-size 8 \
    --micro-batch-size 4 --learning-rate 1e-4 --beta 1 --output "$OUT/clm"
# the held-out split of those pairs (nothing trained on them), for the reward margin
"$BIN/python" - "$DATA" "$OUT" <<'PY'
import sys
from ctrlalign.data import load_preference_data, split_records
from ctrlalign.data.io import write_jsonl
data = load_preference_data(sys.argv[1])
_, held_out = split_records(data, 0.47, 42)
pairs = ({"prompt": r.chat, "chosen": r.responses[data.chosen],
          "rejected": r.responses[data.rejected]} for r in held_out.records)
write_jsonl(f"{sys.argv[2]}/clm-held-out-pairs.jsonl", pairs)
PY
# the posts every row of the table answered (eval_prompts.jsonl, with their references)
"$BIN/ctrlalign" alpha-sweep --run "$OUT/clm" --alphas 0,0.25,0.5,0.75,1,1.25,1.5 \
    --prompts "$OUT/eval_prompts.jsonl" --pairs "pairwise:$OUT/clm-held-out-pairs.jsonl" \
    --max-new-tokens 48 --batch-size 32 --output "$OUT/clm-sweep"
# the sweep's answers paired by post with the table's rows (CoH, DPO) and with alpha 1
"$BIN/python" scripts/clm_against_table.py "$OUT"
