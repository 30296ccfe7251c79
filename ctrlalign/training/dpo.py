"""DPO recipe (``--method dpo``): the paper's strongest baseline, full fine-tuning or LoRA.

Why it is built this way, on CPU where matrix products are the whole cost:

- The reference model is the frozen starting model, and its log-probs are computed once,
  before training, and cached with each pair (and on disk, for resume): no second copy of
  the weights, no reference forward per step. With LoRA the reference is the same network
  with the adapter disabled; for CLM (``training/clm.py``) the identity layer skipped.
- The prompt shared by the chosen and the rejected response runs once: each pair is one
  row ``[prompt][chosen][rejected]`` in which both responses are positioned right after
  the prompt and a 4D attention mask keeps each response from seeing the other, so the
  loss and its gradients are those of two full sequences (tested against TRL) with the
  prompt computed once, and padding is per pair rather than per sequence.
- Logits are computed only where a response token is predicted.

Batches use the Trainer through ``ControlTrainer``/``run_stage``, so checkpoints hold only
the trainable tensors and an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from ctrlalign.controlled_lm import ControlledLM
from ctrlalign.data import DataError, PreferenceData, Record, load_preference_data, split_records
from ctrlalign.models import load_model
from ctrlalign.rundir import save_run
from ctrlalign.training.batching import ExampleDataset, prompt_ids, response_ids
from ctrlalign.training.config import METHODS, PAIRWISE_METHODS, TrainConfig
from ctrlalign.training.losses import dpo_sigmoid_loss, ipo_loss
from ctrlalign.training.trainer import ControlTrainer, run_stage, training_arguments

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.safetensors"
PAIR_INPUTS = ("input_ids", "position_ids", "segment_ids", "source", "targets", "owner")


@dataclass(frozen=True)
class PairExample:
    """Token ids of one prompt and its two responses (each ending in eos), and the
    reference model's summed log-probs of the responses once they are computed."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def load_pairwise(config: TrainConfig) -> tuple[PreferenceData, PreferenceData]:
    """Train and held-out records; pointwise data fails here, before anything is written."""
    data = load_preference_data(
        config.data, levels=config.levels, chosen=config.chosen, rejected=config.rejected
    )
    if not data.pairwise:
        pointwise = [m for m in METHODS if m not in PAIRWISE_METHODS]
        raise DataError(
            f"--method {config.method} learns from (chosen, rejected) pairs, but {config.data} "
            f"is pointwise (preferences {data.preferences}); methods that accept pointwise "
            f"data: {', '.join(pointwise)}"
        )
    train_data, eval_data = split_records(data, config.eval_fraction, config.seed)
    if config.max_examples is not None:
        train_data.records = train_data.records[: config.max_examples]
    return train_data, eval_data


def encode_pairs(
    records: Iterable[Record],
    tokenizer: PreTrainedTokenizerBase,
    chosen: str,
    rejected: str,
    max_length: int,
) -> tuple[list[PairExample], int]:
    """Pairs in the layout MEET and generation use; pairs whose prompt plus longer response
    exceed ``max_length`` are dropped (and counted), as for the other recipes."""
    examples, dropped = [], 0
    for record in records:
        prompt = prompt_ids(tokenizer, record.chat)
        good = response_ids(tokenizer, record.responses[chosen])
        bad = response_ids(tokenizer, record.responses[rejected])
        if len(prompt) + max(len(good), len(bad)) > max_length:
            dropped += 1
        else:
            examples.append(PairExample(prompt, good, bad))
    return examples, dropped


PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, -1


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, ``[prompt][chosen][rejected]``, both responses positioned right after
    the prompt; ``segment_ids`` tell the attention mask which tokens see which.

    ``source``/``targets``/``owner`` list every response token: the flat position of the
    hidden state that predicts it, the token, and its sequence (2i chosen, 2i + 1 rejected).
    """
    width = max(len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    ids, positions, segments, source, targets, owner = [], [], [], [], [], []
    for row, e in enumerate(examples):
        p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
        pad = width - p - c - r
        ids.append(e.prompt_ids + e.chosen_ids + e.rejected_ids + [pad_id] * pad)
        positions.append([*range(p + c), *range(p, p + r), *[0] * pad])
        segments.append([PROMPT] * p + [CHOSEN] * c + [REJECTED] * r + [PAD] * pad)
        base = row * width
        # the last prompt position predicts the first token of both responses
        source += [base + p - 1, *range(base + p, base + p + c - 1)]
        source += [base + p - 1, *range(base + p + c, base + p + c + r - 1)]
        targets += e.chosen_ids + e.rejected_ids
        owner += [2 * row] * c + [2 * row + 1] * r
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.tensor(positions),
        "segment_ids": torch.tensor(segments),
        "source": torch.tensor(source),
        "targets": torch.tensor(targets),
        "owner": torch.tensor(owner),
        "response_lengths": torch.tensor(
            [[len(e.chosen_ids), len(e.rejected_ids)] for e in examples]
        ),
        "ref_logps": torch.tensor([[e.ref_chosen, e.ref_rejected] for e in examples]),
    }


class PairCollator:
    """Picklable collator for the Trainer's data loader."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[PairExample]) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, self.pad_id)


def pair_attention_mask(segment_ids: torch.Tensor, attn_implementation: str, dtype) -> torch.Tensor:
    """4D mask: causal, and a response sees the prompt and itself, never the other response.

    Padding queries see the prompt (never an empty row, which would give NaN). ``sdpa``
    takes the boolean mask; other implementations get it additive in the model's dtype.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(
            f"DPO's shared-prompt forward needs a 4D attention mask, which {attn_implementation!r}"
            " attention does not take; load the model with attn_implementation='sdpa'"
        )
    width = segment_ids.shape[1]
    index = torch.arange(width, device=segment_ids.device)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    allowed = (index[None, :] <= index[:, None]) & ((key == PROMPT) | (key == query)) & (key != PAD)
    allowed = allowed[:, None]
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def pair_logps(
    model: ControlledLM,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    segment_ids: torch.Tensor,
    source: torch.Tensor,
    targets: torch.Tensor,
    owner: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected responses, each prompt run once."""
    config = model.config
    embeds = model.embed(input_ids)
    mask = pair_attention_mask(segment_ids, config._attn_implementation, embeds.dtype)
    hidden = (
        model.base.get_decoder()(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
        )
        .last_hidden_state.flatten(0, 1)
        .index_select(0, source)
    )
    logits = model.base.get_output_embeddings()(hidden).float()
    logps = -F.cross_entropy(logits, targets, reduction="none")
    sums = torch.zeros(2 * input_ids.shape[0], dtype=logps.dtype, device=logps.device)
    sums = sums.index_add(0, owner, logps)
    return sums[0::2], sums[1::2]


def reference(model: ControlledLM) -> contextlib.AbstractContextManager:
    """The frozen starting model inside this block: CLM layer skipped, LoRA disabled, or
    (full fine-tuning, before the first step) the model itself."""
    if model.clm is not None:
        return model.clm.rows(False)
    if isinstance(model.lm, PeftModel):
        return model.lm.disable_adapter()
    return contextlib.nullcontext()


def pairs_fingerprint(examples: Sequence[PairExample]) -> str:
    digest = hashlib.sha1()
    for e in examples:
        digest.update(repr((e.prompt_ids, e.chosen_ids, e.rejected_ids)).encode())
    return digest.hexdigest()


@torch.no_grad()
def with_reference_logps(
    model: ControlledLM,
    examples: list[PairExample],
    pad_id: int,
    batch_size: int = 8,
    cache_file: Path | None = None,
) -> list[PairExample]:
    """Attach the reference log-probs to every pair; one no-grad pass, cached on disk."""
    key = pairs_fingerprint(examples)
    if cache_file is not None and cache_file.is_file():
        stored = load_file(str(cache_file))
        if key in stored:
            return [
                replace(e, ref_chosen=float(c), ref_rejected=float(r))
                for e, (c, r) in zip(examples, stored[key].tolist(), strict=True)
            ]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    refs = []
    with reference(model):
        for start in range(0, len(examples), batch_size):
            batch = collate_pairs(examples[start : start + batch_size], pad_id)
            chosen, rejected = pair_logps(model, *(batch[k].to(device) for k in PAIR_INPUTS))
            refs.append(torch.stack([chosen, rejected], -1).cpu())
    model.train(was_training)
    table = torch.cat(refs) if refs else torch.zeros(0, 2)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        stored = load_file(str(cache_file)) if cache_file.is_file() else {}
        # written aside and renamed: processes of a distributed run write the same values
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        save_file({**stored, key: table.contiguous()}, str(tmp))
        os.replace(tmp, cache_file)
    return [
        replace(e, ref_chosen=float(c), ref_rejected=float(r))
        for e, (c, r) in zip(examples, table.tolist(), strict=True)
    ]


class DPOObjective(nn.Module):
    """The DPO/IPO loss of a ``ControlledLM`` on a pair batch, as one module the Trainer
    steps. Per-batch reward statistics are kept for ``PairTrainer`` to log."""

    #: the loss is a mean over pairs, so the Trainer must divide by accumulation steps
    accepts_loss_kwargs = False

    def __init__(
        self,
        model: ControlledLM,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.stats: dict[str, list[float]] = defaultdict(list)

    def forward(
        self,
        ref_logps: torch.Tensor,
        response_lengths: torch.Tensor,
        **batch: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        chosen, rejected = pair_logps(self.model, *(batch[k] for k in PAIR_INPUTS))
        losses = self.pair_losses(chosen, rejected, ref_logps, response_lengths)
        self._record(chosen, rejected, ref_logps)
        return {"loss": losses.mean(), "chosen_logps": chosen, "rejected_logps": rejected}

    def pair_losses(
        self,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        ref_logps: torch.Tensor,
        response_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Per-pair loss from policy and reference log-probs (both B x 2 as chosen, rejected)."""
        ref_logps = ref_logps.to(chosen.dtype)
        chosen_ratio, rejected_ratio = chosen - ref_logps[:, 0], rejected - ref_logps[:, 1]
        if self.loss_type == "ipo":
            lengths = response_lengths
            return ipo_loss(chosen_ratio, rejected_ratio, lengths[:, 0], lengths[:, 1], self.beta)
        return dpo_sigmoid_loss(chosen_ratio, rejected_ratio, self.beta, self.label_smoothing)

    @torch.no_grad()
    def _record(self, chosen, rejected, ref_logps) -> None:
        good = self.beta * (chosen - ref_logps[:, 0])
        bad = self.beta * (rejected - ref_logps[:, 1])
        for name, value in (
            ("rewards/chosen", good.mean()),
            ("rewards/rejected", bad.mean()),
            ("rewards/accuracies", (good > bad).float().mean()),
            ("rewards/margins", (good - bad).mean()),
            ("logps/chosen", chosen.mean()),
            ("logps/rejected", rejected.mean()),
        ):
            self.stats[name].append(float(value))

    def pop_stats(self) -> dict[str, float]:
        out = {k: round(sum(v) / len(v), 4) for k, v in self.stats.items() if v}
        self.stats.clear()
        return out


class PairTrainer(ControlTrainer):
    """Adds DPO's reward accuracy, margins and log-probs to each training log line."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        objective = self.accelerator.unwrap_model(self.model)
        if "loss" in logs and isinstance(objective, DPOObjective):
            logs = {**logs, **objective.pop_stats()}
        super().log(logs, *args, **kwargs)


@torch.no_grad()
def evaluate_pairs(
    objective: DPOObjective, examples: list[PairExample], pad_id: int, batch_size: int = 8
) -> dict[str, float]:
    """Held-out DPO loss, reward accuracy and margin (reference log-probs attached)."""
    was_training = objective.training
    objective.eval()
    device = next(objective.parameters()).device
    losses, margins = [], []
    for start in range(0, len(examples), batch_size):
        batch = {
            k: v.to(device)
            for k, v in collate_pairs(examples[start : start + batch_size], pad_id).items()
        }
        chosen, rejected = pair_logps(objective.model, *(batch[k] for k in PAIR_INPUTS))
        refs = batch["ref_logps"]
        losses.append(objective.pair_losses(chosen, rejected, refs, batch["response_lengths"]))
        margins.append(objective.beta * ((chosen - refs[:, 0]) - (rejected - refs[:, 1])))
    objective.train(was_training)
    margin = torch.cat(margins)
    return {
        "eval_loss": round(float(torch.cat(losses).mean()), 5),
        "eval_reward_accuracy": round(float((margin > 0).float().mean()), 4),
        "eval_reward_margin": round(float(margin.mean()), 5),
    }


def fit_pairs(
    config: TrainConfig,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    params: list[nn.Parameter],
    train_data: PreferenceData,
    eval_data: PreferenceData,
) -> dict:
    """Encode, attach reference log-probs, train ``params`` with DPO/IPO, evaluate."""
    run_dir = Path(config.output)
    pad = tokenizer.pad_token_id
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
    stage_dir = run_dir / "checkpoints" / "second"
    args = training_arguments(config, stage_dir, lr=config.lr_second, epochs=config.epochs)
    started = time.time()
    cache = run_dir / "checkpoints" / REFERENCE_FILE
    # on the training device, under the training precision, so step 0 has zero log-ratios
    model.to(args.device)
    with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        train_pairs = with_reference_logps(model, train_pairs, pad, config.micro_batch_size, cache)
        eval_pairs = with_reference_logps(model, eval_pairs, pad, config.micro_batch_size, cache)
    metrics: dict = {
        "train_examples": len(train_pairs),
        "eval_examples": len(eval_pairs),
        "dropped_too_long": dropped + eval_dropped,
        "dropped_while_loading": train_data.dropped,
        "reference_seconds": round(time.time() - started, 1),
        "stages": {},
    }
    objective = DPOObjective(model, config.beta, config.loss_type, config.label_smoothing)
    metrics["stages"]["second"] = run_stage(
        objective,
        params,
        stage_dir,
        args,
        ExampleDataset(train_pairs),
        PairCollator(pad),
        trainer_cls=PairTrainer,
    )
    if eval_pairs:
        metrics.update(evaluate_pairs(objective, eval_pairs, pad, config.micro_batch_size))
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
    """Write the run directory and drop the checkpoints (unless asked to keep them)."""
    run_dir = Path(config.output)
    metrics["seconds"] = round(time.time() - started, 1)
    info = {
        **config.to_dict(),
        "control": None,
        "chosen": data.chosen,
        "rejected": data.rejected,
        "stages_run": ["second"],
    }
    save_run(run_dir, model, tokenizer, info, metrics, save_lm=save_lm)
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return run_dir


def train(config: TrainConfig) -> Path:
    """Train ``--method dpo`` into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    train_data, eval_data = load_pairwise(config)
    lm, tokenizer = load_model(config.model)
    if config.use_lora:
        lm = get_peft_model(
            lm,
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        params = [p for n, p in lm.named_parameters() if "lora_" in n]
    else:
        params = list(lm.parameters())
    model = ControlledLM(lm)
    metrics = fit_pairs(config, model, tokenizer, params, train_data, eval_data)
    return finish_run(
        config, model, tokenizer, train_data, metrics, started, save_lm=not config.use_lora
    )
