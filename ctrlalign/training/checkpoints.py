"""The checkpoint format: only the tensors that train, and whole checkpoints only.

The Trainer's own format assumes a ``PreTrainedModel``; ours is a control plus an LM of
which often only the control trains, so a checkpoint holds the trainable tensors (a few
KB for a soft prompt instead of the whole model) in ``trainable.safetensors`` plus the
Trainer's optimizer, scheduler and RNG state, which is what ``resume_from_checkpoint``
needs. A marker file written after the last file makes a checkpoint whole; a finished
stage leaves ``final.safetensors``.

Both files carry, in their safetensors metadata, what a later sitting cannot measure again:
a checkpoint the seconds its stage had trained, a finished stage its metrics. A run that
takes several sittings then reports its whole time and peak memory, not the last sitting's.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ctrlalign.data.io import write_atomic
from ctrlalign.training.distributed import is_main_process, under_zero3

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STAGE_DONE_FILE = "final.safetensors"
CHECKPOINT_DONE_FILE = "checkpoint_complete"
RECORD_KEY = "ctrlalign"  # the safetensors metadata entry holding the JSON record


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, record: dict) -> None:
    """Write ``tensors`` with ``record`` (JSON) in the file's metadata."""
    save_file(tensors, str(path), metadata={RECORD_KEY: json.dumps(record, default=str)})


def read_record(path: Path) -> dict:
    """The record ``save_tensors`` wrote; ``{}`` for a file written before records were."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata.get(RECORD_KEY, "{}"))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters yields a tied tensor once, which safetensors requires
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def trained_state(trainer: Trainer, model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors, whole. Under FSDP or DeepSpeed ZeRO-3 a process holds shards
    (or nothing) of them, so they come from the accelerator's gathered state dict: a
    collective, so every process calls this; only the main one receives the tensors."""
    local = trainable_state(model)
    if not (trainer.is_fsdp_enabled or under_zero3()):
        return local
    full = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return {name: full[name].detach().contiguous().cpu() for name in local if name in full}


def load_trainable_state(model: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"{path}: tensors that this model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))


def save_stage_done(tensors: dict[str, torch.Tensor], stage_dir: Path, metrics: dict) -> None:
    """Mark a stage finished with its trained tensors and metrics, written aside and
    renamed."""
    tmp = stage_dir / (STAGE_DONE_FILE + ".tmp")
    save_tensors(tensors, tmp, metrics)
    tmp.rename(stage_dir / STAGE_DONE_FILE)


def seal_checkpoint(current: Path) -> None:
    """Mark ``current`` whole, then remove the older checkpoints beside it: one whole
    checkpoint exists at every instant."""
    write_atomic(current / CHECKPOINT_DONE_FILE, "")
    for old in current.parent.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def last_whole_checkpoint(stage_dir: Path) -> str | None:
    """The newest checkpoint with its completion marker; torn ones (a kill while one was
    written) are removed by the main process, so the Trainer can write that step again."""
    if not stage_dir.exists():
        return None
    whole = None
    folders = stage_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    for folder in sorted(folders, key=lambda p: int(p.name.rsplit("-", 1)[-1])):
        if (folder / CHECKPOINT_DONE_FILE).is_file():
            whole = folder
        elif is_main_process():
            log.warning("removing %s: written only in part when the last run stopped", folder)
            shutil.rmtree(folder, ignore_errors=True)
    return str(whole) if whole else None
