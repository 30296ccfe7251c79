"""Training recipes, one file per method family; ``train_any`` picks the recipe."""

from __future__ import annotations

from pathlib import Path

from ctrlalign.training.config import TrainConfig


def train_any(config: TrainConfig) -> Path:
    if config.method == "dpo":
        from ctrlalign.training import dpo

        return dpo.train(config)
    if config.method == "clm":
        from ctrlalign.training import clm

        return clm.train(config)
    from ctrlalign.training import meet

    return meet.train(config)


__all__ = ["TrainConfig", "train_any"]
