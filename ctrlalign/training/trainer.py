"""What every recipe shares: a Trainer that checkpoints only what trains, and stage running.

The Trainer's own checkpoint format assumes a ``PreTrainedModel``; ours is a control plus
an LM of which often only the control trains, so checkpoints hold the trainable tensors
(a few KB for a soft prompt instead of the whole model) plus the Trainer's optimizer,
scheduler and RNG state, which is what ``resume_from_checkpoint`` needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ctrlalign.training.config import TrainConfig

TRAINABLE_FILE = "trainable.safetensors"
STAGE_DONE_FILE = "final.safetensors"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters yields a tied tensor once, which safetensors requires
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable_state(model: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"{path}: tensors that this model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))


class ControlTrainer(Trainer):
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        save_file(trainable_state(model), os.path.join(output_dir, TRAINABLE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None):
        model = self.accelerator.unwrap_model(model or self.model)
        load_trainable_state(model, Path(resume_from_checkpoint) / TRAINABLE_FILE)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def set_trainable(model: nn.Module, params: list[nn.Parameter]) -> int:
    """Freeze everything but ``params``; returns the number of trainable values."""
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_arguments(
    config: TrainConfig, output_dir: Path, lr: float, epochs: float, unused_params: bool = False
):
    """Trainer settings from our config; ``unused_params`` when a batch may skip some
    trainable tensors (one LoRA adapter per preference), which DDP must be told."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = config.micro_batch_size * world
    if config.batch_size % per_step:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by micro_batch_size x processes "
            f"({config.micro_batch_size} x {world})"
        )
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // per_step,
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        prediction_loss_only=True,
        remove_unused_columns=False,
        report_to="none",
        seed=config.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=unused_params,
    )


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

    A finished stage leaves ``final.safetensors``; rerunning loads it instead of training.
    """
    n_trainable = set_trainable(model, params)
    done = stage_dir / STAGE_DONE_FILE
    if done.exists():
        load_trainable_state(model, done)
        return {"resumed_finished_stage": True, "trainable_parameters": n_trainable}
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_dataset, data_collator=collator
    )
    last = get_last_checkpoint(str(stage_dir)) if stage_dir.exists() else None
    result = trainer.train(resume_from_checkpoint=last)
    if trainer.args.should_save:
        tmp = stage_dir / (STAGE_DONE_FILE + ".tmp")
        save_file(trainable_state(model), str(tmp))
        tmp.rename(done)
    metrics = dict(result.metrics)
    metrics["trainable_parameters"] = n_trainable
    metrics["log_history"] = trainer.state.log_history
    return metrics
