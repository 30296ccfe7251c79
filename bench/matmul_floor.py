"""The floor under a training step: how fast this CPU runs the model's own matrix products.

A MEET step 2 on SmolLM2 is about three quarters matrix products (``train_throughput``'s
profiles), so the fastest a step can be on this machine is set by the rate torch's ``mm``
reaches at the model's shapes, in the precision the step ran in (fp32, or bf16 under
autocast: on a CPU with AMX-BF16 the bf16 rate is several times the fp32 one). This
script times, for every linear layer of one decoder layer, the three products of a
training step (forward ``x W^T``, input gradient ``g W``, weight gradient ``g^T x``) at
a given number of tokens, and reports the rate (GFLOP/s) and the seconds one optimizer
step's products (the LM head's counted at the same rate) would need for the token counts
``train_throughput`` recorded:

    floor = (6 * body_params * tokens + 6 * head_params * response_tokens) / rate

(attention's score products and the elementwise work come on top, so a real step cannot
reach it). Each step is held against the rate of the dtype its results file records
(``setup.dtype``; files without one ran fp32). Fastest of ``--repeats`` interleaved
repeats, every repeat's rate kept. Results:
``bench/results/matmul_floor.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import REPO, require_file, run_header, write_json_atomic

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

RESULTS = REPO / "bench" / "results" / "matmul_floor.json"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--tokens", type=int, default=1345, help="rows of x: tokens in a step")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats, fastest kept")
    p.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], help="precisions to time"
    )
    p.add_argument(
        "--against",
        nargs="*",
        default=[
            "bench/results/train_throughput_b8.json",
            "bench/results/train_throughput_b16_k8.json",
        ],
        help="train_throughput results whose steps get a floor",
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args()


def linear_shapes(model: str) -> tuple[list[tuple[int, int]], int, int]:
    """(out, in) of each linear layer in one decoder layer, the layer count and the head's
    parameter count, read from the model's config (no weights loaded)."""
    from transformers import AutoConfig

    from ctrlalign.model.loading import BUILTIN_SPECS, smollm2_dir

    cfg = AutoConfig.from_pretrained(smollm2_dir() if model in BUILTIN_SPECS else model)
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]
    return shapes, cfg.num_hidden_layers, cfg.vocab_size * h


def time_products(
    shapes: list[tuple[int, int]], tokens: int, dtype: torch.dtype
) -> tuple[float, float]:
    """Seconds and FLOPs of one forward + backward's products through ``shapes``."""
    gen = torch.Generator().manual_seed(0)
    work = []
    for out_f, in_f in shapes:
        x = torch.randn(tokens, in_f, generator=gen).to(dtype)
        w = torch.randn(out_f, in_f, generator=gen).to(dtype)
        g = torch.randn(tokens, out_f, generator=gen).to(dtype)
        work.append((x, w, g))
    start = time.perf_counter()
    for x, w, g in work:
        torch.mm(x, w.t())
        torch.mm(g, w)
        torch.mm(g.t(), x)
    seconds = time.perf_counter() - start
    flops = sum(6 * tokens * w.shape[0] * w.shape[1] for _, w, _ in work)
    return seconds, flops


def main() -> None:
    args = parse_args()
    started = time.time()
    shapes, layers, head_params = linear_shapes(args.model)
    body_params = layers * sum(o * i for o, i in shapes)
    rounds: dict[str, dict[int, list[float]]] = {
        d: {t: [] for t in args.threads} for d in args.dtypes
    }
    for _ in range(args.repeats):
        for dtype in args.dtypes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                time_products(shapes, args.tokens, DTYPES[dtype])  # warm allocator and kernels
                seconds, flops = time_products(shapes, args.tokens, DTYPES[dtype])
                rounds[dtype][threads].append(round(flops / seconds / 1e9, 1))
    best = {d: {t: max(r) for t, r in by.items()} for d, by in rounds.items()}
    floors = {}
    for path in args.against:
        run = json.loads(
            require_file(REPO / path, "train_throughput results", "--against").read_text()
        )
        threads = run["setup"]["torch_threads"]
        dtype = run["setup"].get("dtype", "float32")
        rate = best.get(dtype, {}).get(threads)
        if rate is None:
            sys.exit(
                f"error: {path} ran {dtype} on {threads} threads; add them to --dtypes/--threads"
            )
        for name, cfg in run["configs"].items():
            steps = cfg["timed_steps"]
            tokens = cfg["timed_tokens"] / steps
            response = cfg["timed_response_tokens"] / steps
            flop = 6 * body_params * tokens + 6 * head_params * response
            floor_s = flop / (rate * 1e9)
            floors[f"{path}:{name}"] = {
                "threads": threads,
                "dtype": dtype,
                "measured_s_per_step": round(cfg["seconds_per_step"], 2),
                "floor_s_per_step": round(floor_s, 2),
                "measured_over_floor": round(cfg["seconds_per_step"] / floor_s, 2),
                "nominal_gflop_per_step": round(flop / 1e9, 1),
            }
    out = {
        **run_header("matmul_floor", started),
        "tokens": args.tokens,
        "body_linear_params": body_params,
        "head_params": head_params,
        "gflops_per_s": best,
        "gflops_per_s_every_repeat": rounds,
        "floor": "6*body_params*tokens + 6*head_params*response_tokens at the measured rate "
        "(attention scores and elementwise work excluded)",
        "steps": floors,
    }
    write_json_atomic(args.output, out)
    print(json.dumps(best))
    for name, f in floors.items():
        print(name, f)


if __name__ == "__main__":
    main()
