"""Training throughput and memory of MEET's two steps, with TRL's SFTTrainer as the yardstick.

    .venv/bin/python bench/train_throughput.py [--steps 3 --warmup 1 --batch 4 --max-length 512
                                                --threads 1 --rounds 2]

Configurations, each in its own process, all on the same HH-RLHF examples, model, batch,
max length, precision (``--dtype``: fp32, or bf16 mixed precision for every trainer) and
torch threads:

- ``prompt-step2``, ``soft-prompt-step1/2``, ``lora-step1/2``: ctrlalign's own training path
  (``ControlledLM`` + ``run_stage`` / ``training_arguments``, the real ``ControlTrainer``),
  step 1 training only the control (LM frozen, lr 1e-3), step 2 LM + control (lr 2e-5).
  Prompt controls have nothing to train in step 1, so they only run step 2.
- ``soft-prompt-step2-packed``, ``lora-step2-packed``: the same with ``--packing`` (examples
  packed into rows of at most ``--max-length`` tokens, no padding between; LoRA routes each
  token through its own example's adapter); ``lora-step2-packed-ckpt`` adds
  ``--gradient-checkpointing`` (memory for compute).
- ``trl-sft``: TRL's ``SFTTrainer`` with a prompt/completion (conversational) dataset and
  ``completion_only_loss=True``, configured as its best CPU user would: ``bf16`` as
  ``--dtype`` says, ``gradient_checkpointing=False`` (TRL defaults to bf16 + checkpointing;
  on a CPU without bf16 units that is ~10x slower).
- ``trl-sft-padfree``: the same with ``padding_free=True``, TRL's fastest option here: a
  batch is one row of its examples end to end with restarting position ids, which
  transformers turns into a block-diagonal mask on SDPA (``find_packed_sequence_indices``),
  so no pad token is computed. (TRL's ``packing`` also packs whole examples across steps,
  which changes what a step holds; ``padding_free`` keeps the same examples per step.)

``--levels K`` trains on quantised-score data of K preferences instead of HH-RLHF's two:
the same examples, written as ``scores`` rows whose score is the example's index modulo K
and read through the ``scores:`` loader into K levels, so a batch mixes up to K LoRA
adapters (or soft prompts). ``--accumulation N`` splits each optimizer step of ``--batch``
examples into N micro-batches (TRL the same way). Every configuration's last round runs one
more step under ``torch.profiler`` and records its top operators (``profile``), which the
timed steps do not include.

Every configuration runs ``--rounds`` times, interleaved, and keeps its fastest quiet round:
on a shared machine other jobs only ever slow a run down, and a round during which they took
more than ``--reject-above`` of the CPUs is run again (``common.Quiet``). Each trainer reads
the batches in dataset order (``train_sampling_strategy="sequential"``), so step k sees the
same examples in every configuration. Throughput counts the real (non-pad) tokens of each
optimizer step over the timed steps (after the warm-up steps), plus the response tokens (those
carrying loss).
Memory is the peak RSS sampled during the step loop minus the RSS just before it (see
``bench/common.py``). Results go to ``bench/results/train_throughput.json``. On a machine
shared with other jobs, run it as ``nice -n -10 .venv/bin/python bench/train_throughput.py``
so that they cannot take its core; the results record the niceness in the command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    EXAMPLE_ID,
    HH_TEST,
    REPO,
    ProfileStep,
    StepMeter,
    add_quiet_arguments,
    example_id,
    id_by_object,
    id_from_column,
    instrument,
    keep_id_column,
    quiet_from,
    require_file,
    run_header,
    run_rounds,
    same_examples,
    write_json_atomic,
)

RESULTS = REPO / "bench" / "results" / "train_throughput.json"
OURS = {
    "prompt-step2": ("prompt", "second"),
    "soft-prompt-step1": ("soft-prompt", "first"),
    "soft-prompt-step2": ("soft-prompt", "second"),
    "lora-step1": ("lora", "first"),
    "lora-step2": ("lora", "second"),
    "soft-prompt-step2-packed": ("soft-prompt", "second"),
    "lora-step2-packed": ("lora", "second"),
    "lora-step2-packed-ckpt": ("lora", "second"),
}
TRL = ("trl-sft", "trl-sft-padfree")
WORKERS = (*TRL, *OURS)
CONTROLS = ("prompt", "soft-prompt", "lora")
TARGET_VS_TRL = 1.5  # ours_step2 / TRL's fastest tokens per second, at least (issue 27)
TARGET_RSS_VS_TRL = 0.8  # ours_step2 / TRL's peak RSS delta, at most (issue 27)
TARGET_STEP1_VS_STEP2 = 0.75  # step-1 seconds per token / step-2 seconds per token, at most
# room left in max_length for the longest control prefix (soft prompt, or the hand-written
# prompt) and the one extra token TRL's chat template puts after the end of turn
PREFIX_SLACK = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per config")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first (>=1)")
    p.add_argument("--batch", type=int, default=4, help="examples per optimizer step")
    p.add_argument(
        "--accumulation",
        type=int,
        default=1,
        help="micro-batches per optimizer step (divides --batch)",
    )
    p.add_argument(
        "--levels",
        type=int,
        default=0,
        help="train on quantised-score data of this many preferences (0: HH-RLHF's good/bad)",
    )
    p.add_argument("--max-length", type=int, default=512, help="longest example, in tokens")
    p.add_argument("--soft-prompt-length", type=int, default=20)
    p.add_argument("--lora-rank", type=int, default=4)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every configuration (default 1: on a shared machine, two "
        "OpenMP threads per process wait on each other whenever another job holds a core, "
        "which turns the figures into scheduling noise; use the core count on a quiet one)",
    )
    p.add_argument("--model", default="smollm2")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="precision of every configuration: bfloat16 is mixed precision (autocast, fp32 "
        "weights) for ours and TRL alike (TRL's bf16=True)",
    )
    p.add_argument("--data", type=Path, default=HH_TEST, help="HH-RLHF jsonl(.gz)")
    p.add_argument("--only", nargs="+", choices=WORKERS, help="run only these configurations")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="run every configuration this many times, interleaved, and keep each one's "
        "fastest round (a shared machine only ever slows a run down)",
    )
    add_quiet_arguments(p)
    p.add_argument("--report", type=Path, help="print the tables of a results file and exit")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--warmup, --steps and --rounds must be at least 1")
    if args.accumulation < 1 or args.batch % args.accumulation:
        p.error(f"--accumulation {args.accumulation} must divide --batch {args.batch}")
    if args.levels == 1 or args.levels < 0:
        p.error("--levels must be 0 (HH-RLHF's pairs) or at least 2")
    return args


def n_examples(args: argparse.Namespace) -> int:
    return total_steps(args) * args.batch


def select_records(args: argparse.Namespace, tokenizer, scratch: Path):
    """The first HH-RLHF records whose both responses fit, with any control, in max_length.

    Each record gives two examples (chosen -> ``good``, rejected -> ``bad``), in file order,
    so every configuration and TRL train on the very same token sequences up to the prefix.
    With ``--levels K`` the same examples, in the same order, become ``scores`` rows (score:
    index modulo K) in ``scratch`` and come back through the loader as K quantised levels.
    """
    from ctrlalign.data import load_preference_data
    from ctrlalign.model.layout import encode

    data = load_preference_data(f"hh-rlhf:{args.data}")
    budget = args.max_length - max(args.soft_prompt_length, PREFIX_SLACK) - 2
    records = []
    for record in data.records:
        lengths = [
            len(encode(tokenizer, None, record.chat, None, text).input_ids)
            for text in record.responses.values()
        ]
        if len(lengths) == 2 and max(lengths) <= budget:
            records.append(record)
        if 2 * len(records) >= n_examples(args):
            break
    else:
        sys.exit(f"error: not enough HH-RLHF records fit in --max-length {args.max_length}")
    if not args.levels:
        return data.preferences, records
    rows = [
        {"prompt": record.chat, "response": text}
        for record in records
        for text in record.responses.values()
    ]
    path = scratch / "scores.jsonl"
    path.write_text(
        "".join(json.dumps({**r, "score": i % args.levels}) + "\n" for i, r in enumerate(rows))
    )
    scored = load_preference_data(f"scores:{path}", levels=args.levels)
    return scored.preferences, scored.records


def example_ids(records) -> list[str]:
    """Every trainer's examples in the order both build them: per record, its responses."""
    return [example_id(i, key) for i, record in enumerate(records) for key in record.responses]


# ----------------------------------------------------------------------------- workers


def run_ours(args: argparse.Namespace, name: str, out_dir: Path) -> tuple[StepMeter, dict]:
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.controls import build_control
    from ctrlalign.model.layout import encode_records
    from ctrlalign.model.loading import load_model
    from ctrlalign.training.config import TrainConfig
    from ctrlalign.training.objectives import ConditionalLMObjective
    from ctrlalign.training.placement import enable_checkpointing
    from ctrlalign.training.stage import conditional_collator, run_stage
    from ctrlalign.training.trainer import ControlTrainer, training_arguments

    kind, stage = OURS[name]
    first = stage == "first"
    packing = "-packed" in name
    checkpointing = name.endswith("-ckpt")
    lm, tokenizer = load_model(args.model)
    if checkpointing:
        enable_checkpointing(lm)
    preferences, records = select_records(args, tokenizer, out_dir)
    control = build_control(
        kind,
        preferences,
        soft_prompt_length=args.soft_prompt_length,
        lora_rank=args.lora_rank,
    )
    lm = control.attach(lm, tokenizer)
    model = ControlledLM(lm, control)
    encoded = encode_records(records, tokenizer, control, args.max_length)
    if encoded.dropped_too_long or len(encoded.examples) != n_examples(args):
        raise RuntimeError(f"{name}: examples do not match the selection ({encoded})")
    method = {"prompt": "coh", "soft-prompt": "meet-prompt", "lora": "meet-lora"}[kind]
    config = TrainConfig(
        data=f"hh-rlhf:{args.data}",
        output=str(out_dir),
        method=method,
        model=args.model,
        stages=stage,
        soft_prompt_length=args.soft_prompt_length,
        lora_rank=args.lora_rank,
        batch_size=args.batch,
        micro_batch_size=args.batch // args.accumulation,
        max_length=args.max_length,
        max_steps=total_steps(args),
        packing=packing,
        gradient_checkpointing=checkpointing,
        dtype=args.dtype,
    )
    config.validate()
    # as ctrlalign.training.conditional.train does for one stage
    params = control.first_stage_parameters(lm) if first else list(model.parameters())
    handles = control.restrict_first_stage(lm) if first else []
    targs = training_arguments(
        config,
        out_dir / "checkpoints" / stage,
        lr=config.stage_lr(stage),
        epochs=config.epochs,
    )
    targs.train_sampling_strategy = "sequential"
    targs.disable_tqdm = True
    meter = meter_for(args)

    class BenchTrainer(ControlTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            instrument(self, meter, id_by_object(encoded.examples, example_ids(records)))

    metrics = run_stage(
        ConditionalLMObjective(model),
        params,
        out_dir / "checkpoints" / stage,
        targs,
        encoded.examples,
        conditional_collator(config, tokenizer.pad_token_id),
        trainer_cls=BenchTrainer,
    )
    for handle in handles:
        handle.remove()
    info = {
        "trainer": "ctrlalign ControlTrainer via run_stage",
        "control": kind,
        "stage": stage,
        "packing": packing,
        "gradient_checkpointing": checkpointing,
        "learning_rate": targs.learning_rate,
        "trainable_parameters": metrics["trainable_parameters"],
        "lm_frozen": first,
        "bf16": targs.bf16,
        "max_grad_norm": targs.max_grad_norm,
        "optimizer": str(targs.optim),
        "preferences": len(preferences),
    }
    if kind == "soft-prompt":
        info["soft_prompt_length"] = args.soft_prompt_length
    if kind == "lora":
        info["lora_rank"] = args.lora_rank
        info["lora_target_modules"] = "all-linear"
    return meter, info


def run_trl(args: argparse.Namespace, name: str, out_dir: Path) -> tuple[StepMeter, dict]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ctrlalign.model.loading import load_model

    lm, tokenizer = load_model(args.model)
    _, records = select_records(args, tokenizer, out_dir)
    rows = [
        {"prompt": record.chat, "completion": [{"role": "assistant", "content": text}]}
        for record in records
        for text in record.responses.values()
    ]
    for row, row_id in zip(rows, example_ids(records), strict=True):
        row[EXAMPLE_ID] = row_id
    sft = SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.batch // args.accumulation,
        gradient_accumulation_steps=args.accumulation,
        max_steps=total_steps(args),
        learning_rate=2e-5,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        # padding_free refuses a max_length it would not enforce; the selection already fits
        max_length=None if name == "trl-sft-padfree" else args.max_length,
        completion_only_loss=True,
        packing=False,
        padding_free=name == "trl-sft-padfree",
        bf16=args.dtype == "bfloat16",
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        dataloader_pin_memory=False,
        train_sampling_strategy="sequential",
        save_strategy="no",
        logging_steps=5,
        report_to="none",
        seed=42,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=lm, args=sft, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    longest = max(len(ids) for ids in trainer.train_dataset["input_ids"])
    if longest > args.max_length:
        raise RuntimeError(f"TRL would truncate: longest example {longest} > {args.max_length}")
    keep_id_column(trainer)
    meter = meter_for(args)
    instrument(trainer, meter, id_from_column)
    trainer.train()
    info = {
        "trainer": "trl.SFTTrainer",
        "dataset": "conversational prompt/completion",
        "completion_only_loss": sft.completion_only_loss,
        "learning_rate": sft.learning_rate,
        "trainable_parameters": sum(p.numel() for p in lm.parameters() if p.requires_grad),
        "bf16": sft.bf16,
        "gradient_checkpointing": sft.gradient_checkpointing,
        "padding_free": sft.padding_free,
        "attn_implementation": lm.config._attn_implementation,
        "max_grad_norm": sft.max_grad_norm,
        "optimizer": str(sft.optim),
    }
    return meter, info


def total_steps(args: argparse.Namespace) -> int:
    """Optimizer steps a worker runs: warm-up, timed, and the profiled one if asked."""
    return args.warmup + args.steps + int(args.profile)


def meter_for(args: argparse.Namespace) -> StepMeter:
    """The step meter, measuring memory over the warm-up and timed steps only."""
    timed = args.warmup + args.steps
    return StepMeter(
        accumulation=args.accumulation,
        last_step=timed,
        profile=ProfileStep(timed + 1) if args.profile else None,
    )


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{args.worker}."))
    try:
        run = run_trl if args.worker in TRL else run_ours
        meter, info = run(args, args.worker, out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    result = {"name": args.worker, **info, **meter.summary(args.warmup, args.steps)}
    result["profile"] = meter.profile.table if meter.profile else []
    result["torch_threads"] = torch.get_num_threads()
    args.worker_out.write_text(json.dumps(result))


# ----------------------------------------------------------------------------- report


def fastest(configs: dict[str, dict], names) -> str | None:
    """The name of the configuration among ``names`` with the most tokens/s, if any ran."""
    present = [n for n in names if n in configs]
    return max(present, key=lambda n: configs[n]["tokens_per_s"]) if present else None


def against_trl(ours: dict, trl: dict, names: list[str]) -> dict:
    """Speed and memory of one of ours against TRL's configuration: tokens/s on the wall
    clock (``value``, the one judged) and per process-CPU second (``value_cpu``, a check
    against machine noise); peak RSS delta."""
    value = ours["tokens_per_s"] / trl["tokens_per_s"]
    cpu = ours["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
    rss = ours["rss_peak_delta_mib"] / trl["rss_peak_delta_mib"]
    return {
        "speed": {
            "value": round(value, 3),
            "value_cpu": round(cpu, 3),
            "target": f">= {TARGET_VS_TRL}",
            "met": value >= TARGET_VS_TRL,
            "met_cpu": cpu >= TARGET_VS_TRL,
            "compared": names,
            "means": "ours' step-2 tokens/s divided by TRL's SFT tokens/s",
        },
        "rss": {
            "value": round(rss, 3),
            "value_cpu": round(rss, 3),
            "target": f"<= {TARGET_RSS_VS_TRL}",
            "met": rss <= TARGET_RSS_VS_TRL,
            "met_cpu": rss <= TARGET_RSS_VS_TRL,
            "compared": names,
            "means": "peak RSS delta of the same two configurations, ours over TRL's",
        },
    }


def ratios(configs: dict[str, dict]) -> dict:
    """The targets per control: ours' faster step-2 configuration without checkpointing
    (padded or packed) against TRL's faster one (with or without ``padding_free``), and the
    checkpointed one against the same TRL, for the memory it buys."""
    out: dict[str, dict] = {}
    trl_name = fastest(configs, TRL)
    for kind in CONTROLS:
        entry = {}
        best_name = fastest(configs, (f"{kind}-step2", f"{kind}-step2-packed"))
        if best_name and trl_name:
            got = against_trl(configs[best_name], configs[trl_name], [best_name, trl_name])
            entry["step2_vs_trl"], entry["rss_vs_trl"] = got["speed"], got["rss"]
        ckpt_name = f"{kind}-step2-packed-ckpt"
        if ckpt_name in configs and trl_name:
            got = against_trl(configs[ckpt_name], configs[trl_name], [ckpt_name, trl_name])
            entry["ckpt_step2_vs_trl"], entry["ckpt_rss_vs_trl"] = got["speed"], got["rss"]
        s1, s2 = configs.get(f"{kind}-step1"), configs.get(f"{kind}-step2")
        if s1 and s2:
            value = s2["tokens_per_s"] / s1["tokens_per_s"]
            entry["step1_vs_step2"] = {
                "value": round(value, 3),
                "value_cpu": round(s2["tokens_per_cpu_s"] / s1["tokens_per_cpu_s"], 3),
                "target": f"<= {TARGET_STEP1_VS_STEP2}",
                "met": value <= TARGET_STEP1_VS_STEP2,
                "met_cpu": s2["tokens_per_cpu_s"] / s1["tokens_per_cpu_s"] <= TARGET_STEP1_VS_STEP2,
                "means": "step-1 seconds per token divided by step-2 seconds per token",
            }
        if entry:
            out[kind] = entry
    return out


def table(results: dict) -> str:
    rows = [
        "| configuration | trains | tokens/step | response tok/step | s/step | tokens/s "
        "| response tok/s | tokens/CPU-s | others' CPU share | peak RSS delta (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["configs"].items():
        steps = r["timed_steps"]
        trains = (
            "LM (full), completion-only loss"
            if name in TRL
            else ("control only (LM frozen)" if r["lm_frozen"] else "LM + control")
        )
        rows.append(
            f"| {name} | {trains} | {r['timed_tokens'] / steps:.0f} "
            f"| {r['timed_response_tokens'] / steps:.0f} | {r['seconds_per_step']:.2f} "
            f"| {r['tokens_per_s']:.1f} | {r['response_tokens_per_s']:.1f} "
            f"| {r['tokens_per_cpu_s']:.1f} | {r['other_processes_cpu_share']:.0%} "
            f"| {r['rss_peak_delta_mib']:.0f} |"
        )
    same = results.get("same_examples")
    if same:
        differ = ", ".join(same["differ"]) or "none"
        rows += ["", f"Same examples in every step as {same['compared_with']}: differ: {differ}"]
    rows += [
        "",
        "| control | ratio | compared | target | wall-clock value | met | CPU-time value | met |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    yes = {True: "yes", False: "**no**", None: "-"}
    for kind, entry in results["ratios"].items():
        for key, r in entry.items():
            compared = " / ".join(r.get("compared", []))
            rows.append(
                f"| {kind} | {key} | {compared} | {r['target']} | {r['value']:.2f} "
                f"| {yes[r['met']]} | {r['value_cpu']:.2f} | {yes[r.get('met_cpu')]} |"
            )
    return "\n".join(rows)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return
    require_file(args.data, "HH-RLHF helpful-base test data")
    passed = [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
        "--max-length", str(args.max_length), "--soft-prompt-length", str(args.soft_prompt_length),
        "--lora-rank", str(args.lora_rank), "--threads", str(args.threads),
        "--model", args.model, "--data", str(args.data), "--dtype", args.dtype,
    ]  # fmt: skip
    started = time.time()
    configs = run_rounds(
        Path(__file__).resolve(),
        args.only or WORKERS,
        [*passed, "--accumulation", str(args.accumulation), "--levels", str(args.levels)],
        args.rounds,
        quiet_from(args),
        last_round_argv=["--profile"],
    )
    results = {
        **run_header("train_throughput", started),
        "setup": {
            "model": args.model,
            "data": str(args.data),
            "examples": n_examples(args),
            "batch_size": args.batch,
            "gradient_accumulation_steps": args.accumulation,
            "preferences": args.levels or 2,
            "data_kind": f"scores, {args.levels} levels" if args.levels else "hh-rlhf pairs",
            "max_length": args.max_length,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "torch_threads": args.threads,
            "rounds": args.rounds,
            "round_kept": "the fastest (highest tokens/s) of each configuration's quiet rounds",
            "quiet": quiet_from(args).settings(),
            "dtype": args.dtype,
            "soft_prompt_length": args.soft_prompt_length,
            "lora_rank": args.lora_rank,
            "tokens": "non-pad tokens per optimizer step (attention-mask ones) without control "
            "positions (soft-prompt or hand-written prefix), the same text for every trainer",
            "example_order": "file order for every trainer (train_sampling_strategy="
            "'sequential', which ours honours); step_example_ids name every step's examples "
            "(record position in the selection : response), same_examples compares them",
            "response_tokens": "tokens carrying loss (response + end of turn)",
            "timed_step": "end of previous optimizer step to end of this one (fetch, collate, "
            "forward, backward, clip, optimizer, scheduler, logging)",
            "memory": "peak RSS sampled every 5 ms by a psutil thread during the step loop, "
            "minus RSS at on_train_begin (model, data, trainer, optimizer built, no step run); "
            "each configuration runs in a fresh process",
        },
        "configs": configs,
        "same_examples": same_examples(configs),
        "ratios": ratios(configs),
    }
    write_json_atomic(args.output, results)
    print(table(results))
    print(f"[bench] wrote {args.output} in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
