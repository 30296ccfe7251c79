"""Conditional-LM recipes: MEET (two steps) and the controllable baselines it is compared to.

``coh`` (hand-written prompts, second step), ``special-token`` (one trainable token per
preference, second step), ``meet-prompt`` / ``meet-lora`` / ``meet-token`` (controls alone
with the LM frozen, then LM and controls together) and ``sft`` (preferred responses, no
controls) all optimise Eq. 1 of the paper; they differ only in the control and the steps.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from ctrlalign.controlled_lm import ControlledLM
from ctrlalign.controls import build_control
from ctrlalign.data import PreferenceData, Record, load_preference_data, split_records
from ctrlalign.models import load_model
from ctrlalign.rundir import save_run
from ctrlalign.training.batching import Collator, ExampleDataset, collate, encode_records
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.losses import IGNORE_INDEX
from ctrlalign.training.trainer import is_main_process, run_stage, training_arguments

log = logging.getLogger(__name__)


def select_preferences(data: PreferenceData, wanted: list[str] | None) -> PreferenceData:
    """Keep only the responses of the wanted preferences (all of them by default)."""
    if not wanted:
        return data
    unknown = sorted(set(wanted) - set(data.preferences))
    if unknown:
        raise ValueError(f"preferences {unknown} are not in the data, which has {data.preferences}")
    keep = set(wanted)
    records = [
        Record(
            r.messages, {p: t for p, t in r.responses.items() if p in keep}, r.reference, r.source
        )
        for r in data.records
    ]
    records = [r for r in records if r.responses]
    return PreferenceData(
        records, list(wanted), data.pairwise, data.chosen, data.rejected, dict(data.dropped)
    )


@torch.no_grad()
def mean_response_nll(model: ControlledLM, examples, pad_id: int, batch_size: int = 8) -> float:
    """Token-averaged loss of Eq. 1 on held-out examples."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        logps, _ = model.token_logps(
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            batch["prefix_mask"],
            batch["preference_ids"],
        )
        total -= logps.sum().item()
        count += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    model.train()
    return total / max(count, 1)


def train(config: TrainConfig) -> Path:
    """Train a conditional-LM method into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    data = load_preference_data(
        config.data, levels=config.levels, chosen=config.chosen, rejected=config.rejected
    )
    data = select_preferences(data, config.preferences)
    train_data, eval_data = split_records(data, config.eval_fraction, config.seed)
    if config.max_examples is not None:
        train_data.records = train_data.records[: config.max_examples]

    lm, tokenizer = load_model(config.model)
    kind = config.control_kind
    control = None
    if kind is not None:
        control = build_control(
            kind,
            data.preferences,
            prompt_texts=config.prompt_texts,
            soft_prompt_length=config.soft_prompt_length,
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
        )
        lm = control.attach(lm, tokenizer)
    model = ControlledLM(lm, control)
    only = data.chosen if kind is None else None
    train_enc = encode_records(train_data.records, tokenizer, control, config.max_length, only)
    eval_enc = encode_records(eval_data.records, tokenizer, control, config.max_length, only)
    if not train_enc.examples:
        raise ValueError(f"no training example fits in max_length={config.max_length} tokens")
    log.info(
        "%d training examples (%d dropped: longer than %d tokens), %d held out",
        len(train_enc.examples),
        train_enc.dropped_too_long,
        config.max_length,
        len(eval_enc.examples),
    )

    run_dir = Path(config.output)
    metrics: dict = {
        "train_examples": len(train_enc.examples),
        "eval_examples": len(eval_enc.examples),
        "dropped_too_long": train_enc.dropped_too_long + eval_enc.dropped_too_long,
        "dropped_while_loading": data.dropped,
        "stages": {},
    }
    dataset = ExampleDataset(train_enc.examples)
    collator = Collator(tokenizer.pad_token_id)
    for stage in config.stage_list:
        first = stage == "first"
        params = control.first_stage_parameters(lm) if first else list(model.parameters())
        handles = control.restrict_first_stage(lm) if first else []
        args = training_arguments(
            config,
            run_dir / "checkpoints" / stage,
            lr=config.lr_first if first else config.lr_second,
            epochs=(config.first_epochs or config.epochs) if first else config.epochs,
            unused_params=control is not None and control.per_preference_weights,
        )
        metrics["stages"][stage] = run_stage(
            model, params, run_dir / "checkpoints" / stage, args, dataset, collator
        )
        for handle in handles:
            handle.remove()

    if eval_enc.examples:
        scored = eval_enc.examples[: config.max_eval_examples]
        metrics["eval_loss"] = mean_response_nll(model, scored, tokenizer.pad_token_id)
    metrics["seconds"] = round(time.time() - started, 1)
    info = {
        **config.to_dict(),
        "control": kind,
        "preferences": data.preferences,
        "chosen": data.chosen,
        "rejected": data.rejected,
        "stages_run": config.stage_list,
    }
    if not is_main_process():
        return run_dir
    save_run(run_dir, model, tokenizer, info, metrics, save_lm="second" in config.stage_list)
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return run_dir
