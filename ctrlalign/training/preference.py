"""Fitting a model to (chosen, rejected) pairs with a preference objective: DPO and kin.

Shared by the ``dpo`` and ``clm`` recipes. Why it is built this way, on CPU where matrix
products are the whole cost:

- The reference model is the frozen starting model, and its log-probs are computed once,
  before training, and cached with each pair (and on disk, for resume): no second copy of
  the weights, no reference forward per step. With LoRA the reference is the same network
  with the adapter disabled; for CLM the identity layer skipped. A reference-free objective
  (SimPO) skips that pass.
- Each pair runs its prompt once (``model.pairs``: both responses in one row under a 4D
  mask), and logits are computed only where a response token is predicted.

Batches use the Trainer through ``ControlTrainer``/``run_stage``, so checkpoints hold only
the trainable tensors and an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainingArguments

from ctrlalign.data import PreferenceData
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.pairs import PairExample, batch_pair_logps, encode_pairs, pair_collator
from ctrlalign.training.checkpoints import read_record, save_tensors
from ctrlalign.training.config import ONLY_STEP, TrainConfig
from ctrlalign.training.guard import fingerprint
from ctrlalign.training.objectives import PAIR_OBJECTIVES, PairHyper, PairLogps
from ctrlalign.training.splits import data_metrics
from ctrlalign.training.stage import run_stage
from ctrlalign.training.trainer import ControlTrainer, training_arguments

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.safetensors"


def reference(model: ControlledLM) -> contextlib.AbstractContextManager:
    """The frozen starting model inside this block: CLM layer skipped, LoRA disabled, or
    (full fine-tuning, before the first step) the model itself."""
    if model.clm is not None:
        return model.clm.rows(False)
    if isinstance(model.lm, PeftModel):
        return model.lm.disable_adapter()
    return contextlib.nullcontext()


def pairs_fingerprint(examples: Sequence[PairExample], context: str = "") -> str:
    """The cache key of a pair set's reference log-probs: its token ids, plus ``context``
    (what else decides the values: the model and its precision)."""
    digest = hashlib.sha1(context.encode())
    for e in examples:
        digest.update(repr((e.prompt_ids, e.chosen_ids, e.rejected_ids)).encode())
    return digest.hexdigest()


def reference_context(config: TrainConfig, args: TrainingArguments) -> str:
    """What the reference log-probs depend on besides the token ids: the model (by content
    fingerprint, so a changed local model never reuses old values), its dtype, LoRA."""
    return f"{fingerprint(config.model)}|bf16={args.bf16}|lora={config.use_lora}"


@torch.no_grad()
def with_reference_logps(
    model: ControlledLM,
    examples: list[PairExample],
    pad_id: int,
    batch_size: int = 8,
    cache_file: Path | None = None,
    context: str = "",
) -> tuple[list[PairExample], float]:
    """Attach the reference log-probs to every pair; one no-grad pass, cached on disk
    under the pairs' token ids and ``context`` (see ``pairs_fingerprint``), with the
    seconds it took in the file's record. Also returns those seconds when the values come
    from the cache (0 when the pass ran now): a run resumed in a later sitting still
    counts a pass an earlier one paid for."""
    key = pairs_fingerprint(examples, context)
    if cache_file is not None and cache_file.is_file():
        stored = load_file(str(cache_file))
        if key in stored:
            earlier = read_record(cache_file).get("seconds", {}).get(key, 0.0)
            return _attach(examples, stored[key]), earlier
    started = time.monotonic()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = pair_collator(model.config._attn_implementation)
    refs = []
    with reference(model):
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            chosen, rejected = batch_pair_logps(model, batch)
            refs.append(torch.stack([chosen, rejected], -1).cpu())
    model.train(was_training)
    table = torch.cat(refs) if refs else torch.zeros(0, 2)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        stored, seconds = {}, {}
        if cache_file.is_file():
            stored, seconds = load_file(str(cache_file)), read_record(cache_file).get("seconds", {})
        seconds[key] = time.monotonic() - started
        # written aside and renamed: processes of a distributed run write the same values
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        save_tensors({**stored, key: table.contiguous()}, tmp, {"seconds": seconds})
        os.replace(tmp, cache_file)
    return _attach(examples, table), 0.0


def _attach(examples: list[PairExample], table: torch.Tensor) -> list[PairExample]:
    return [
        replace(e, ref_chosen=float(c), ref_rejected=float(r))
        for e, (c, r) in zip(examples, table.tolist(), strict=True)
    ]


class PairPreferenceObjective(nn.Module):
    """A preference loss (DPO, IPO, SimPO: ``PAIR_OBJECTIVES``) of a ``ControlledLM`` on a
    pair batch, as one module the Trainer steps. Per-batch reward statistics are kept for
    ``PairTrainer`` to log."""

    #: the Trainer passes ``num_items_in_batch``, the pairs of the global batch (gathered
    #: over accumulation and processes by ``PairTrainer``), so the loss is a true mean over
    #: that batch however its micro-batches are sized
    accepts_loss_kwargs = True

    def __init__(
        self,
        model: ControlledLM,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        simpo_gamma: float = 0.5,
    ):
        super().__init__()
        self.model = model
        self.objective = PAIR_OBJECTIVES[loss_type]
        self.hyper = PairHyper(beta, label_smoothing, simpo_gamma)
        self.stats: dict[str, list[float]] = defaultdict(list)

    @property
    def beta(self) -> float:
        return self.hyper.beta

    def forward(
        self,
        ref_logps: torch.Tensor,
        response_lengths: torch.Tensor,
        pair_weights: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **batch: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The summed pair losses over ``num_items_in_batch`` (by default this batch's
        pairs: the mean); ``pair_weights`` 0 marks a copy that counts for nothing."""
        chosen, rejected = batch_pair_logps(self.model, batch)
        policy, ref = self.logps(chosen, rejected, ref_logps, response_lengths)
        losses = self.objective.loss(policy, ref, self.hyper)
        if pair_weights is not None:
            losses = losses * pair_weights.to(losses.dtype)
        if num_items_in_batch is None:
            num_items_in_batch = len(losses) if pair_weights is None else pair_weights.sum()
        # a copy that counts for nothing is recorded too: every process must have stats to
        # join PairTrainer.log's mean (it only nudges that step's logged reward means)
        self._record(policy, ref)
        loss = losses.sum() / num_items_in_batch
        return {"loss": loss, "chosen_logps": chosen, "rejected_logps": rejected}

    def logps(
        self,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        ref_logps: torch.Tensor,
        response_lengths: torch.Tensor,
    ) -> tuple[PairLogps, PairLogps | None]:
        """Policy and reference log-probs (``ref_logps`` B x 2 as chosen, rejected)."""
        lengths = response_lengths.to(chosen.device)
        policy = PairLogps(chosen, rejected, lengths[:, 0], lengths[:, 1])
        if self.objective.reference_free:
            return policy, None
        ref_logps = ref_logps.to(chosen.dtype)
        return policy, PairLogps(ref_logps[:, 0], ref_logps[:, 1], lengths[:, 0], lengths[:, 1])

    def pair_losses(
        self,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        ref_logps: torch.Tensor,
        response_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Per-pair loss from policy and reference log-probs."""
        policy, ref = self.logps(chosen, rejected, ref_logps, response_lengths)
        return self.objective.loss(policy, ref, self.hyper)

    def rewards(self, policy: PairLogps, ref: PairLogps | None) -> tuple[torch.Tensor, ...]:
        """The objective's implicit (chosen, rejected) rewards."""
        return self.objective.rewards(policy, ref, self.hyper)

    @torch.no_grad()
    def _record(self, policy: PairLogps, ref: PairLogps | None) -> None:
        good, bad = self.rewards(policy, ref)
        for name, value in (
            ("rewards/chosen", good.mean()),
            ("rewards/rejected", bad.mean()),
            ("rewards/accuracies", (good > bad).float().mean()),
            ("rewards/margins", (good - bad).mean()),
            ("logps/chosen", policy.chosen.mean()),
            ("logps/rejected", policy.rejected.mean()),
        ):
            self.stats[name].append(float(value))

    def pop_stats(self) -> dict[str, float]:
        out = {k: round(sum(v) / len(v), 4) for k, v in self.stats.items() if v}
        self.stats.clear()
        return out


def pair_count(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pairs of a collated batch that count (``pair_weights``, else all of them)."""
    if "pair_weights" in batch:
        return batch["pair_weights"].sum()
    return torch.tensor(float(len(batch["ref_logps"])))


def mask_pairs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pair batch that counts for nothing (``batching``): every pair weighs zero."""
    return {**batch, "pair_weights": torch.zeros(len(batch["ref_logps"]))}


class PairTrainer(ControlTrainer):
    """Adds DPO's reward accuracy, margins and log-probs to each training log line (averaged
    over processes), so they reach ``--report-to`` beside the loss and learning rate; the
    loss is normalised by the pairs of the global batch (``_get_num_items_in_batch``)."""

    mask_batch = staticmethod(mask_pairs)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The pairs of this optimiser step, over its micro-batches and (as the Trainer
        counts tokens) over processes; it then scales the loss by the process count, which
        DDP's and FSDP's gradient mean divides out."""
        if not batch_samples:
            return None
        count = sum(pair_count(batch) for batch in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        objective = self.accelerator.unwrap_model(self.model)
        if "loss" in logs and isinstance(objective, PairPreferenceObjective):
            stats = objective.pop_stats()
            if stats and self.accelerator.num_processes > 1:
                # every process logs at the same steps, so all take part in this mean
                values = torch.tensor(list(stats.values()), device=self.accelerator.device)
                values = self.accelerator.reduce(values, reduction="mean")
                stats = {k: round(v, 4) for k, v in zip(stats, values.tolist(), strict=True)}
            logs = {**logs, **stats}
        super().log(logs, *args, **kwargs)


@torch.no_grad()
def evaluate_pairs(
    objective: PairPreferenceObjective,
    examples: list[PairExample],
    pad_id: int,
    batch_size: int = 8,
) -> dict[str, float]:
    """Held-out loss, reward accuracy and margin (reference log-probs attached when the
    objective needs them)."""
    was_training = objective.training
    objective.eval()
    device = next(objective.parameters()).device
    collate = pair_collator(objective.model.config._attn_implementation)
    losses, margins = [], []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        chosen, rejected = batch_pair_logps(objective.model, batch)
        policy, ref = objective.logps(
            chosen, rejected, batch["ref_logps"], batch["response_lengths"]
        )
        losses.append(objective.objective.loss(policy, ref, objective.hyper))
        good, bad = objective.rewards(policy, ref)
        margins.append(good - bad)
    objective.train(was_training)
    margin = torch.cat(margins)
    return {
        "eval_loss": round(float(torch.cat(losses).mean()), 5),
        "eval_reward_accuracy": round(float((margin > 0).float().mean()), 4),
        "eval_reward_margin": round(float(margin.mean()), 5),
    }


def encode_splits(
    config: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    train_data: PreferenceData,
    eval_data: PreferenceData,
) -> tuple[list[PairExample], list[PairExample], tuple[int, int]]:
    """Training pairs, the held-out pairs scored (``--max-eval-examples``), and how many
    training and held-out pairs were dropped as longer than ``--max-length``."""
    chosen, rejected = train_data.chosen, train_data.rejected
    train_pairs, dropped = encode_pairs(
        train_data.records, tokenizer, chosen, rejected, config.max_length
    )
    eval_pairs, eval_dropped = encode_pairs(
        eval_data.records, tokenizer, chosen, rejected, config.max_length
    )
    eval_pairs = eval_pairs[: config.max_eval_examples]
    if not train_pairs:
        raise ValueError(f"no training pair fits in max_length={config.max_length} tokens")
    log.info(
        "%d training pairs (%d dropped: longer than %d tokens), %d held out",
        len(train_pairs),
        dropped,
        config.max_length,
        len(eval_pairs),
    )
    return train_pairs, eval_pairs, (dropped, eval_dropped)


def fit_pairs(
    config: TrainConfig,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    params: list[nn.Parameter],
    train_data: PreferenceData,
    eval_data: PreferenceData,
) -> dict:
    """Encode, attach reference log-probs (unless the objective is reference-free), train
    ``params`` with the objective of ``--loss-type``, evaluate."""
    run_dir = Path(config.output)
    pad = tokenizer.pad_token_id
    train_pairs, eval_pairs, dropped = encode_splits(config, tokenizer, train_data, eval_data)
    stage_dir = run_dir / "checkpoints" / ONLY_STEP
    args = training_arguments(config, stage_dir, lr=config.learning_rate, epochs=config.epochs)
    started = time.time()
    cache = run_dir / "checkpoints" / REFERENCE_FILE
    context = reference_context(config, args)
    # on the training device, under the training precision, so step 0 has zero log-ratios
    model.to(args.device)
    earlier = 0.0  # the part of the reference pass an earlier sitting ran
    if not PAIR_OBJECTIVES[config.loss_type].reference_free:
        with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            train_pairs, train_earlier = with_reference_logps(
                model, train_pairs, pad, config.micro_batch_size, cache, context
            )
            eval_pairs, eval_earlier = with_reference_logps(
                model, eval_pairs, pad, config.micro_batch_size, cache, context
            )
        earlier = round(train_earlier + eval_earlier, 1)
    metrics = data_metrics(len(train_pairs), len(eval_pairs), dropped, train_data)
    metrics["reference_seconds"] = round(time.time() - started + earlier, 1)
    metrics["reference_seconds_earlier_sittings"] = earlier
    objective = PairPreferenceObjective(
        model, config.beta, config.loss_type, config.label_smoothing, config.simpo_gamma
    )
    metrics["stages"][ONLY_STEP] = run_stage(
        objective,
        params,
        stage_dir,
        args,
        train_pairs,
        partial(pair_collator(model.config._attn_implementation), pad_id=pad),
        trainer_cls=PairTrainer,
    )
    if eval_pairs:
        metrics.update(evaluate_pairs(objective, eval_pairs, pad, config.micro_batch_size))
    return metrics
