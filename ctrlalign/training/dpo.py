"""DPO recipe (``--method dpo``): the paper's strongest baseline, full fine-tuning or LoRA.

Why it is built this way, on CPU where matrix products are the whole cost:

- The reference model is the frozen starting model, and its log-probs are computed once,
  before training, and cached with each pair (and on disk, for resume): no second copy of
  the weights, no reference forward per step. With LoRA the reference is the same network
  with the adapter disabled; for CLM (``training/clm.py``) the identity layer skipped.
- The prompt shared by the chosen and the rejected response runs once: the prompts go
  through the decoder with a KV cache, the cache is repeated for both responses, and the
  responses run on top of it. Gradients flow back through the cache into the prompt, so
  the loss and its gradients are those of two full sequences (tested against TRL).
- Logits are computed only where a response token is predicted.

Batches use the Trainer through ``ControlTrainer``/``run_stage``, so checkpoints hold only
the trainable tensors and an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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
from transformers import DynamicCache, PreTrainedTokenizerBase

from ctrlalign.controlled_lm import ControlledLM
from ctrlalign.data import DataError, PreferenceData, Record, load_preference_data, split_records
from ctrlalign.models import load_model
from ctrlalign.rundir import save_run
from ctrlalign.training.batching import ExampleDataset, prompt_ids, response_ids
from ctrlalign.training.config import METHODS, PAIRWISE_METHODS, TrainConfig
from ctrlalign.training.losses import IGNORE_INDEX, dpo_sigmoid_loss, ipo_loss, sequence_logps
from ctrlalign.training.trainer import ControlTrainer, run_stage, training_arguments

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.safetensors"
PAIR_INPUTS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask")


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


def _pad(rows: Sequence[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [value] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompts (B rows) and responses interleaved chosen, rejected (2B rows)."""
    prompt, prompt_mask = _pad([e.prompt_ids for e in examples], pad_id)
    responses = [ids for e in examples for ids in (e.chosen_ids, e.rejected_ids)]
    response, response_mask = _pad(responses, pad_id)
    refs = torch.tensor([[e.ref_chosen, e.ref_rejected] for e in examples])
    return {
        "prompt_ids": prompt,
        "prompt_mask": prompt_mask,
        "response_ids": response,
        "response_mask": response_mask,
        "ref_logps": refs,
    }


class PairCollator:
    """Picklable collator for the Trainer's data loader."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[PairExample]) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, self.pad_id)


def pair_logps(
    model: ControlledLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected responses, the prompt run once."""
    decoder = model.base.get_decoder()
    batch, width = prompt_ids.shape
    device = prompt_ids.device
    cache = DynamicCache()
    prompt_hidden = decoder(
        inputs_embeds=model.embed(prompt_ids),
        attention_mask=prompt_mask,
        position_ids=torch.arange(width, device=device).expand(batch, width),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    lengths = prompt_mask.sum(-1)
    # the last prompt position predicts the first response token
    last = prompt_hidden[torch.arange(batch, device=device), lengths - 1].repeat_interleave(2, 0)
    cache.batch_repeat_interleave(2)
    steps = response_ids.shape[1]
    response_hidden = decoder(
        inputs_embeds=model.embed(response_ids),
        attention_mask=torch.cat([prompt_mask.repeat_interleave(2, 0), response_mask], -1),
        position_ids=lengths.repeat_interleave(2, 0)[:, None] + torch.arange(steps, device=device),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    hidden = torch.cat([last[:, None], response_hidden], 1)
    labels = response_ids.masked_fill(response_mask == 0, IGNORE_INDEX)
    labels = torch.cat([torch.full_like(labels[:, :1], IGNORE_INDEX), labels], 1)
    logps = sequence_logps(hidden, labels, model.base.get_output_embeddings())
    return logps[0::2], logps[1::2]


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
        save_file({**stored, key: table.contiguous()}, str(cache_file))
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
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        ref_logps: torch.Tensor,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        chosen, rejected = pair_logps(
            self.model, prompt_ids, prompt_mask, response_ids, response_mask
        )
        losses = self.pair_losses(chosen, rejected, ref_logps, response_mask)
        self._record(chosen, rejected, ref_logps)
        return {"loss": losses.mean(), "chosen_logps": chosen, "rejected_logps": rejected}

    def pair_losses(
        self,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        ref_logps: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-pair loss from policy and reference log-probs (``ref_logps``: B x 2)."""
        ref_logps = ref_logps.to(chosen.dtype)
        chosen_ratio, rejected_ratio = chosen - ref_logps[:, 0], rejected - ref_logps[:, 1]
        if self.loss_type == "ipo":
            lengths = response_mask.sum(-1)
            return ipo_loss(chosen_ratio, rejected_ratio, lengths[0::2], lengths[1::2], self.beta)
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
        losses.append(objective.pair_losses(chosen, rejected, refs, batch["response_mask"]))
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
