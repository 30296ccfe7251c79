"""What every recipe shares: its data, a Trainer that checkpoints only what trains, the
stage runner, the conditional-LM objective and the run finisher.

The Trainer's own checkpoint format assumes a ``PreTrainedModel``; ours is a control plus
an LM of which often only the control trains, so checkpoints hold the trainable tensors
(a few KB for a soft prompt instead of the whole model) plus the Trainer's optimizer,
scheduler and RNG state, which is what ``resume_from_checkpoint`` needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ctrlalign.data import DataError, PreferenceData, Record, load_preference_data, split_records
from ctrlalign.data.io import write_atomic
from ctrlalign.data.records import blend_parts
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.device import resolve_attn, resolve_device
from ctrlalign.model.layout import (
    Example,
    collate,
    collate_packed,
    encode_records,
)
from ctrlalign.model.loading import load_model
from ctrlalign.model.logprobs import count_labels
from ctrlalign.model.rundir import save_run
from ctrlalign.training.batching import StepBatchSampler, StepDataset, collate_steps, mask_labels
from ctrlalign.training.config import METHODS, TrainConfig, under_zero3
from ctrlalign.training.memory import peak_memory
from ctrlalign.training.objectives import conditional_lm_loss

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STAGE_DONE_FILE = "final.safetensors"
CHECKPOINT_DONE_FILE = "checkpoint_complete"


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


def whole_parameters(model: nn.Module) -> contextlib.AbstractContextManager:
    """Under ZeRO-3 a process holds only its partition of each weight outside that module's
    forward; the run directory is written inside this gathering (a collective: every
    process enters it), as TRL gathers for generation. Elsewhere the weights are whole."""
    if not under_zero3():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


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
    #: turns a collated micro-batch into one that counts for nothing (``batching``)
    mask_batch = staticmethod(mask_labels)

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
        that resuming would load. A marker written after the last file makes it whole, and
        older checkpoints go only after that: one whole checkpoint exists at every instant."""
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        run_dir = Path(self._get_output_dir(trial=trial))
        current = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        write_atomic(current / CHECKPOINT_DONE_FILE, "")
        for old in run_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if old != current:
                shutil.rmtree(old, ignore_errors=True)

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
        save_file(tensors, os.path.join(output_dir, TRAINABLE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None):
        model = self.accelerator.unwrap_model(model or self.model)
        load_trainable_state(model, Path(resume_from_checkpoint) / TRAINABLE_FILE)


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


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def set_trainable(model: nn.Module, params: list[nn.Parameter]) -> int:
    """Freeze everything but ``params``; returns the number of trainable values."""
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def precision(device: str, dtype: str) -> dict[str, bool]:
    """``TrainingArguments`` keywords for ``--device`` and ``--dtype``: mixed precision keeps
    fp32 master weights and computes in ``dtype`` (auto: bf16 on a GPU that has it)."""
    cuda = torch.cuda.is_available() and device != "cpu"
    bf16 = dtype == "bfloat16" or (dtype == "auto" and cuda and torch.cuda.is_bf16_supported())
    return {
        "bf16": bf16,
        "fp16": dtype == "float16",
        "use_cpu": not cuda,
        "dataloader_pin_memory": cuda,
    }


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
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // per_step,
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float below 1: the share of the steps
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


def training_device(config: TrainConfig) -> torch.device:
    """Where this process loads the model to train: its own GPU (``LOCAL_RANK`` under
    accelerate launch), or the CPU when told so, when there is no GPU, or under FSDP and
    DeepSpeed, which shard the model from the CPU copy themselves."""
    sharded = any(
        os.environ.get(v, "").lower() in ("1", "true")
        for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )
    if config.device == "cpu" or not torch.cuda.is_available() or sharded:
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
    result = trainer.train(resume_from_checkpoint=last_whole_checkpoint(stage_dir))
    tensors = trained_state(trainer, model)
    if trainer.args.should_save:
        tmp = stage_dir / (STAGE_DONE_FILE + ".tmp")
        save_file(tensors, str(tmp))
        tmp.rename(done)
    metrics = dict(result.metrics)
    metrics["trainable_parameters"] = n_trainable
    metrics["log_history"] = trainer.state.log_history
    return metrics


def select_preferences(data: PreferenceData, wanted: list[str] | None) -> PreferenceData:
    """Keep only the responses of the wanted preferences (all of them by default)."""
    if not wanted:
        return data
    unknown = sorted(set(wanted) - set(data.preferences))
    if unknown:
        raise ValueError(f"preferences {unknown} are not in the data, which has {data.preferences}")
    keep = set(wanted)
    records = [
        Record(r.messages, _kept_responses(r.responses, keep), r.reference, r.source)
        for r in data.records
    ]
    records = [r for r in records if r.responses]
    return PreferenceData(
        records, list(wanted), data.pairwise, data.chosen, data.rejected, dict(data.dropped)
    )


def _kept_responses(responses: dict[str, str], keep: set[str]) -> dict[str, str]:
    """The responses of the kept preferences; a joint record's blend key
    (``a-1+b-0``) keeps its kept parts."""
    kept = {}
    for key, text in responses.items():
        parts = [p for p in blend_parts(key, list(keep)) if p in keep]
        if parts:
            kept["+".join(parts)] = text
    return kept


def load_splits(config: TrainConfig) -> tuple[PreferenceData, PreferenceData]:
    """Train and held-out records, checked against what the method needs before any work."""
    data = load_preference_data(
        config.data,
        levels=config.levels,
        chosen=config.chosen,
        rejected=config.rejected,
        joint=config.joint_attributes,
    )
    data = select_preferences(data, config.preferences)
    method = METHODS[config.method]
    if method.pairwise and not data.pairwise:
        pointwise = [name for name, m in METHODS.items() if not m.pairwise]
        raise DataError(
            f"--method {config.method} learns from (chosen, rejected) pairs, but {config.data} "
            f"is pointwise (preferences {data.preferences}); methods that accept pointwise "
            f"data: {', '.join(pointwise)}"
        )
    if method.control is None and data.chosen not in data.preferences:
        raise DataError(
            f"--method {config.method} trains on the chosen responses, but {config.data} has "
            f"no preference {config.chosen!r} (it has {data.preferences}): pass --chosen NAME"
        )
    train_data, eval_data = split_records(data, config.eval_fraction, config.seed)
    if config.max_examples is not None:
        train_data.records = train_data.records[: config.max_examples]
    return train_data, eval_data


class ConditionalLMObjective(nn.Module):
    """Eq. 1 on a ``ControlledLM``, as the module the Trainer steps."""

    #: tells the Trainer to pass ``num_items_in_batch`` so the loss is a true token mean
    #: over the global batch, across gradient accumulation and processes
    accepts_loss_kwargs = True

    def __init__(self, model: ControlledLM):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        preference_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        position_ids: torch.Tensor | None = None,
        sequence_ids: torch.Tensor | None = None,
        prefix_blocks: torch.Tensor | None = None,
        token_preference_ids: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        if sequence_ids is not None:  # collate_packed: attention stays inside each example
            attention_mask = self.model.packed_mask(sequence_ids)
        logps, _rows = self.model.token_logps(
            input_ids,
            attention_mask,
            labels,
            prefix_mask,
            preference_ids,
            position_ids,
            prefix_blocks,
            token_preference_ids,
        )
        if num_items_in_batch is None:
            num_items_in_batch = count_labels(labels)
        return {"loss": conditional_lm_loss(logps, num_items_in_batch)}


@torch.no_grad()
def mean_response_nll(
    model: ControlledLM, examples: Sequence[Example], pad_id: int, batch_size: int = 8
) -> float:
    """Token-averaged loss of Eq. 1 on held-out examples, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {
            k: v.to(device)
            for k, v in collate(examples[start : start + batch_size], pad_id).items()
        }
        logps, _ = model.token_logps(
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            batch["prefix_mask"],
            batch["preference_ids"],
        )
        total -= logps.sum().item()
        count += int(count_labels(batch["labels"]))
    model.train(was_training)
    return total / max(count, 1)


def data_metrics(
    train_count: int, eval_count: int, dropped_too_long: int, data: PreferenceData
) -> dict:
    """The counts every run reports: what trained, what was held out, what was dropped."""
    return {
        "train_examples": train_count,
        "eval_examples": eval_count,
        "dropped_too_long": dropped_too_long,
        "dropped_while_loading": data.dropped,
        "stages": {},
    }


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
    dropped = train_enc.dropped_too_long + eval_enc.dropped_too_long
    metrics = data_metrics(len(train_enc.examples), len(eval_enc.examples), dropped, train_data)
    collator = conditional_collator(config, tokenizer.pad_token_id)
    for stage in config.stage_list:
        first = stage == "first"
        params, handles = stage_params(stage)
        stage_dir = Path(config.output) / "checkpoints" / stage
        args = training_arguments(
            config,
            stage_dir,
            lr=config.lr_first if first else config.lr_second,
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
    metrics["seconds"] = round(time.time() - started, 1)
    metrics |= peak_memory()
    info = {
        **config.to_dict(),
        "control": config.control_kind,
        # what the data offered (the controls, or sft's choice among them); pair methods
        # keep the flag's value, as they have no controls to name
        "preferences": config.preferences if METHODS[config.method].pairwise else data.preferences,
        "chosen": data.chosen,
        "rejected": data.rejected,
        "stages_run": config.stage_list,
    }
    with whole_parameters(model):
        if is_main_process():
            save_run(run_dir, model, tokenizer, info, metrics, save_lm=save_lm)
    if not is_main_process():
        return run_dir
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return run_dir
