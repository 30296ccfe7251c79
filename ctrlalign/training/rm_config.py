"""``RewardModelConfig``: every ``train-rm`` flag, light to import so the CLI parser stays fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class RewardModelConfig:
    """Every ``train-rm`` flag; ``--config FILE.yaml`` takes the same keys."""

    data: str = ""
    output: str = ""
    model: str = "smollm2"
    epochs: float = 1.0
    batch_size: int = 16
    micro_batch_size: int = 8
    lr: float = 1e-5
    max_length: int = 512
    max_steps: int = -1
    max_examples: int | None = None
    eval_fraction: float = 0.1
    seed: int = 42
    logging_steps: int = 10

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no training data: pass --data KIND:PATH (pairwise)")
        if not self.output:
            raise ValueError("no output folder: pass --output DIR")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> RewardModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RewardModelConfig:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        return cls.from_dict({k.replace("-", "_"): v for k, v in values.items()}, str(path))
