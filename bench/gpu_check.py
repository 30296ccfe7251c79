"""The GPU check: one command, no model hub, at most 8 minutes on one H200.

    python bench/gpu_check.py --tokenizer DIR [--steps 6] [--output bench/results/gpu_check.json]
    python bench/gpu_check.py --tokenizer DIR --smoke     # the same path on a CPU, tiny only

Models are random-initialised from configs over a carried tokenizer folder (``DIR`` holds
``tokenizer.json`` etc., e.g. ``~/.cache/ctrlalign/smollm2-135m-instruct`` without its
weights): a 2-layer Llama for correctness and a Llama-shaped ~1.3B config (GPT-Neo 1.3B's
size, the paper's model) for speed. In order, each a check with pass/fail in the results:

1. the ``gpu``-marked tests of the suite, on CUDA;
2. training in bf16 for ``--steps`` optimiser steps: meet-lora (both steps), meet-prompt,
   dpo and clm on the 1.3B model, with tokens/s, model FLOP utilisation (6 x parameters x
   tokens/s over the GPU's dense bf16 peak; trainable-only backward makes step 1 cheaper, so
   it is a lower bound there) and peak GPU memory; also under DeepSpeed ZeRO-2 when
   ``deepspeed`` is installed (``configs/accelerate/zero2.yaml``);
3. generation with sampling (temperature 1) on the meet-lora run and alpha 0.5 on the clm
   run, both on the GPU;
4. 32 concurrent mixed requests (preferences and alphas per row) through one batched
   generation, with tokens/s.

Results go to ``--output`` as JSON; exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "gpu_check.json"
#: dense bf16 peak FLOP/s by device name fragment (NVIDIA data sheets, without sparsity)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wise",
    "owls",
    "read",
    "old",
    "maps",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer folder")
    p.add_argument("--steps", type=int, default=6, help="optimiser steps per training check")
    p.add_argument("--layers", type=int, default=24, help="layers of the large model")
    p.add_argument("--smoke", action="store_true", help="CPU: tiny model only, 1 step")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only the checks whose name contains this (repeatable); the results are "
        "merged into --output, so a rerun after a fix keeps the other checks' figures",
    )
    return p.parse_args()


def write_data(path: Path, n: int = 64) -> str:
    """Pairwise rows of ~200 tokens: long enough to load a GPU, no download."""
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(60)]
        rows.append(
            {
                "prompt": f"Question {i}: " + " ".join(words[:40]) + "?",
                "chosen": "A careful answer: " + " ".join(words[::-1]) + ".",
                "rejected": "No. " + " ".join(words[:12]) + ".",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"pairwise:{path}"


def build_model(folder: Path, tokenizer_dir: Path, layers: int, width: int) -> Path:
    """A random Llama of ``layers`` x ``width`` over the carried tokenizer, saved to disk."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=int(width * 2.6875) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=max(4, width // 128),
        num_key_value_heads=max(4, width // 128),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Checks:
    """Runs named checks, recording pass/fail, figures and the error of each; the results
    file is rewritten after every check, so a run cut short keeps what it finished."""

    def __init__(self, output: Path, header: dict, only: list[str]) -> None:
        self.output = output
        self.header = header
        self.only = only
        self.results: dict[str, dict] = {}
        if only and output.is_file():
            self.results = json.loads(output.read_text())["checks"]

    def run(self, name: str, fn, *args, **kwargs) -> dict | None:
        if self.only and not any(part in name for part in self.only):
            return None
        print(f"[gpu-check] {name} ...", flush=True)
        started = time.time()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            figures = fn(*args, **kwargs) or {}
            entry = {"passed": True, **figures}
        except Exception as err:  # a failed check is a result, not the end of the run
            entry = {"passed": False, "error": f"{type(err).__name__}: {err}"}
            traceback.print_exc()
            figures = None
        entry["seconds"] = round(time.time() - started, 1)
        if torch.cuda.is_available():
            entry["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.results[name] = entry
        print(f"[gpu-check] {name}: {json.dumps(entry)}", flush=True)
        self.write()
        return figures

    def write(self) -> None:
        result = {
            **self.header,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": round(time.time() - self.header["started"], 1),
            "checks": self.results,
        }
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(self.output)


def gpu_tests() -> dict:
    """The ``gpu``-marked tests; only their files are collected, so test files that import
    what the GPU machine lacks (the server's client, schema fuzzers) do not stop the run."""
    marked = sorted(
        str(f.relative_to(REPO))
        for f in (REPO / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in f.read_text()
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *marked],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = result.stdout.strip().splitlines()[-1:] or [""]
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    return {"pytest": tail[0], "files": marked}


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def train_check(model_dir: Path, data: str, out: Path, method: str, steps: int, **kw) -> dict:
    from ctrlalign.training import TrainConfig, train_any

    config = TrainConfig(
        data=data,
        output=str(out),
        method=method,
        model=str(model_dir),
        batch_size=8,
        micro_batch_size=8,
        max_steps=steps,
        max_length=512,
        eval_fraction=0.0,
        save_steps=10_000,
        logging_steps=1,
        soft_prompt_length=20,
        lora_rank=8,
        **kw,
    )
    started = time.time()
    train_any(config)
    seconds = time.time() - started
    metrics = json.loads((out / "metrics.json").read_text())
    runtime = sum(s.get("train_runtime", 0.0) for s in metrics["stages"].values())
    tokens = sum(
        max((e.get("num_input_tokens_seen", 0) for e in s.get("log_history", [])), default=0)
        for s in metrics["stages"].values()
    )
    params = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(model_dir).parameters())
    per_s = tokens / runtime if runtime else 0.0
    peak = peak_flops()
    figures = {
        "steps_per_stage": steps,
        "stages": list(metrics["stages"]),
        "tokens": tokens,
        "train_seconds": round(runtime, 2),
        "tokens_per_s": round(per_s, 1),
        "wall_seconds_incl_load_save": round(seconds, 1),
        "parameters": params,
    }
    if peak:
        figures["mfu"] = round(6 * params * per_s / peak, 4)
    return figures


def launch_train(
    config_file: str | None, model_dir: Path, data: str, out: Path, steps: int, stages: str
) -> None:
    """meet-lora through ``accelerate launch`` with one of the repo's configs and one
    process, or (``config_file`` None) in this Python without a launcher."""
    command = [sys.executable]
    if config_file is not None:
        command += ["-m", "accelerate.commands.launch", "--config_file"]
        command += [str(REPO / "configs" / "accelerate" / config_file), "--num_processes", "1"]
    command += ["-m", "ctrlalign.cli", "train", "--data", data, "--method", "meet-lora"]
    command += ["--model", str(model_dir), "--output", str(out), "--max-steps", str(steps)]
    command += ["--batch-size", "8", "--micro-batch-size", "8", "--eval-fraction", "0"]
    command += ["--lora-rank", "8", "--stages", stages]
    result = subprocess.run(command, capture_output=True, text=True, timeout=420)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-1500:] + result.stderr[-3000:])


def zero2_check(model_dir: Path, data: str, out: Path, steps: int) -> dict:
    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "deepspeed is not installed"}
    launch_train("zero2.yaml", model_dir, data, out, steps, stages="both")
    return {"run_yaml": (out / "run.yaml").is_file()}


def zero3_check(model_dir: Path, data: str, root: Path, steps: int) -> dict:
    """ZeRO-3 leaves each process's parameters empty outside their module's forward: the
    run directory must still hold whole tensors, close to a run without DeepSpeed. One
    step (``--stages second``): ZeRO-3 refuses two in one launch."""
    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "deepspeed is not installed"}
    from ctrlalign.model.rundir import load_run

    launch_train("zero3.yaml", model_dir, data, root / "zero3", steps, stages="second")
    plain = root / "zero3-plain"
    launch_train(None, model_dir, data, plain, steps, stages="second")
    sharded = load_run(root / "zero3").model.state_dict()
    whole = load_run(plain).model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in whole.items()}
    if {k: tuple(v.shape) for k, v in sharded.items()} != shapes:
        raise AssertionError("the ZeRO-3 run's tensors differ in names or shapes")
    worst = max((sharded[k].float() - whole[k].float()).abs().max().item() for k in whole)
    return {"tensors": len(whole), "max_abs_diff_vs_plain": worst}


def generation_check(lora_run: Path, clm_run: Path) -> dict:
    from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_ids
    from ctrlalign.model.rundir import load_run

    lora = load_run(lora_run)
    prompts = [f"Tell me about the {w}." for w in WORDS[:8]]
    sampled = GenerationConfig(max_new_tokens=32, temperature=1.0, seed=1, batch_size=8)
    rows = [alpha_row(p, 1.0, lora.preferences[i % 2]) for i, p in enumerate(prompts)]
    ids = generate_ids(lora.model, lora.tokenizer, rows, sampled)
    clm = load_run(clm_run)
    mixed = [alpha_row(p, 0.5) for p in prompts]
    greedy = GenerationConfig(max_new_tokens=32, batch_size=8)
    alpha_ids = generate_ids(clm.model, clm.tokenizer, mixed, greedy)
    device = str(next(lora.model.parameters()).device)
    return {
        "device": device,
        "sampled_tokens": sum(map(len, ids)),
        "alpha_0.5_tokens": sum(map(len, alpha_ids)),
    }


def concurrent_check(lora_run: Path) -> dict:
    """32 requests with their own preference and alpha, decoded together as the server does."""
    from ctrlalign.inference.generation import GenerationConfig, alpha_row, generate_ids
    from ctrlalign.model.rundir import load_run

    run = load_run(lora_run)
    good, bad = run.preferences[:2]
    rows = []
    for i in range(32):
        prompt = f"Request {i}: describe the {WORDS[i % len(WORDS)]}."
        if i % 3 == 2:
            rows.append(alpha_row(prompt, 0.25 * (i % 5), good, bad))
        else:
            rows.append(alpha_row(prompt, 1.0, good if i % 2 else bad))
    config = GenerationConfig(max_new_tokens=64, batch_size=32, stop_ids=[-1])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.time()
    ids = generate_ids(run.model, run.tokenizer, rows, config)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.time() - started
    tokens = sum(map(len, ids))
    return {"requests": 32, "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    args = parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run with --smoke to try the path on a CPU")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    header = {
        "benchmark": "gpu_check",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.time(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "large_model": None if args.smoke else f"Llama {args.layers} layers x 2048",
    }
    checks = Checks(args.output, header, args.only)
    with tempfile.TemporaryDirectory(prefix="gpu-check.") as tmp:
        root = Path(tmp)
        data = write_data(root / "pairs.jsonl")
        tiny = build_model(root / "tiny", args.tokenizer, layers=2, width=64)
        big = tiny if args.smoke else build_model(root / "big", args.tokenizer, args.layers, 2048)
        steps = 1 if args.smoke else args.steps
        if not args.smoke:
            checks.run("gpu-marked tests", gpu_tests)
        for name, method, extra in [
            ("train meet-lora (both steps)", "meet-lora", {"stages": "both"}),
            ("train meet-prompt (both steps)", "meet-prompt", {"stages": "both"}),
            ("train dpo", "dpo", {}),
            ("train clm", "clm", {}),
        ]:
            checks.run(name, train_check, big, data, root / method, method, steps, **extra)
        checks.run("generate: sampled and alpha 0.5", generation_check, root / "meet-lora",
                   root / "clm")  # fmt: skip
        checks.run("32 concurrent mixed requests", concurrent_check, root / "meet-lora")
        checks.run("train meet-lora under DeepSpeed ZeRO-2", zero2_check, big, data,
                   root / "zero2", steps)  # fmt: skip
        checks.run("ZeRO-3 run directory holds whole tensors", zero3_check, tiny, data, root,
                   2)  # fmt: skip
    failed = [name for name, entry in checks.results.items() if not entry["passed"]]
    print(f"[gpu-check] wrote {args.output}; failed: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
