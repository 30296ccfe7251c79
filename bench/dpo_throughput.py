"""DPO training throughput and memory: ctrlalign's recipe against TRL's DPOTrainer.

    .venv/bin/python bench/dpo_throughput.py [--steps 8 --warmup 1 --batch 8 --max-length 384
                                              --rounds 3]

Both train every weight of the same model (default ``smollm2``) with the sigmoid DPO loss,
beta 0.1, on the same HH-RLHF pairs in file order (``train_sampling_strategy=
"sequential"``), same batch (pairs per optimizer step, no accumulation), the same precision
(``--dtype``: fp32, or bf16 mixed precision for both), no gradient checkpointing, same torch
threads, each in a fresh process. TRL is configured as its best CPU user would: ``bf16``
as ``--dtype`` says, ``gradient_checkpointing=False`` and
``precompute_ref_log_probs=True`` (no reference model in memory, no reference forward per
step), which is also what ctrlalign does. The difference left is the forward itself:
ctrlalign packs each pair into one row (prompt once, both responses after it, a 4D mask
keeping them apart), so it computes the prompt once and pads per pair, and it computes
logits only where a response token is predicted.

Throughput counts the tokens of the two full sequences of every pair (prompt + chosen and
prompt + rejected, non-pad), the same number for both trainers, so the ratio is a speed-up
on identical work. Timed steps run from the end of the previous optimizer step to the end
of this one, after the warm-up steps; the reference pass before training is timed
separately. Memory is the peak RSS (psutil thread, every 5 ms) during the step loop minus
the RSS just before it, plus the absolute peak. Both trainers run ``--rounds`` times,
interleaved, each round in a fresh process, and keep their fastest round; the last round
runs one more step under ``torch.profiler`` and records its top operators (``profile``),
outside the timed steps. Results: ``bench/results/dpo_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from common import (
    EXAMPLE_ID,
    HH_TEST,
    REPO,
    BatchCount,
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

RESULTS = REPO / "bench" / "results" / "dpo_throughput.json"
WORKERS = ("trl-dpo", "ctrlalign-dpo")
TARGET = 2.5  # ctrlalign tokens/s over TRL tokens/s, at least
TARGET_RSS = 0.8  # ctrlalign peak RSS delta over TRL's, at most (issue 27)
BETA, LR = 0.1, 5e-7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved runs of each trainer")
    add_quiet_arguments(p)
    p.add_argument("--max-length", type=int, default=384, help="longest sequence, in tokens")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--model", default="smollm2")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="precision of both trainers: bfloat16 is mixed precision (autocast, fp32 weights)",
    )
    p.add_argument("--data", type=Path, default=HH_TEST, help="HH-RLHF jsonl(.gz)")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--warmup, --steps and --rounds must be at least 1")
    return args


def select_records(args: argparse.Namespace, tokenizer):
    """The first HH-RLHF records whose prompt + longer response fits in max_length."""
    from ctrlalign.data import load_preference_data
    from ctrlalign.model.pairs import encode_pairs

    data = load_preference_data(f"hh-rlhf:{args.data}")
    wanted = total_steps(args) * args.batch
    records = []
    for record in data.records:
        pairs, _ = encode_pairs([record], tokenizer, data.chosen, data.rejected, args.max_length)
        if pairs:
            records.append(record)
        if len(records) == wanted:
            return data, records
    sys.exit(f"error: not enough HH-RLHF pairs fit in --max-length {args.max_length}")


def pair_ids(records) -> list[str]:
    """One pair per record, in selection order, for both trainers."""
    return [example_id(i, "pair") for i in range(len(records))]


def count_trl(batch) -> BatchCount:
    mask = batch["attention_mask"]
    return BatchCount(int(mask.sum()), int(batch["completion_mask"].sum()), mask.numel())


def count_ours(batch) -> BatchCount:
    segments = batch["segment_ids"]  # one row per pair: prompt 0, chosen 1, rejected 2, pad -1
    prompt, responses = int((segments == 0).sum()), int((segments > 0).sum())
    return BatchCount(2 * prompt + responses, responses, segments.numel())


def run_trl(args: argparse.Namespace, out_dir: Path) -> tuple[StepMeter, dict]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ctrlalign.model.loading import load_model

    lm, tokenizer = load_model(args.model)
    data, records = select_records(args, tokenizer)
    rows = [
        {
            "prompt": r.chat,
            "chosen": [{"role": "assistant", "content": r.responses[data.chosen]}],
            "rejected": [{"role": "assistant", "content": r.responses[data.rejected]}],
            EXAMPLE_ID: pair,
        }
        for r, pair in zip(records, pair_ids(records), strict=True)
    ]
    config = DPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=total_steps(args),
        learning_rate=LR,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=None,  # the selection already fits; TRL must not truncate
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=args.batch,
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
    started = time.perf_counter()
    trainer = DPOTrainer(
        model=lm, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    setup_seconds = time.perf_counter() - started
    keep_id_column(trainer)
    meter = meter_for(args)
    instrument(trainer, meter, id_from_column, count_trl)
    trainer.train()
    info = {
        "trainer": "trl.DPOTrainer",
        "dataset": "conversational prompt/chosen/rejected",
        "reference": "precompute_ref_log_probs=True (no reference model kept)",
        "setup_seconds_incl_tokenize_and_reference_pass": round(setup_seconds, 1),
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "max_grad_norm": config.max_grad_norm,
    }
    return meter, info


def run_ours(args: argparse.Namespace, out_dir: Path) -> tuple[StepMeter, dict]:
    from ctrlalign.model.controlled_lm import ControlledLM
    from ctrlalign.model.loading import load_model
    from ctrlalign.model.pairs import collate_pairs, encode_pairs
    from ctrlalign.training.config import ONLY_STEP, TrainConfig
    from ctrlalign.training.preference import (
        PairPreferenceObjective,
        PairTrainer,
        with_reference_logps,
    )
    from ctrlalign.training.stage import run_stage
    from ctrlalign.training.trainer import training_arguments

    lm, tokenizer = load_model(args.model)
    data, records = select_records(args, tokenizer)
    model = ControlledLM(lm)
    pairs, _ = encode_pairs(records, tokenizer, data.chosen, data.rejected, args.max_length)
    config = TrainConfig(
        data=f"hh-rlhf:{args.data}",
        output=str(out_dir),
        method="dpo",
        model=args.model,
        beta=BETA,
        learning_rate=LR,
        batch_size=args.batch,
        micro_batch_size=args.batch,
        max_length=args.max_length,
        max_steps=total_steps(args),
        dtype=args.dtype,
    )
    config.validate()
    started = time.perf_counter()
    pairs = with_reference_logps(model, pairs, tokenizer.pad_token_id, args.batch)
    reference_seconds = time.perf_counter() - started
    stage_dir = out_dir / "checkpoints" / ONLY_STEP
    targs = training_arguments(config, stage_dir, lr=LR, epochs=config.epochs)
    targs.train_sampling_strategy = "sequential"
    targs.disable_tqdm = True
    targs.save_strategy = "no"
    meter = meter_for(args)

    class BenchTrainer(PairTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            instrument(self, meter, id_by_object(pairs, pair_ids(records)), count_ours)

    objective = PairPreferenceObjective(model, BETA)
    params = list(model.parameters())
    run_stage(
        objective,
        params,
        stage_dir,
        targs,
        pairs,
        partial(collate_pairs, pad_id=tokenizer.pad_token_id),
        trainer_cls=BenchTrainer,
    )
    info = {
        "trainer": "ctrlalign PairTrainer (ControlTrainer) via run_stage",
        "reference": "log-probs precomputed once, no reference model kept",
        "reference_pass_seconds": round(reference_seconds, 1),
        "bf16": targs.bf16,
        "max_grad_norm": targs.max_grad_norm,
    }
    return meter, info


def total_steps(args: argparse.Namespace) -> int:
    """Optimizer steps a worker runs: warm-up, timed, and the profiled one if asked."""
    return args.warmup + args.steps + int(args.profile)


def meter_for(args: argparse.Namespace) -> StepMeter:
    """The step meter, measuring memory over the warm-up and timed steps only."""
    timed = args.warmup + args.steps
    return StepMeter(last_step=timed, profile=ProfileStep(timed + 1) if args.profile else None)


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{args.worker}."))
    try:
        run = run_trl if args.worker == "trl-dpo" else run_ours
        meter, info = run(args, out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    result = {"name": args.worker, **info, **meter.summary(args.warmup, args.steps)}
    result["profile"] = meter.profile.table if meter.profile else []
    result["torch_threads"] = torch.get_num_threads()
    args.worker_out.write_text(json.dumps(result))


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    require_file(args.data, "HH-RLHF helpful-base test data")
    passed = [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
        "--max-length", str(args.max_length), "--threads", str(args.threads),
        "--model", args.model, "--data", str(args.data), "--dtype", args.dtype,
    ]  # fmt: skip
    started = time.time()
    configs = run_rounds(
        Path(__file__).resolve(),
        list(WORKERS),
        passed,
        args.rounds,
        quiet_from(args),
        last_round_argv=["--profile"],
    )
    ours, trl = configs["ctrlalign-dpo"], configs["trl-dpo"]
    ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
    rss = ours["rss_peak_delta_mib"] / trl["rss_peak_delta_mib"]
    if ours["timed_tokens"] != trl["timed_tokens"]:
        print(
            f"[bench] note: token counts differ ({ours['timed_tokens']} vs {trl['timed_tokens']})"
        )
    results = {
        **run_header("dpo_throughput", started),
        "setup": {
            "model": args.model,
            "data": str(args.data),
            "pairs": (args.warmup + args.steps) * args.batch,
            "pairs_per_step": args.batch,
            "max_length": args.max_length,
            "loss": f"sigmoid DPO, beta {BETA}, lr {LR}, full fine-tuning",
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "rounds": args.rounds,
            "round_kept": "the fastest (highest tokens/s) of each trainer's quiet rounds",
            "quiet": quiet_from(args).settings(),
            "torch_threads": args.threads,
            "dtype": args.dtype,
            "tokens": "non-pad tokens of prompt+chosen and prompt+rejected per pair (the prompt "
            "counted twice, for both trainers)",
            "memory": "peak RSS sampled every 5 ms by a psutil thread during the step loop; "
            "delta = minus RSS at on_train_begin; each trainer in a fresh process",
        },
        "configs": configs,
        "same_examples": same_examples(configs),
        "ratio": {
            "value": round(ratio, 3),
            "value_cpu": round(ours["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"], 3),
            "target": f">= {TARGET}",
            "met": ratio >= TARGET,
            "means": "ctrlalign DPO tokens/s divided by TRL DPOTrainer tokens/s",
        },
        "rss_ratio": {
            "value": round(rss, 3),
            "target": f"<= {TARGET_RSS}",
            "met": rss <= TARGET_RSS,
            "means": "ctrlalign DPO peak RSS delta divided by TRL DPOTrainer's",
        },
    }
    write_json_atomic(args.output, results)
    print(json.dumps({"ratio": results["ratio"], "rss_ratio": results["rss_ratio"]}))
    print(f"[bench] wrote {args.output} in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
