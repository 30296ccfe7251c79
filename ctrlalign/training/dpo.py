"""DPO recipe (``--method dpo``): the paper's strongest baseline, full fine-tuning or LoRA.

The pair layout, the cached reference log-probs and the objectives (DPO, IPO, SimPO by
``--loss-type``) are in ``preference.py``; this recipe picks what trains: every weight, or
with ``--use-lora`` one adapter (the reference is then the network with it disabled).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from peft import get_peft_model

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls.lora import lora_config
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.placement import load_training_model
from ctrlalign.training.preference import fit_pairs
from ctrlalign.training.splits import load_splits
from ctrlalign.training.stage import finish_run


def train(config: TrainConfig) -> Path:
    """Train ``--method dpo`` into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    train_data, eval_data = load_splits(config)
    lm, tokenizer = load_training_model(config)
    if config.use_lora:
        lm = get_peft_model(lm, lora_config(config.lora_rank, config.lora_alpha))
        params = [p for n, p in lm.named_parameters() if "lora_" in n]
    else:
        params = list(lm.parameters())
    model = ControlledLM(lm)
    metrics = fit_pairs(config, model, tokenizer, params, train_data, eval_data)
    return finish_run(
        config, model, tokenizer, train_data, metrics, started, save_lm=not config.use_lora
    )
