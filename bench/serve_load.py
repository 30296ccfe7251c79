"""``ctrlalign serve`` under load: continuous batching against static batching and one
request at a time, with 1, 8, 32 and 64 concurrent ``AsyncOpenAI`` clients.

    nice -n 10 .venv/bin/python bench/serve_load.py [--clients 1,8,32,64 --max-tokens 16]

Each scheduler runs in its own server process (the bench's ``--serve`` worker: the default
model with a MEET LoRA control of two preferences, served by ``serving.build_app`` on
127.0.0.1): ``continuous`` (rows join and leave the running batch at every step),
``static`` (a batch starts when the previous one has finished: the micro-batching the
server had before) and ``one_at_a_time`` (batches of one; measured up to ``--one-at-a-time-
max`` clients, 32: one client already saturates it). Each server runs torch on one thread:
on a shared 2-core machine two OpenMP threads spend their time waiting for each other.
Clients stream chat completions (``stream_options.include_usage``) on short HH-RLHF
prompts, greedy, ``max_tokens`` each, preferences and the dial mixed per request: plain
``good``, plain ``bad``, and ``good`` against ``bad`` at alpha 0.5 and 1.5 (two streams per
row). Per client count, each scheduler gets the same requests, schedulers interleaved;
every client sends ``--requests-per-client`` requests one after another (at least ``--min-
requests`` in all).

Measured per (scheduler, clients): generated tokens per second of wall time (first request
sent to last answer), latency (request to its last chunk) and time to first token (request
to its first content chunk) at p50 and p99, and errors (any exception the client raises:
connection refused, 429, 5xx). Results: ``bench/results/serve_load.json`` and
``serve_load.png`` (throughput and p99 latency against clients).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from common import HH_TEST, REPO, require_file, run_header, write_json_atomic

RESULTS = REPO / "bench" / "results" / "serve_load.json"
SCHEDULERS = {
    "continuous": {"scheduler": "continuous", "batch": 64},
    "static": {"scheduler": "static", "batch": 64},
    "one_at_a_time": {"scheduler": "continuous", "batch": 1},
}
#: (preference, against, alpha) cycled over the requests
DIALS = [("good", None, None), ("bad", None, None), ("good", "bad", 0.5), ("good", "bad", 1.5)]
TARGETS = {"speedup_at_32": 2.5, "ttft_p99_at_32_over_lone_p50": 3.0, "errors_at_64": 0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--clients", default="1,8,32,64", help="comma-separated client counts")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    p.add_argument("--requests-per-client", type=int, default=1, help="sent one after another")
    p.add_argument("--min-requests", type=int, default=4, help="at least this many per level")
    p.add_argument(
        "--max-prompt-chars", type=int, default=240, help="use HH-RLHF prompts this short"
    )
    p.add_argument("--model", default="smollm2", help="model spec of the served run")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each server (1: on a shared machine, idle OpenMP threads spin)",
    )
    p.add_argument(
        "--one-at-a-time-max",
        type=int,
        default=32,
        help="measure one_at_a_time up to this many clients (it is saturated by one client: "
        "more only add queueing time)",
    )
    p.add_argument("--data", type=Path, default=HH_TEST, help="HH-RLHF test file")
    p.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    p.add_argument("--serve", choices=list(SCHEDULERS), help=argparse.SUPPRESS)
    return p.parse_args()


def serve(args: argparse.Namespace) -> None:
    """The worker: one scheduler's server; prints its port, then serves until killed."""
    import torch

    from ctrlalign.inference.serving.app import build_app
    from ctrlalign.inference.serving.server import bind, uvicorn_server
    from ctrlalign.inference.serving.service import Service
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import Run

    torch.set_num_threads(args.threads)
    lm, tokenizer = load_model(args.model)
    control = build_control("lora", ["good", "bad"], lora_rank=4)
    lm = control.attach(lm, tokenizer)
    info = {"method": "meet-lora", "control": "lora", "preferences": ["good", "bad"]}
    run = Run(ControlledLM(lm, control), tokenizer, {**info, "chosen": "good"})
    mode = SCHEDULERS[args.serve]
    service = Service(
        run,
        "bench",
        max_new_tokens=args.max_tokens,
        max_batch_size=mode["batch"],
        batch_wait_s=0.02,
        max_queue=1024,
        scheduler=mode["scheduler"],
    )
    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    uvicorn_server(build_app(service), drain_timeout_s=5).run(sockets=[sock])


def bodies(args: argparse.Namespace, count: int, records: list) -> list[dict]:
    out = []
    for i in range(count):
        preference, against, alpha = DIALS[i % len(DIALS)]
        extra = {"preference": preference}
        if against is not None:
            extra |= {"against": against, "alpha": alpha}
        out.append(
            {
                "model": "bench",
                "messages": records[i % len(records)].chat,
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "extra_body": extra,
            }
        )
    return out


async def one(api, body: dict) -> dict:
    started = time.perf_counter()
    ttft, text, tokens = None, [], 0
    try:
        stream = await api.chat.completions.create(
            **body, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                ttft = ttft if ttft is not None else time.perf_counter() - started
                text.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as err:  # counted: the targets say zero
        return {"error": f"{type(err).__name__}: {err}"[:200]}
    latency = time.perf_counter() - started
    return {"latency": latency, "ttft": ttft or latency, "tokens": tokens, "text": "".join(text)}


async def level(url: str, clients: int, work: list[dict]) -> tuple[list[dict], float]:
    """``clients`` concurrent clients share ``work`` (each takes every clients-th body)."""
    from openai import AsyncOpenAI

    api = AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=1200)
    results: list[dict | None] = [None] * len(work)

    async def client(k: int) -> None:
        for i in range(k, len(work), clients):
            results[i] = await one(api, work[i])

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    seconds = time.perf_counter() - started
    await api.close()
    return results, seconds


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def summary(results: list[dict], seconds: float) -> dict:
    ok = [r for r in results if "error" not in r]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_examples": sorted({r["error"] for r in results if "error" in r})[:3],
        "seconds": round(seconds, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "latency_p50_s": pct([r["latency"] for r in ok], 0.5),
        "latency_p99_s": pct([r["latency"] for r in ok], 0.99),
        "ttft_p50_s": pct([r["ttft"] for r in ok], 0.5),
        "ttft_p99_s": pct([r["ttft"] for r in ok], 0.99),
    }


def start_servers(args: argparse.Namespace) -> dict[str, tuple[subprocess.Popen, str]]:
    servers = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name in SCHEDULERS:
        cmd = [sys.executable, __file__, "--serve", name, "--model", args.model]
        cmd += ["--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            sys.exit(f"the {name} server did not start")
        servers[name] = (proc, f"http://127.0.0.1:{port}")
    return servers


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, levels in out["results"].items():
        xs = [int(c) for c in levels]
        left.plot(xs, [levels[c]["tokens_per_s"] for c in levels], marker="o", label=name)
        right.plot(xs, [levels[c]["latency_p99_s"] for c in levels], marker="o", label=name)
    for ax, title in ((left, "throughput (generated tokens/s)"), (right, "p99 latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"ctrlalign serve, {out['setup']['model']}, max_tokens {out['setup']['max_tokens']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args)
        return
    require_file(args.data, "HH-RLHF helpful-base test data")
    from ctrlalign.data import load_preference_data

    started, load_before = time.time(), os.getloadavg()[0]
    counts = [int(c) for c in args.clients.split(",")]
    records = [
        r
        for r in load_preference_data(f"hh-rlhf:{args.data}").records
        if sum(len(m["content"]) for m in r.chat) <= args.max_prompt_chars
    ]
    servers = start_servers(args)
    results: dict[str, dict[str, dict]] = {name: {} for name in SCHEDULERS}
    answers: dict[str, dict[int, list[str]]] = {name: {} for name in SCHEDULERS}
    try:
        for _, url in servers.values():  # warm-up: first-call costs are not measured
            asyncio.run(level(url, 1, bodies(args, 2, records)))
        for clients in counts:
            work = bodies(args, max(clients * args.requests_per_client, args.min_requests), records)
            for name, (_, url) in servers.items():
                if name == "one_at_a_time" and clients > args.one_at_a_time_max:
                    continue
                got, seconds = asyncio.run(level(url, clients, work))
                results[name][str(clients)] = summary(got, seconds)
                answers[name][clients] = [r.get("text") for r in got]
                print(
                    f"[bench] {clients} clients, {name}: {results[name][str(clients)]}", flush=True
                )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=60)
    same = total = 0
    for clients in counts:
        measured = [answers[name][clients] for name in SCHEDULERS if clients in answers[name]]
        for texts in zip(*measured, strict=True):
            same += len(set(texts)) == 1
            total += 1
    cont, one_at_a_time = results["continuous"], results["one_at_a_time"]
    lone = cont[str(counts[0])] if counts[0] == 1 else None
    checks = {}
    if "32" in cont:
        speedup = cont["32"]["tokens_per_s"] / one_at_a_time["32"]["tokens_per_s"]
        checks["speedup_at_32"] = round(speedup, 3)
        if lone is not None:
            checks["ttft_p99_at_32_over_lone_p50"] = round(
                cont["32"]["ttft_p99_s"] / lone["ttft_p50_s"], 3
            )
            checks["ttft_p99_at_32_over_lone_latency_p50"] = round(
                cont["32"]["ttft_p99_s"] / lone["latency_p50_s"], 3
            )
    if "64" in cont:
        checks["errors_at_64"] = cont["64"]["errors"]
    out = {
        **run_header("serve_load", started),
        "load_average_1min_before": round(load_before, 2),
        "setup": {
            "model": args.model,
            "control": "lora (rank 4), preferences good and bad",
            "dials": [list(d) for d in DIALS],
            "clients": counts,
            "requests_per_client": args.requests_per_client,
            "min_requests": args.min_requests,
            "one_at_a_time_max_clients": args.one_at_a_time_max,
            "max_tokens": args.max_tokens,
            "max_prompt_chars": args.max_prompt_chars,
            "decoding": "greedy, streamed with include_usage",
            "torch_threads_per_server": args.threads,
            "schedulers": SCHEDULERS,
            "measure": "wall seconds from the first request sent to the last answer; "
            "schedulers interleaved per client count; one run each",
        },
        "results": results,
        "checks": checks,
        "targets": TARGETS,
        "answers_identical_across_schedulers": f"{same} of {total}",
    }
    write_json_atomic(args.output, out)
    plot(out, args.output.with_suffix(".png"))
    print(f"[bench] checks {checks} (targets {TARGETS}); answers identical: {same}/{total}")
    print(f"[bench] wrote {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
