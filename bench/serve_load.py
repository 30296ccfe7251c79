"""``ctrlalign serve`` under load: continuous batching against static batching and one
request at a time, with 1, 8, 32 and 64 concurrent ``AsyncOpenAI`` clients; with ``--engine
vllm``, ctrlalign on vLLM against plain vLLM and the builtin engine.

    nice -n 10 .venv/bin/python bench/serve_load.py [--clients 1,8,32,64 --max-tokens 16]
    .venv-vllm/bin/python bench/serve_load.py --engine vllm      (make serve-env first)

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

``--engine vllm`` serves one run (the default model, a MEET LoRA control of 8 preferences,
rank 4) three ways: ``vllm`` (``ctrlalign serve --engine vllm``), ``vllm_plain`` (the command
``ctrlalign export`` prints, on the same export: plain vLLM, adapters named as models) and
``builtin``. Workloads: ``plain`` (two preferences alternating; all three servers),
``mixed`` (preferences, a blend, alpha 0.5 and 1.5 against another preference; the two
ctrlalign engines) over every client count; at 32 clients ``one_pref`` (all p0),
``eight_prefs`` (p0..p7 cycled), ``dial_half`` and ``dial_one`` (p0 against p1 at alpha 0.5
and 1). Results: ``bench/results/serve_load_vllm.json`` and ``.png``.
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

VLLM_PREFS = [f"p{i}" for i in range(8)]
#: the model name ``ctrlalign export`` gives the export (its folder's name: RUN/vllm)
PLAIN_NAME = "vllm"
#: workload -> the dials cycled over its requests; a dict preference is a blend
WORKLOADS = {
    "plain": [("p0", None, None), ("p1", None, None)],
    "mixed": [
        ("p0", None, None),
        ("p1", None, None),
        ({"p0": 0.5, "p2": 0.5}, None, None),
        ("p0", "p1", 0.5),
        ("p0", "p1", 1.5),
    ],
    "one_pref": [("p0", None, None)],
    "eight_prefs": [(p, None, None) for p in VLLM_PREFS],
    "dial_half": [("p0", "p1", 0.5)],
    "dial_one": [("p0", "p1", 1.0)],
}
#: workload -> (servers, client counts: None for every --clients level)
VLLM_PLAN = {
    "plain": (("vllm", "vllm_plain", "builtin"), None),
    "mixed": (("vllm", "builtin"), None),
    "one_pref": (("vllm", "vllm_plain"), [32]),
    "eight_prefs": (("vllm", "vllm_plain"), [32]),
    "dial_half": (("vllm", "builtin"), [32]),
    "dial_one": (("vllm",), [32]),
}
VLLM_TARGETS = {
    "plain_over_vllm_plain_min": 0.9,
    "dial_half_cost_over_plain": 2.0,
    "dial_one_cost_over_plain": 1.05,
    "eight_prefs_cost_over_one": 1.3,
    "errors_at_64": 0,
}


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
    p.add_argument("--output", type=Path, default=None, help="results JSON (default by engine)")
    p.add_argument(
        "--engine",
        choices=["builtin", "vllm"],
        default="builtin",
        help="builtin: its schedulers against each other; vllm: ctrlalign on vLLM against plain "
        "vLLM and the builtin engine (run with the serving environment's python)",
    )
    p.add_argument(
        "--memory",
        type=float,
        default=0.1,
        help="vllm: --gpu-memory-utilization of each vLLM server (on a CPU: of the RAM)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="vllm: precision of every server (auto: bf16 on a CPU with bf16 units, as "
        "ctrlalign serve picks)",
    )
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--serve", choices=[*SCHEDULERS, "vllm", "builtin"], help=argparse.SUPPRESS)
    args = p.parse_args()
    default = RESULTS if args.engine == "builtin" else RESULTS.with_name("serve_load_vllm.json")
    args.output = args.output or default
    return args


def serve(args: argparse.Namespace) -> None:
    """The worker: one scheduler's server; prints its port, then serves until killed."""
    import torch

    from ctrlalign.inference.serving.app import build_app
    from ctrlalign.inference.serving.server import bind, uvicorn_server
    from ctrlalign.inference.serving.service import Service
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import Run, load_run

    torch.set_num_threads(args.threads)
    if args.run_dir is not None:  # --engine vllm: the saved run, on vLLM or the builtin engine
        run = load_run(args.run_dir, device="cpu", dtype=args.dtype)
        options = {"max_batch_size": 64, "batch_wait_s": 0.02, "max_queue": 1024}
        if args.serve == "vllm":
            vllm_args = {"gpu_memory_utilization": args.memory, "max_num_seqs": 64}
            options |= {"export_dir": args.run_dir / "vllm", "vllm_args": vllm_args}
        service = Service(run, "bench", args.max_tokens, engine=args.serve, **options)
    else:
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
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn_server(build_app(service), drain_timeout_s=5).run(sockets=[sock])


def bodies(
    args: argparse.Namespace, count: int, records: list, dials=DIALS, plain_model: str = ""
) -> list[dict]:
    """``count`` greedy chat bodies cycling over ``dials``; ``plain_model``: the exported
    name, the preference named as the model (``NAME:p0``), the only way plain vLLM takes one."""
    out = []
    for i in range(count):
        preference, against, alpha = dials[i % len(dials)]
        body = {
            "model": "bench",
            "messages": records[i % len(records)].chat,
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        if plain_model:
            body["model"] = f"{plain_model}:{preference}"
        else:
            extra = {"preference": preference}
            if against is not None:
                extra |= {"against": against, "alpha": alpha}
            body["extra_body"] = extra
        out.append(body)
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


def server_port(proc: subprocess.Popen, name: str) -> int:
    """The port a ``--serve`` worker prints (``PORT N``) once it is up; other lines (vLLM
    logs to stdout) pass through."""
    import threading

    for line in proc.stdout:
        if line.startswith("PORT "):
            # keep reading, so a full pipe never blocks the server's logging
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return int(line.split()[1])
        print(line, end="")
    sys.exit(f"the {name} server exited before it served")


def start_servers(args: argparse.Namespace) -> dict[str, tuple[subprocess.Popen, str]]:
    servers = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name in SCHEDULERS:
        cmd = [sys.executable, __file__, "--serve", name, "--model", args.model]
        cmd += ["--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        servers[name] = (proc, f"http://127.0.0.1:{server_port(proc, name)}")
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


def hh_records(args: argparse.Namespace) -> list:
    from ctrlalign.data import load_preference_data

    return [
        r
        for r in load_preference_data(f"hh-rlhf:{args.data}").records
        if sum(len(m["content"]) for m in r.chat) <= args.max_prompt_chars
    ]


def save_vllm_run(args: argparse.Namespace, folder: Path) -> Path:
    """The served run: the default model with 8 LoRA preferences (B drawn, not zero, so
    each adapter changes the answer), saved so every server loads the same weights."""
    import torch

    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.rundir import save_run

    torch.manual_seed(0)
    lm, tokenizer = load_model(args.model)
    control = build_control("lora", VLLM_PREFS, lora_rank=4)
    lm = control.attach(lm, tokenizer)
    with torch.no_grad():
        for name, param in lm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    info = {"method": "meet-lora", "control": "lora", "preferences": VLLM_PREFS, "chosen": "p0"}
    info |= {"model": args.model, "lora_rank": 4}
    return save_run(folder, ControlledLM(lm, control), tokenizer, info, {}, save_lm=False)


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the {what} server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"the {what} server did not answer in {timeout:.0f} s")


def start_vllm_servers(args: argparse.Namespace, run_dir: Path) -> dict:
    """ctrlalign on vLLM first (it exports the run), then plain vLLM on that export, then
    the builtin engine."""
    import json

    from ctrlalign.inference.export import command_parts

    servers = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name in ("vllm", "builtin"):
        cmd = [sys.executable, __file__, "--serve", name, "--run-dir", str(run_dir)]
        cmd += ["--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
        cmd += ["--memory", str(args.memory), "--dtype", args.dtype]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        servers[name] = (proc, f"http://127.0.0.1:{server_port(proc, name)}")
        wait_ready(servers[name][1], proc, name)
    manifest = json.loads((run_dir / "vllm" / "export.json").read_text())
    port = 18700 + os.getpid() % 200
    extra_env, command = command_parts(manifest["vllm"])
    command += ["--port", str(port), "--max-num-seqs", "64"]
    command += ["--gpu-memory-utilization", str(args.memory), "--dtype", args.dtype]
    proc = subprocess.Popen(
        [sys.executable, *command[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, **extra_env},
    )
    servers["vllm_plain"] = (proc, f"http://127.0.0.1:{port}")
    wait_ready(servers["vllm_plain"][1], proc, "vllm_plain")
    return servers


def vllm_checks(results: dict) -> dict:
    """The issue's ratios, each from one run: tokens/s of ctrlalign on vLLM over plain vLLM
    on plain-preference requests per level; the cost (inverse throughput) of a workload over
    plain requests, at 32 clients."""
    vllm, plain = results["vllm"], results["vllm_plain"]
    checks = {
        "plain_over_vllm_plain": {
            c: round(vllm["plain"][c]["tokens_per_s"] / plain["plain"][c]["tokens_per_s"], 3)
            for c in vllm["plain"]
            if c in plain["plain"]
        }
    }

    def cost(workload: str, over: str) -> float | None:
        a, b = vllm.get(workload, {}).get("32"), vllm.get(over, {}).get("32")
        return round(b["tokens_per_s"] / a["tokens_per_s"], 3) if a and b else None

    checks["dial_half_cost_over_plain"] = cost("dial_half", "plain")
    checks["dial_one_cost_over_plain"] = cost("dial_one", "plain")
    checks["eight_prefs_cost_over_one"] = cost("eight_prefs", "one_pref")
    checks["errors_at_64"] = {
        f"{server}/{work}": levels["64"]["errors"]
        for server, workloads in results.items()
        for work, levels in workloads.items()
        if "64" in levels
    }
    return checks


def vllm_main(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from ctrlalign.model.device import resolve_dtype

    started, load_before = time.time(), os.getloadavg()[0]
    args.dtype = str(resolve_dtype(args.dtype, torch.device("cpu"))).removeprefix("torch.")
    counts = [int(c) for c in args.clients.split(",")]
    records = hh_records(args)
    results: dict[str, dict[str, dict]] = {s: {} for s in ("vllm", "vllm_plain", "builtin")}
    with tempfile.TemporaryDirectory(prefix="serve-load-vllm.") as tmp:
        run_dir = save_vllm_run(args, Path(tmp) / "run")
        servers = start_vllm_servers(args, run_dir)
        try:
            for name, (_, url) in servers.items():  # warm-up: first calls are not measured
                asyncio.run(
                    level(
                        url,
                        1,
                        bodies(
                            args, 2, records, plain_model=PLAIN_NAME if name == "vllm_plain" else ""
                        ),
                    )
                )
            for workload, (names, levels) in VLLM_PLAN.items():
                for clients in levels or counts:
                    count = max(clients * args.requests_per_client, args.min_requests)
                    for name in names:
                        work = bodies(
                            args,
                            count,
                            records,
                            WORKLOADS[workload],
                            PLAIN_NAME if name == "vllm_plain" else "",
                        )
                        got, seconds = asyncio.run(level(servers[name][1], clients, work))
                        row = summary(got, seconds)
                        results[name].setdefault(workload, {})[str(clients)] = row
                        print(f"[bench] {workload}, {clients} clients, {name}: {row}", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
            for proc, _ in servers.values():
                proc.wait(timeout=120)
    checks = vllm_checks(results)
    out = {
        **run_header("serve_load", started),
        "load_average_1min_before": round(load_before, 2),
        "setup": {
            "model": args.model,
            "control": "lora (rank 4, B ~ N(0, 0.01)), preferences p0..p7",
            "workloads": {k: [list(map(str, d)) for d in v] for k, v in WORKLOADS.items()},
            "plan": {k: {"servers": v[0], "clients": v[1] or counts} for k, v in VLLM_PLAN.items()},
            "servers": {
                "vllm": "ctrlalign serve --engine vllm (AsyncLLM in process; dial rows that mix "
                "two streams on the builtin engine beside it)",
                "vllm_plain": "the command ctrlalign export prints, on the same export",
                "builtin": "ctrlalign serve --engine builtin, continuous batching",
            },
            "max_tokens": args.max_tokens,
            "max_prompt_chars": args.max_prompt_chars,
            "vllm_memory_fraction": args.memory,
            "torch_threads_of_ctrlalign_servers": args.threads,
            "precision": args.dtype,
            "measure": "wall seconds from the first request sent to the last answer; servers "
            "interleaved per (workload, clients); one run each",
        },
        "results": results,
        "checks": checks,
        "targets": VLLM_TARGETS,
    }
    write_json_atomic(args.output, out)
    plot_vllm(out, args.output.with_suffix(".png"))
    print(f"[bench] checks {checks} (targets {VLLM_TARGETS})")
    print(f"[bench] wrote {args.output} and {args.output.with_suffix('.png')}")


def plot_vllm(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, workload in zip(axes, ("plain", "mixed"), strict=True):
        for name, workloads in out["results"].items():
            levels = workloads.get(workload)
            if levels:
                xs = [int(c) for c in levels]
                ax.plot(xs, [levels[c]["tokens_per_s"] for c in levels], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(f"{workload} requests: generated tokens/s")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"serving engines, {out['setup']['model']}, max_tokens {out['setup']['max_tokens']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args)
        return
    require_file(args.data, "HH-RLHF helpful-base test data")
    if args.engine == "vllm":
        vllm_main(args)
        return
    started, load_before = time.time(), os.getloadavg()[0]
    counts = [int(c) for c in args.clients.split(",")]
    records = hh_records(args)
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
