"""Cost of CLM alpha generation relative to plain generation of the base model.

    .venv/bin/python bench/alpha_generation.py [--prompts 4 --new-tokens 32 --repeats 3]

The base model (default ``smollm2``) answers the first HH-RLHF prompts greedily, as a plain
run and as a CLM run (identity layer inserted, moved off the identity so the streams
differ) at alpha 0 (layer skipped), 1 (layer run) and 0.5 (both streams, twice the rows in
one batched forward with one KV cache). Every configuration generates exactly
``--new-tokens`` tokens per prompt (end-of-turn does not stop it), so the work compared is
the same. Configurations are interleaved within each repeat so machine load drifts affect
all of them alike; the figure kept per configuration is its fastest repeat. Both wall and
process CPU seconds are recorded; the ratios use CPU seconds, which on a shared machine
(other jobs taking cores) measure the work done rather than the time spent waiting for a
core: run with ``--threads 1`` there, since idle OpenMP threads spinning also count as CPU.
Measured at batch sizes 1 and ``--prompts``. Results: ``bench/results/alpha_generation.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from common import HH_TEST, REPO, require_file, run_header, write_json_atomic

RESULTS = REPO / "bench" / "results" / "alpha_generation.json"
TARGETS = {"0.5": 2.1, "0": 1.05, "1": 1.05}  # seconds relative to plain, at most
NEVER = -1  # a stop id no token has: every row generates exactly max_new_tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--prompts", type=int, default=4, help="prompts (and the larger batch size)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", type=Path, default=HH_TEST)
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    require_file(args.data, "HH-RLHF helpful-base test data")
    torch.set_num_threads(args.threads)
    from ctrlalign.data import load_preference_data
    from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_rows, plain_row
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.identity_layer import insert_identity_layer
    from ctrlalign.model.loading import load_model

    base, tokenizer = load_model(args.model)
    clm_lm = copy.deepcopy(base)
    layer = insert_identity_layer(clm_lm)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    plain, clm = ControlledLM(base), ControlledLM(clm_lm)
    records = load_preference_data(f"hh-rlhf:{args.data}").records[: args.prompts]
    prompts = [r.chat for r in records]
    configs = {
        "plain": (plain, lambda p: plain_row(p)),
        "0": (clm, lambda p: alpha_row(p, 0.0)),
        "1": (clm, lambda p: alpha_row(p, 1.0)),
        "0.5": (clm, lambda p: alpha_row(p, 0.5)),
    }
    started = time.time()
    load_before = os.getloadavg()[0]
    results: dict = {}
    for batch in sorted({1, args.prompts}):
        gen = GenerationConfig(max_new_tokens=args.new_tokens, batch_size=batch, stop_ids=[NEVER])
        times: dict[str, list[float]] = {name: [] for name in configs}
        cpu: dict[str, list[float]] = {name: [] for name in configs}
        generate_rows(plain, tokenizer, [plain_row(prompts[0])], gen)  # warm-up
        for repeat in range(args.repeats):
            for name, (model, make_row) in configs.items():
                t, c = time.perf_counter(), time.process_time()
                generate_rows(model, tokenizer, [make_row(p) for p in prompts], gen)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
            done = ", ".join(f"{n} {ts[-1]:.1f}s ({cpu[n][-1]:.1f} cpu)" for n, ts in times.items())
            print(f"[bench] batch {batch}, repeat {repeat + 1}: {done}", flush=True)
        best = {name: min(ts) for name, ts in cpu.items()}
        tokens = args.prompts * args.new_tokens
        entry = {
            name: {
                "wall_seconds": [round(t, 3) for t in ts],
                "cpu_seconds": [round(t, 3) for t in cpu[name]],
                "best_cpu_seconds": round(best[name], 3),
                "tokens_per_cpu_s": round(tokens / best[name], 2),
                "best_wall_relative_to_plain": round(min(ts) / min(times["plain"]), 3),
            }
            for name, ts in times.items()
        }
        for name, target in TARGETS.items():
            ratio = best[name] / best["plain"]
            entry[name].update(
                relative_to_plain=round(ratio, 3), target=f"<= {target}", met=ratio <= target
            )
        results[f"batch_{batch}"] = entry
        print(f"[bench] batch {batch}: " + ", ".join(
            f"alpha {n}: {entry[n]['relative_to_plain']:.3f}x" for n in TARGETS
        ), flush=True)  # fmt: skip
    out = {
        **run_header("alpha_generation", started),
        "load_average_1min_before": round(load_before, 2),
        "setup": {
            "model": args.model,
            "layers": f"{base.config.num_hidden_layers} (+1 CLM layer in the CLM run)",
            "prompts": args.prompts,
            "new_tokens_per_prompt": args.new_tokens,
            "decoding": "greedy, fixed length (no early stop)",
            "repeats": args.repeats,
            "torch_threads": args.threads,
            "dtype": "float32",
            "measure": "process CPU seconds of generate_rows for all prompts (wall seconds "
            "beside them); fastest repeat; configurations interleaved within each repeat",
        },
        "results": results,
    }
    write_json_atomic(args.output, out)
    print(f"[bench] wrote {args.output}")


if __name__ == "__main__":
    main()
