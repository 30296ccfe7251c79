"""Per-token cost of one generation row at batch 1, CLM aligned (alpha 1) and dialled
(alpha 0.5), in whichever ``ctrlalign`` is importable: run it from two commits' worktrees
(``PYTHONPATH=TREE``) to compare their decode loops on exactly the same work.

    PYTHONPATH=TREE .venv/bin/python bench/generate_step.py --output OUT.json

SmolLM2 with the CLM identity layer inserted (identity at initialisation), one prompt,
``--tokens`` new tokens forced (no stop id can end the row), fastest of ``--repeats``
process-CPU timings after one warm-up, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    import ctrlalign
    from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_ids
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.identity_layer import insert_identity_layer
    from ctrlalign.model.loading import load_model

    lm, tokenizer = load_model("smollm2")
    insert_identity_layer(lm)
    model = ControlledLM(lm)
    config = GenerationConfig(max_new_tokens=args.tokens, stop_ids=[-1])
    out = {"package": ctrlalign.__file__, "tokens": args.tokens, "tok_per_cpu_s": {}}
    for alpha in args.alphas:
        rows = [alpha_row("How do I boil an egg quickly?", alpha)]
        generate_ids(model, tokenizer, rows, config)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.process_time()
            generate_ids(model, tokenizer, rows, config)
            best = min(best, time.process_time() - start)
        out["tok_per_cpu_s"][str(alpha)] = round(args.tokens / best, 2)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
