"""``ctrlalign train-rm``: a Bradley-Terry reward model on pairwise data, to use as a judge.

The paper judges with OpenAssistant's DeBERTa reward model, which needs the network. This
recipe trains a stand-in on the same base models as the policies (a one-logit
sequence-classification head on ``smollm2``, ``tiny`` or any HF model) with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), and saves a plain Hugging Face
folder that ``RewardModel`` (and so the ``rm:`` judge) loads. Inputs are encoded by
``encode_for_reward``, the layout scoring uses, so the model is trained on exactly what it
will read when judging.

Its held-out pairwise accuracy and reward gaps go to ``metrics.json``: a small reward model
is a weak judge, and a report using one must say how weak (the judge reports the share of
gaps inside its tie band).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ctrlalign.data import Record, load_preference_data, split_records
from ctrlalign.data.records import judge_prompt
from ctrlalign.model.loading import load_tokenizer, smollm2_dir, tiny_model
from ctrlalign.model.reward import RewardModel, encode_for_reward
from ctrlalign.training.config import RewardModelConfig
from ctrlalign.training.objectives import bradley_terry_loss
from ctrlalign.training.placement import precision

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def load_reward_model(spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-logit sequence classifier over a base-model spec, its head freshly initialised.

    ``tiny`` is the test model's two small layers with a score head; ``smollm2`` the default
    model's converted folder; anything else a HF id or folder. The pad id is set because
    decoder classifiers find each row's last real token through it.
    """
    tokenizer = load_tokenizer(spec)
    if spec == "tiny":
        config = tiny_model(tokenizer).config
        config.num_labels = 1
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(config)
    else:
        source = smollm2_dir() if spec == "smollm2" else spec
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=torch.float32
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class RewardPairCollator:
    """Chosen rows first, then rejected rows, in one padded batch: one forward per step."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, pairs: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        prompts = [pair["prompt"] for pair in pairs]
        answers = [pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs]
        return encode_for_reward(self.tokenizer, prompts + prompts, answers, self.max_length)


class BradleyTerryTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = model(**inputs).logits[:, 0]
        chosen, rejected = rewards.chunk(2)
        loss = bradley_terry_loss(chosen, rejected)
        return (loss, {"rewards": rewards}) if return_outputs else loss


def _pairs(records: list[Record], chosen: str, rejected: str) -> list[dict[str, str]]:
    return [
        {
            "prompt": judge_prompt(r),
            "chosen": r.responses[chosen],
            "rejected": r.responses[rejected],
        }
        for r in records
    ]


def is_trained(directory: str | Path) -> bool:
    """A finished ``train-rm`` folder: weights and metrics are written last, together."""
    return (Path(directory) / METRICS_FILE).is_file()


def held_out_metrics(folder: Path, pairs: list[dict[str, str]], max_length: int) -> dict:
    """Pairwise accuracy and reward gaps (chosen minus rejected) on held-out pairs, scored
    as a judge will score them."""
    if not pairs:
        return {"eval_pairs": 0}
    model = RewardModel(folder, max_length=max_length)
    prompts = [pair["prompt"] for pair in pairs]
    chosen = model.score(prompts, [pair["chosen"] for pair in pairs])
    rejected = model.score(prompts, [pair["rejected"] for pair in pairs])
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "eval_pairs": len(pairs),
        "pairwise_accuracy": sum(gap > 0 for gap in gaps) / len(gaps),
        "eval_reward_gaps": [round(gap, 5) for gap in gaps],
    }


def train_reward_model(config: RewardModelConfig) -> Path:
    """Train into ``config.output`` (a finished folder is returned untouched) and return it."""
    config.validate()
    output = Path(config.output)
    if is_trained(output):
        log.info("%s already holds a trained reward model; not training again", output)
        return output
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} exists and is not a reward model folder; pick a new --output")
    started = time.time()
    data = load_preference_data(config.data)
    if not data.pairwise:
        raise ValueError(f"{config.data}: train-rm needs pairwise data (chosen and rejected)")
    train_data, eval_data = split_records(data, config.eval_fraction, config.seed)
    train_pairs = _pairs(train_data.records[: config.max_examples], data.chosen, data.rejected)
    eval_pairs = _pairs(eval_data.records, data.chosen, data.rejected)
    if not train_pairs:
        raise ValueError(f"{config.data}: no training pairs left after the held-out split")

    model, tokenizer = load_reward_model(config.model)
    staging = output.with_name(output.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(staging / "checkpoints"),
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // config.micro_batch_size,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="no",
        remove_unused_columns=False,
        report_to="none",
        seed=config.seed,
        **precision(config.device, config.dtype),
    )
    trainer = BradleyTerryTrainer(
        model=model,
        args=args,
        train_dataset=train_pairs,
        data_collator=RewardPairCollator(tokenizer, config.max_length),
    )
    result = trainer.train()
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "train_rm.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    metrics = {
        "train_pairs": len(train_pairs),
        **held_out_metrics(staging, eval_pairs, config.max_length),
        "train_loss": result.training_loss,
        "dropped_while_loading": data.dropped,
        "seconds": round(time.time() - started, 1),
    }
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    if output.exists():
        output.rmdir()
    staging.rename(output)
    return output
