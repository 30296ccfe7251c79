"""Throughput of ``ctrlalign serve`` under concurrent clients: batched against one at a time.

    .venv/bin/python bench/serve_throughput.py [--clients 8 --max-tokens 32 --repeats 2]

The default model with a MEET control of two preferences (``--control lora``: one PEFT
adapter each, so a batch mixes adapters; or ``soft-prompt``) is served over real HTTP on
127.0.0.1. ``--clients`` threads each send one chat completion at the same moment, on the
first HH-RLHF prompts, preferences alternating, greedy, ``max_tokens`` each. The server runs
once with ``--max-batch-size 1`` (requests answered one after another, as a server without
batching would) and once with ``--max-batch-size`` = clients; greedy decoding gives both the
same answers, so the work is the same. Modes are interleaved within each repeat; the
fastest repeat is kept. Results: ``bench/results/serve_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import HH_TEST, REPO, require_file, run_header, write_json_atomic

RESULTS = REPO / "bench" / "results" / "serve_throughput.json"
TARGET = 1.8  # batched over one-at-a-time throughput for 8 clients of mixed preferences


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--control", choices=["lora", "soft-prompt"], default="lora")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", type=Path, default=HH_TEST)
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args()


def post(url: str, body: dict) -> tuple[dict, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as resp:
        return json.loads(resp.read()), time.perf_counter() - started


def main() -> None:
    args = parse_args()
    require_file(args.data, "HH-RLHF helpful-base test data")
    from ctrlalign.data import load_preference_data
    from ctrlalign.inference.serving.app import build_app
    from ctrlalign.inference.serving.server import ServerThread
    from ctrlalign.inference.serving.service import Service
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import Run

    lm, tokenizer = load_model(args.model)
    control = build_control(args.control, ["good", "bad"], lora_rank=4, soft_prompt_length=20)
    lm = control.attach(lm, tokenizer)
    info = {"method": f"meet-{args.control}", "control": args.control}
    run = Run(ControlledLM(lm, control), tokenizer, {**info, "preferences": ["good", "bad"]})
    records = load_preference_data(f"hh-rlhf:{args.data}").records[: args.clients]
    bodies = [
        {
            "messages": r.chat,
            "preference": ("good", "bad")[i % 2],
            "max_tokens": args.max_tokens,
        }
        for i, r in enumerate(records)
    ]
    modes = {"one_at_a_time": 1, "batched": args.clients}
    servers = {}
    for name, size in modes.items():
        service = Service(run, name, args.max_tokens, max_batch_size=size, batch_wait_s=0.05)
        server = ServerThread(build_app(service))
        url = f"{server.url}/v1/chat/completions"
        servers[name] = (service, server, url)
    post(servers["batched"][2], bodies[0])  # warm-up

    started, load_before = time.time(), os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    answers: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        for name, (service, _, url) in servers.items():
            before = service.stats()
            t = time.perf_counter()
            with ThreadPoolExecutor(len(bodies)) as pool:
                replies = list(pool.map(lambda body, u=url: post(u, body), bodies))
            seconds = time.perf_counter() - t
            answers[name] = [r["choices"][0]["message"]["content"] for r, _ in replies]
            tokens = sum(r["usage"]["completion_tokens"] for r, _ in replies)
            latencies = [lat for _, lat in replies]
            runs[name].append(
                {
                    "seconds": round(seconds, 3),
                    "completion_tokens": tokens,
                    "tokens_per_s": round(tokens / seconds, 2),
                    "requests_per_s": round(len(bodies) / seconds, 3),
                    "latency_p50_s": round(statistics.median(latencies), 3),
                    "latency_max_s": round(max(latencies), 3),
                    "decode_steps": service.stats()["steps"] - before["steps"],
                }
            )
            print(f"[bench] repeat {repeat + 1}, {name}: {runs[name][-1]}", flush=True)
    for _, server, _ in servers.values():
        server.stop()
    if answers["batched"] != answers["one_at_a_time"]:
        sys.exit("batched answers differ from one-at-a-time answers: the comparison is void")
    best = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in runs.items()}
    speedup = best["one_at_a_time"]["seconds"] / best["batched"]["seconds"]
    out = {
        **run_header("serve_throughput", started),
        "load_average_1min_before": round(load_before, 2),
        "setup": {
            "model": args.model,
            "control": args.control,
            "clients": args.clients,
            "max_tokens": args.max_tokens,
            "decoding": "greedy; preferences alternate between the clients",
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "measure": "wall seconds from sending all requests at once to the last answer; "
            "fastest repeat per mode; modes interleaved",
        },
        "best": best,
        "all_repeats": runs,
        "speedup_batched": round(speedup, 3),
        "target": f">= {TARGET}",
        "met": speedup >= TARGET,
        "answers_identical": True,
    }
    write_json_atomic(args.output, out)
    print(f"[bench] batched / one at a time: {out['speedup_batched']}x; wrote {args.output}")


if __name__ == "__main__":
    main()
