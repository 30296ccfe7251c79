"""CLM recipe (``--method clm``): train only an identity layer, then dial alignment at inference.

A copy of decoder layer 0 with zeroed output projections is inserted before it
(``model.identity_layer``); every other weight stays frozen. The default loss is DPO (as the
CLM paper reports), with the reference being the same network with the new layer skipped,
so no second model exists. ``--clm-loss lm`` trains the layer with the conditional LM loss
on the chosen responses instead. The run directory stores the layer alone and names the
base model, and ``generate --alpha`` mixes the two streams.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.identity_layer import insert_identity_layer
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.placement import load_training_model
from ctrlalign.training.preference import fit_pairs
from ctrlalign.training.splits import load_splits
from ctrlalign.training.stage import finish_run, fit_conditional


def train(config: TrainConfig) -> Path:
    """Train ``--method clm`` into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    train_data, eval_data = load_splits(config)
    lm, tokenizer = load_training_model(config)
    layer = insert_identity_layer(lm)
    model = ControlledLM(lm)
    params = list(layer.parameters())
    if config.clm_loss == "dpo":
        metrics = fit_pairs(config, model, tokenizer, params, train_data, eval_data)
    else:
        metrics = fit_conditional(
            config, model, tokenizer, train_data, eval_data, lambda stage: (params, [])
        )
    return finish_run(config, model, tokenizer, train_data, metrics, started, save_lm=False)
