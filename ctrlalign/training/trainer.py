"""``ControlTrainer``, the Trainer every recipe steps, and its ``TrainingArguments``.

It changes two things of the Trainer: batches (every optimiser step trains on the same
examples whatever the number of processes, ``batching``) and checkpoints (only what
trains, and only whole ones, ``checkpoints``), which also keep the seconds trained so far,
so a stage resumed in another sitting knows its whole time.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ctrlalign.training.batching import StepBatchSampler, StepDataset, collate_steps, mask_labels
from ctrlalign.training.checkpoints import (
    TRAINABLE_FILE,
    load_trainable_state,
    read_record,
    save_tensors,
    seal_checkpoint,
    trainable_state,
)
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.distributed import world_size
from ctrlalign.training.placement import precision


class ControlTrainer(Trainer):
    #: turns a collated micro-batch into one that counts for nothing (``batching``)
    mask_batch = staticmethod(mask_labels)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sitting_start = time.monotonic()
        #: seconds this stage trained in earlier sittings (up to the checkpoint resumed)
        self.earlier_seconds = 0.0

    def elapsed(self) -> float:
        """Seconds this stage has trained, over every sitting up to now."""
        return self.earlier_seconds + time.monotonic() - self._sitting_start

    def get_train_dataloader(self) -> DataLoader:
        """Micro-batches from ``StepBatchSampler``: every optimiser step trains on the same
        examples whatever the number of processes (accelerate's own sharding repeats
        examples in an epoch's short last batch). The sampler already knows this process's
        share, so accelerate's shard wrapper is made a passthrough, as the Trainer does for
        its rank-aware ``BatchRebalanceSampler``."""
        args = self.args
        sampler = StepBatchSampler(
            len(self.train_dataset),
            micro=self._train_batch_size,
            accumulation=args.gradient_accumulation_steps,
            world=args.world_size,
            rank=args.process_index,
            seed=args.seed if args.data_seed is None else args.data_seed,
            shuffle=args.train_sampling_strategy != "sequential",
        )
        loader = DataLoader(
            StepDataset(self.train_dataset),
            batch_sampler=sampler,
            collate_fn=partial(collate_steps, self.data_collator, self.mask_batch),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
        )
        loader = self.accelerator.prepare(loader)
        shard = getattr(loader, "batch_sampler", None)
        if shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def _save_checkpoint(self, model: nn.Module, trial: object) -> None:
        """The Trainer writes a checkpoint file by file, so a kill midway leaves a torn one
        that resuming would load: it is sealed once whole (``seal_checkpoint``)."""
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        run_dir = Path(self._get_output_dir(trial=trial))
        seal_checkpoint(run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        tensors = trainable_state(model)
        if state_dict is not None:
            # FSDP / ZeRO-3: this process's parameters are shards; the Trainer gathered the
            # full state dict and hands it over, so the trainable tensors come from there
            tensors = {
                name: state_dict[name].detach().contiguous().cpu()
                for name in tensors
                if name in state_dict
            }
        save_tensors(tensors, Path(output_dir) / TRAINABLE_FILE, {"seconds": self.elapsed()})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None):
        model = self.accelerator.unwrap_model(model or self.model)
        path = Path(resume_from_checkpoint) / TRAINABLE_FILE
        load_trainable_state(model, path)
        self.earlier_seconds = read_record(path).get("seconds", 0.0)


def training_arguments(
    config: TrainConfig, output_dir: Path, lr: float, epochs: float, unused_params: bool = False
) -> TrainingArguments:
    """Trainer settings from our config; ``unused_params`` when a batch may skip some
    trainable tensors (one LoRA adapter per preference), which DDP must be told."""
    world = world_size()
    per_step = config.micro_batch_size * world
    if config.batch_size % per_step:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by micro_batch_size x processes "
            f"({config.micro_batch_size} x {world})"
        )
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // per_step,
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=config.max_steps,
        # transformers 5 has no warmup_ratio: warmup_steps below 1 is the share of the steps
        warmup_steps=config.warmup_ratio,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=None,  # ControlTrainer keeps the last whole checkpoint itself
        eval_strategy="no",
        prediction_loss_only=True,
        remove_unused_columns=False,
        report_to=config.report_list,
        # the tokens each log line has seen, gathered over processes (tokens/s in the logs)
        include_num_input_tokens_seen=True,
        seed=config.seed,
        **precision(config.device, config.dtype),
        ddp_find_unused_parameters=unused_params,
    )
