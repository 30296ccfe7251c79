"""One configuration for every recipe; CLI flags and ``--config FILE.yaml`` share its keys.

Defaults are the MEET paper's (appendix A): 5 epochs per step, batch 64, max input 512,
lr 1e-3 for the control-only first step and 2e-5 for the joint second step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ctrlalign.models import portable_spec

#: method -> (control kind or None, default stages)
METHODS: dict[str, tuple[str | None, str]] = {
    "coh": ("prompt", "second"),
    "special-token": ("token", "second"),
    "meet-prompt": ("soft-prompt", "both"),
    "meet-lora": ("lora", "both"),
    "meet-token": ("token", "both"),
    "sft": (None, "second"),
    "dpo": (None, "second"),
    "clm": (None, "second"),
}
STAGES = ("first", "second", "both")
#: methods that learn from (chosen, rejected) pairs; every other method reads pointwise data too
PAIRWISE_METHODS = ("dpo", "clm")
DPO_LOSSES = ("sigmoid", "ipo")
CLM_LOSSES = ("dpo", "lm")


@dataclass
class TrainConfig:
    data: str = ""
    output: str = ""
    method: str = "meet-lora"
    model: str = "smollm2"
    #: overrides the method's default stages (``first``/``second`` are the paper's ablations)
    stages: str | None = None
    #: restrict to these preferences (default: every preference the data has)
    preferences: list[str] | None = None
    prompt_texts: dict[str, str] = field(default_factory=dict)
    soft_prompt_length: int = 50
    lora_rank: int = 4
    lora_alpha: int | None = None
    epochs: float = 5.0
    first_epochs: float | None = None
    batch_size: int = 64
    micro_batch_size: int = 8
    lr_first: float = 1e-3
    lr_second: float = 2e-5
    warmup_ratio: float = 0.0
    max_length: int = 512
    max_steps: int = -1
    max_examples: int | None = None
    eval_fraction: float = 0.05
    #: held-out examples scored for eval_loss (the first N): a large held-out split is for
    #: evaluating generations, and scoring all of it would cost more than small trainings
    max_eval_examples: int = 256
    levels: int = 2
    chosen: str = "good"
    rejected: str = "bad"
    seed: int = 42
    save_steps: int = 50
    logging_steps: int = 5
    keep_checkpoints: bool = False
    #: DPO / CLM: KL strength (tau for IPO); the DPO paper's default
    beta: float = 0.1
    #: DPO / CLM: ``sigmoid`` (DPO) or ``ipo``
    loss_type: str = "sigmoid"
    #: DPO / CLM: probability that a label is flipped (conservative DPO); sigmoid loss only
    label_smoothing: float = 0.0
    #: DPO: train a LoRA adapter of rank ``lora_rank`` instead of every weight
    use_lora: bool = False
    #: CLM: train the identity layer with ``dpo`` (the paper) or the conditional LM loss ``lm``
    clm_loss: str = "dpo"

    def __post_init__(self) -> None:
        self.model = portable_spec(self.model)

    @property
    def control_kind(self) -> str | None:
        return METHODS[self.method][0]

    @property
    def stage_list(self) -> list[str]:
        stages = self.stages or METHODS[self.method][1]
        return ["first", "second"] if stages == "both" else [stages]

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.stages is not None and self.stages not in STAGES:
            raise ValueError(f"--stages must be one of {', '.join(STAGES)}, got {self.stages!r}")
        if not self.data:
            raise ValueError("no training data: pass --data KIND:PATH")
        if not self.output:
            raise ValueError("no run directory: pass --output DIR")
        if self.max_eval_examples < 1:
            raise ValueError(f"--max-eval-examples must be >= 1, got {self.max_eval_examples}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )
        if self.control_kind == "prompt" and "first" in self.stage_list:
            raise ValueError("prompt controls have nothing to train in the first step")
        if self.control_kind is None and "first" in self.stage_list:
            raise ValueError(f"{self.method} has no controls, so no first step")
        self._validate_preference_options()

    def _validate_preference_options(self) -> None:
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"--loss-type must be one of {', '.join(DPO_LOSSES)}")
        if self.clm_loss not in CLM_LOSSES:
            raise ValueError(f"--clm-loss must be one of {', '.join(CLM_LOSSES)}")
        if self.beta <= 0:
            raise ValueError(f"--beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"--label-smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("--label-smoothing applies to the sigmoid loss only")
        if self.use_lora and self.method != "dpo":
            raise ValueError("--use-lora applies to --method dpo (meet-lora has its own adapters)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        with open(path) as fh:
            values = yaml.safe_load(fh) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        return cls.from_dict({k.replace("-", "_"): v for k, v in values.items()}, str(path))
