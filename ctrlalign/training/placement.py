"""Where and in what precision a process trains: the device of this process, the
Trainer's mixed precision, the model loaded there with the attention and activation
checkpointing asked for."""

from __future__ import annotations

import os

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.device import resolve_attn, resolve_device, resolve_dtype
from ctrlalign.model.loading import load_model
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.distributed import sharded_launch


def precision(device: str, dtype: str) -> dict[str, bool]:
    """``TrainingArguments`` keywords for ``--device`` and ``--dtype``: mixed precision keeps
    fp32 master weights and optimiser state and computes in ``dtype`` under autocast (auto:
    bf16 on a GPU that has it and on a CPU with native bf16 units, see ``model.device``)."""
    cuda = torch.cuda.is_available() and device != "cpu"
    compute = resolve_dtype(dtype, torch.device("cuda" if cuda else "cpu"))
    return {
        "bf16": compute == torch.bfloat16,
        "fp16": compute == torch.float16,
        "use_cpu": not cuda,
        "dataloader_pin_memory": cuda,
    }


def compute_dtype(device: str, dtype: str) -> str:
    """The precision training's matrix products run in, by name (recorded in the run)."""
    mixed = precision(device, dtype)
    return "bfloat16" if mixed["bf16"] else "float16" if mixed["fp16"] else "float32"


def training_device(config: TrainConfig) -> torch.device:
    """Where this process loads the model to train: its own GPU (``LOCAL_RANK`` under
    accelerate launch), or the CPU when told so, when there is no GPU, or under FSDP and
    DeepSpeed, which shard the model from the CPU copy themselves."""
    if config.device == "cpu" or not torch.cuda.is_available() or sharded_launch():
        return torch.device("cpu")
    if config.device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        return resolve_device(config.device)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def load_training_model(config: TrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The LM to train, in fp32 (the Trainer's mixed precision keeps fp32 master weights),
    loaded straight to ``training_device``, with the attention and checkpointing asked for.
    Pair methods then pick their layout from the attention implementation
    (``model.pairs.pair_collator``).
    """
    device = training_device(config)
    attn = resolve_attn(config.attn_implementation, device)
    lm, tokenizer = load_model(config.model, torch.float32, device, attn)
    if config.gradient_checkpointing:
        enable_checkpointing(lm)
    return lm, tokenizer


def enable_checkpointing(lm: PreTrainedModel) -> None:
    """Recompute each decoder layer's activations in the backward instead of keeping them:
    activation memory falls from all layers' to one layer's, for about a third more compute.
    Non-reentrant, so it works when only a control (an input-side tensor) requires grad."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # the name since transformers 5.x
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lm.config.use_cache = False
