"""Conditional-LM recipes: MEET (two steps) and the controllable baselines it is compared to.

``coh`` (hand-written prompts, second step), ``special-token`` (one trainable token per
preference, second step), ``meet-prompt`` / ``meet-lora`` / ``meet-token`` (controls alone
with the LM frozen, then LM and controls together) and ``sft`` (preferred responses, no
controls) all optimise Eq. 1 of the paper; they differ only in the control and the steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ctrlalign.data.records import data_task
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control, control_options
from ctrlalign.training.config import TrainConfig
from ctrlalign.training.placement import load_training_model
from ctrlalign.training.splits import load_splits
from ctrlalign.training.stage import finish_run, fit_conditional


def train(config: TrainConfig) -> Path:
    """Train a conditional-LM method into ``config.output`` and return the run directory."""
    config.validate()
    started = time.time()
    torch.manual_seed(config.seed)
    train_data, eval_data = load_splits(config)
    lm, tokenizer = load_training_model(config)
    control = None
    if config.control_kind is not None:
        options = control_options(config.to_dict()) | {"task": data_task(train_data.records)}
        control = build_control(config.control_kind, train_data.preferences, **options)
        lm = control.attach(lm, tokenizer)
    model = ControlledLM(lm, control)

    def stage_params(stage: str) -> tuple[list[torch.nn.Parameter], list]:
        if stage == "first":  # the controls alone, the LM frozen (Eq. 2)
            return control.first_stage_parameters(lm), control.restrict_first_stage(lm)
        return list(model.parameters()), []

    metrics = fit_conditional(config, model, tokenizer, train_data, eval_data, stage_params)
    save_lm = "second" in config.stage_list
    return finish_run(config, model, tokenizer, train_data, metrics, started, save_lm)
