"""Running a stage, what every recipe shares: freeze all but what the stage trains, train
it with ``ControlTrainer`` (resuming an interrupted run), mark it done; the conditional-LM
fit over a method's stages; and the run finisher that writes the run directory.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from ctrlalign.data import PreferenceData
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.layout import collate, collate_packed, encode_records
from ctrlalign.model.rundir import save_run
from ctrlalign.training.checkpoints import (
    STAGE_DONE_FILE,
    last_whole_checkpoint,
    load_trainable_state,
    read_record,
    save_stage_done,
    trained_state,
)
from ctrlalign.training.config import METHODS, TrainConfig
from ctrlalign.training.distributed import is_main_process, whole_parameters
from ctrlalign.training.memory import peak_memory
from ctrlalign.training.objectives import ConditionalLMObjective, mean_response_nll
from ctrlalign.training.placement import compute_dtype
from ctrlalign.training.splits import data_metrics
from ctrlalign.training.trainer import ControlTrainer, training_arguments

log = logging.getLogger(__name__)


def set_trainable(model: nn.Module, params: list[nn.Parameter]) -> int:
    """Freeze everything but ``params``; returns the number of trainable values."""
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_stage(
    model: nn.Module,
    params: list[nn.Parameter],
    stage_dir: Path,
    args: TrainingArguments,
    train_dataset,
    collator: Callable,
    trainer_cls: type[Trainer] = ControlTrainer,
) -> dict:
    """Train ``params`` (everything else frozen), resuming an interrupted run of this stage.

    A finished stage leaves ``final.safetensors``; rerunning loads it instead of training
    and returns the metrics it was stored with. ``seconds`` is the stage's time over every
    sitting, ``seconds_earlier_sittings`` the part ``finish_run`` cannot see in this one.
    """
    n_trainable = set_trainable(model, params)
    done = stage_dir / STAGE_DONE_FILE
    if done.exists():
        load_trainable_state(model, done)
        stored = read_record(done)
        return {
            **stored,
            "resumed_finished_stage": True,
            "trainable_parameters": n_trainable,
            "seconds_earlier_sittings": stored.get("seconds", 0.0),
        }
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_dataset, data_collator=collator
    )
    result = trainer.train(resume_from_checkpoint=last_whole_checkpoint(stage_dir))
    tensors = trained_state(trainer, model)
    metrics = dict(result.metrics)
    metrics["trainable_parameters"] = n_trainable
    metrics["log_history"] = trainer.state.log_history
    metrics["seconds"] = round(trainer.elapsed(), 1)
    metrics["seconds_earlier_sittings"] = round(trainer.earlier_seconds, 1)
    metrics |= peak_memory()  # the run's peak up to the end of this stage
    if trainer.args.should_save:
        save_stage_done(tensors, stage_dir, metrics)
    return metrics


def conditional_collator(config: TrainConfig, pad_id: int) -> Callable[..., dict]:
    """The batch layout of ``--packing``: rows of packed examples up to ``--max-length``
    tokens, or every example padded to the longest."""
    if config.packing:
        return partial(collate_packed, pad_id=pad_id, width=config.max_length)
    return partial(collate, pad_id=pad_id)


def fit_conditional(
    config: TrainConfig,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    train_data: PreferenceData,
    eval_data: PreferenceData,
    stage_params: Callable[[str], tuple[list[nn.Parameter], list]],
) -> dict:
    """Eq. 1 over ``config.stage_list``; ``stage_params(stage)`` gives what that step trains
    and the hooks to remove after it. Without controls it trains on the chosen responses."""
    control = model.control
    only = train_data.chosen if control is None else None
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
    dropped = (train_enc.dropped_too_long, eval_enc.dropped_too_long)
    metrics = data_metrics(len(train_enc.examples), len(eval_enc.examples), dropped, train_data)
    collator = conditional_collator(config, tokenizer.pad_token_id)
    for stage in config.stage_list:
        first = stage == "first"
        params, handles = stage_params(stage)
        stage_dir = Path(config.output) / "checkpoints" / stage
        args = training_arguments(
            config,
            stage_dir,
            lr=config.stage_lr(stage),
            epochs=(config.first_epochs or config.epochs) if first else config.epochs,
            unused_params=control is not None and control.per_preference_weights,
        )
        objective = ConditionalLMObjective(model)
        metrics["stages"][stage] = run_stage(
            objective, params, stage_dir, args, train_enc.examples, collator
        )
        for handle in handles:
            handle.remove()
    if eval_enc.examples:
        scored = eval_enc.examples[: config.max_eval_examples]
        metrics["eval_loss"] = mean_response_nll(model, scored, tokenizer.pad_token_id)
    return metrics


def finish_run(
    config: TrainConfig,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    data: PreferenceData,
    metrics: dict,
    started: float,
    save_lm: bool,
) -> Path:
    """Write the run directory (by the main process, from whole weights) and drop the
    checkpoints unless kept."""
    run_dir = Path(config.output)
    stages = metrics["stages"].values()
    earlier = sum(s.get("seconds_earlier_sittings", 0.0) for s in stages)
    earlier += metrics.get("reference_seconds_earlier_sittings", 0.0)
    metrics["seconds"] = round(time.time() - started + earlier, 1)
    for key, value in peak_memory().items():  # a stage of an earlier sitting keeps its peak
        metrics[key] = max([value, *(s.get(key, 0.0) for s in stages)])
    info = {
        **config.to_dict(),
        "control": config.control_kind,
        # what the data offered (the controls, or sft's choice among them); pair methods
        # keep the flag's value, as they have no controls to name
        "preferences": config.preferences if METHODS[config.method].pairwise else data.preferences,
        "chosen": data.chosen,
        "rejected": data.rejected,
        "stages_run": config.stage_list,
        # what --dtype resolved to here: the precision products ran in (weights stay fp32)
        "compute_dtype": compute_dtype(config.device, config.dtype),
    }
    with whole_parameters(model):
        if is_main_process():
            save_run(run_dir, model, tokenizer, info, metrics, save_lm=save_lm)
    if not is_main_process():
        return run_dir
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return run_dir
