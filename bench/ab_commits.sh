#!/usr/bin/env bash
# Training, generation and serving (8 clients) throughput of two commits, interleaved A B A B.
#
#   bench/ab_commits.sh BEFORE_REF [AFTER_REF [ROUNDS]]
#
# Checks both commits (AFTER_REF defaults to HEAD) out in temporary worktrees, so edits in
# the working tree cannot leak into the figures, and runs bench/train_throughput.py and
# bench/alpha_generation.py of each tree (its own code, PYTHONPATH first, the same .venv),
# alternating trees each round so machine drift hits both alike. Every result JSON lands in
# bench/results/ab/{before,after}-{train,alpha,serve}-ROUND.json; bench/ab_report.py reads
# the train and alpha ones (serve: bench/serve_load.py's own JSON and plot per round).
# Set CTRLALIGN_CPU_BF16=0 to compare a commit that resolves --dtype auto to bf16 on this
# CPU with one that always ran fp32.
set -euo pipefail
before_ref=${1:?usage: bench/ab_commits.sh BEFORE_REF [AFTER_REF [ROUNDS]]}
after_ref=${2:-HEAD}
rounds=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/.venv/bin/python"
out="$repo/bench/results/ab"
data="$repo/../shared/data/hh-rlhf/helpful-base-test.jsonl.gz"
before=$(mktemp -d /tmp/ctrlalign-before.XXXXXX)
after=$(mktemp -d /tmp/ctrlalign-after.XXXXXX)
trap 'git -C "$repo" worktree remove --force "$before"; git -C "$repo" worktree remove --force "$after"' EXIT
git -C "$repo" worktree add --detach -f "$before" "$before_ref" >/dev/null
git -C "$repo" worktree add --detach -f "$after" "$after_ref" >/dev/null
mkdir -p "$out"
git -C "$repo" rev-parse "$before_ref" >"$out/before.commit"
git -C "$repo" rev-parse "$after_ref" >"$out/after.commit"
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    root=$([ "$side" = before ] && echo "$before" || echo "$after")
    echo "[ab] round $round: $side ($root)" >&2
    (cd "$root" && PYTHONPATH="$root" "$py" bench/train_throughput.py --only lora-step2 soft-prompt-step1 \
      --steps 2 --rounds 1 --threads 1 --data "$data" --output "$out/$side-train-$round.json" >&2)
    (cd "$root" && PYTHONPATH="$root" "$py" bench/alpha_generation.py --repeats 2 --threads 1 --data "$data" \
      --output "$out/$side-alpha-$round.json" >&2)
    (cd "$root" && PYTHONPATH="$root" "$py" bench/serve_load.py --clients 8 --one-at-a-time-max 0 \
      --data "$data" --output "$out/$side-serve-$round.json" >&2)
  done
done
