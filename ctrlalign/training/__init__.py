"""Training recipes, one file per method family; ``train_any`` picks the recipe."""

from __future__ import annotations

from pathlib import Path

from ctrlalign.training.config import TrainConfig


def train_any(config: TrainConfig) -> Path:
    from ctrlalign.training import meet

    return meet.train(config)


__all__ = ["TrainConfig", "train_any"]
