"""Training: configs, objectives, the shared stage runner, one file per recipe.

``train_any`` runs the recipe that ``METHODS`` (the registry in ``config``) names for a
method, from ``RECIPES``: the recipe modules imported by name here, so every arrow is one
import-linter sees; a new method is a recipe module with ``train(config)``, its line in
``RECIPES`` and one in ``METHODS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ctrlalign.training import clm, conditional, dpo, guard
from ctrlalign.training.config import METHODS, RewardModelConfig, TrainConfig
from ctrlalign.training.memory import reset_peak

RECIPES: dict[str, Callable[[TrainConfig], Path]] = {
    "conditional": conditional.train,
    "dpo": dpo.train,
    "clm": clm.train,
}


def train_any(config: TrainConfig) -> Path:
    """Train ``config.method`` into ``config.output``; returns the run directory.

    The output is claimed first (``guard``): one process at a time, and a rerun resumes
    only the run of the same settings; a finished one is returned as it is.
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose one of {', '.join(METHODS)}")
    config.validate()
    recipe = RECIPES[METHODS[config.method].recipe]
    with guard.claim(config) as finished:
        if finished:
            return Path(config.output)
        reset_peak()  # finish_run records the run's own peak memory
        return recipe(config)


__all__ = ["METHODS", "RECIPES", "RewardModelConfig", "TrainConfig", "train_any"]
