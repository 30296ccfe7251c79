"""CLM recipe (``--method clm``): train only an identity layer, then dial alignment at inference.

A copy of decoder layer 0 with zeroed output projections is inserted before it
(``ctrlalign.clm``); every other weight stays frozen. The default loss is DPO (as the CLM
paper reports), with the reference being the same network with the new layer skipped, so
no second model exists. ``--clm-loss lm`` trains the layer with the conditional LM loss on
the chosen responses instead. The run directory stores the layer alone and names the base
model, and ``generate --alpha`` mixes the two streams.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ctrlalign.clm import insert_identity_layer
from ctrlalign.controlled_lm import ControlledLM
from ctrlalign.data import PreferenceData
from ctrlalign.models import load_model
from ctrlalign.training.batching import Collator, ExampleDataset, encode_records
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.dpo import finish_run, fit_pairs, load_pairwise
from ctrlalign.training.meet import mean_response_nll
from ctrlalign.training.trainer import run_stage, training_arguments


def fit_lm(
    config: TrainConfig,
    model: ControlledLM,
    tokenizer,
    params: list[torch.nn.Parameter],
    train_data: PreferenceData,
    eval_data: PreferenceData,
) -> dict:
    """Eq. 1 without controls on the chosen responses, training ``params`` only."""
    chosen = train_data.chosen
    train_enc = encode_records(train_data.records, tokenizer, None, config.max_length, chosen)
    eval_enc = encode_records(eval_data.records, tokenizer, None, config.max_length, chosen)
    if not train_enc.examples:
        raise ValueError(f"no training example fits in max_length={config.max_length} tokens")
    stage_dir = Path(config.output) / "checkpoints" / "second"
    args = training_arguments(config, stage_dir, lr=config.lr_second, epochs=config.epochs)
    metrics: dict = {
        "train_examples": len(train_enc.examples),
        "eval_examples": len(eval_enc.examples),
        "dropped_too_long": train_enc.dropped_too_long + eval_enc.dropped_too_long,
        "dropped_while_loading": train_data.dropped,
        "stages": {},
    }
    metrics["stages"]["second"] = run_stage(
        model,
        params,
        stage_dir,
        args,
        ExampleDataset(train_enc.examples),
        Collator(tokenizer.pad_token_id),
    )
    if eval_enc.examples:
        scored = eval_enc.examples[: config.max_eval_examples]
        metrics["eval_loss"] = mean_response_nll(model, scored, tokenizer.pad_token_id)
    return metrics


def train(config: TrainConfig) -> Path:
    """Train ``--method clm`` into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    train_data, eval_data = load_pairwise(config)
    lm, tokenizer = load_model(config.model)
    layer = insert_identity_layer(lm)
    model = ControlledLM(lm)
    params = list(layer.parameters())
    fit = fit_pairs if config.clm_loss == "dpo" else fit_lm
    metrics = fit(config, model, tokenizer, params, train_data, eval_data)
    return finish_run(config, model, tokenizer, train_data, metrics, started, save_lm=False)
