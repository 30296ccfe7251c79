"""Recipe configurations: one shared base, help text beside every field (TRL's way).

CLI flags and ``--config FILE.yaml`` share these keys: the CLI builds one flag per field,
with the field's ``help``. ``METHODS`` is the recipe registry: a method's control kind,
default steps, recipe module and whether it needs pairs.

``TrainConfig`` defaults are the MEET paper's (appendix A): 5 epochs per step, batch 64, max
input 512, lr 1e-3 for the control-only first step and 2e-5 for the joint second step (and
for the one step of dpo and clm).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from ctrlalign.data.readers import KINDS
from ctrlalign.model.loading import BUILTIN_SPECS, portable_spec
from ctrlalign.training.distributed import under_zero3
from ctrlalign.training.objectives import PAIR_OBJECTIVES

#: the step of the methods that train in one step of their own (dpo, clm), not in MEET's
#: first or second; its folder is ``checkpoints/main``, its rate ``learning_rate``
ONLY_STEP = "main"


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its help text (a ``default_factory`` for mutable defaults)."""
    if isinstance(default, dict | list):
        kwargs["default_factory"] = lambda: type(default)(default)
    else:
        kwargs["default"] = default
    return field(metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class Method:
    """One ``--method``: what it conditions on, which steps it runs, where its recipe is."""

    control: str | None
    #: MEET's ``first``, ``second`` or ``both`` (``--stages`` picks among them), or
    #: ``ONLY_STEP`` for a method without MEET's steps
    stages: str
    #: the recipe that runs the method: its key in ``ctrlalign.training.RECIPES`` (a module
    #: of ``ctrlalign.training`` with ``train(config)``)
    recipe: str
    #: learns from (chosen, rejected) pairs; every other method reads pointwise data too
    pairwise: bool = False


METHODS: dict[str, Method] = {
    "coh": Method("prompt", "second", "conditional"),
    "special-token": Method("token", "second", "conditional"),
    "meet-prompt": Method("soft-prompt", "both", "conditional"),
    "meet-lora": Method("lora", "both", "conditional"),
    "meet-token": Method("token", "both", "conditional"),
    "sft": Method(None, "second", "conditional"),
    "dpo": Method(None, ONLY_STEP, "dpo", pairwise=True),
    "clm": Method(None, ONLY_STEP, "clm", pairwise=True),
}
STAGES = ("first", "second", "both")
CLM_LOSSES = ("dpo", "lm")


def upgrade_settings(values: dict) -> dict:
    """``TrainConfig`` keys as an older ctrlalign wrote them (``settings.json``, ``run.yaml``)
    or as an older command line gives them, read as today's: dpo and clm trained in MEET's
    ``second`` step at ``lr_second`` before they had a step of their own, so there
    ``lr_second`` is their ``learning_rate`` and ``stages: second`` their one step."""
    method = METHODS.get(values.get("method", TrainConfig.method))
    if method is None or method.stages != ONLY_STEP:
        return values
    values = dict(values)
    lr = values.pop("lr_second", None)
    if lr is not None and "learning_rate" not in values:
        values["learning_rate"] = lr
    if values.get("stages") == "second":
        values["stages"] = None
    return values


def _check_placement(device: str, dtype: str) -> None:
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N] to train, got {device!r}")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")


class ConfigBase:
    """Dict and YAML round-trips with clear errors, shared by every recipe's config."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config"):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        return cls.from_dict({str(k).replace("-", "_"): v for k, v in values.items()}, str(path))

    def _check_batch(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )


@dataclass
class TrainConfig(ConfigBase):
    """Every ``ctrlalign train`` flag."""

    data: str = option("", f"KIND:PATH, KIND one of {', '.join(KINDS)} (hf: a hub id)")
    output: str = option("", "run directory to create (or resume)")
    method: str = option("meet-lora", f"one of {', '.join(METHODS)}")
    model: str = option(
        "smollm2", f"Hugging Face id, local folder or built in: {', '.join(BUILTIN_SPECS)}"
    )
    stages: str | None = option(
        None,
        f"one of {', '.join(STAGES)} (first: controls only, second: LM + controls); "
        "default: the method's",
    )
    preferences: list[str] | None = option(
        None, "comma-separated preferences to train (default: all in the data)"
    )
    prompt_texts: dict[str, str] = option(
        {}, "hand-written prompt per preference: good='A good answer is',bad=..."
    )
    soft_prompt_length: int = option(50, "meet-prompt: soft prompt tokens per preference")
    soft_prompt_init: dict[str, str] = option(
        {}, "meet-prompt: start a preference's soft prompt from a text: good='A good summary is'"
    )
    lora_rank: int = option(4, "meet-lora, dpo --use-lora: LoRA rank")
    lora_alpha: int | None = option(None, "LoRA scaling alpha (default: twice the rank)")
    epochs: float = option(5.0, "epochs of the second (or only) step")
    first_epochs: float | None = option(None, "epochs of the first step (default: --epochs)")
    batch_size: int = option(64, "examples per optimiser step (across accumulation, processes)")
    micro_batch_size: int = option(8, "examples per forward on each device")
    lr_first: float = option(1e-3, "learning rate of the first step (controls only)")
    lr_second: float = option(
        2e-5, "learning rate of the second step (LM + controls; the only one of coh, sft, ...)"
    )
    learning_rate: float = option(
        2e-5, "dpo, clm: learning rate of their one step (MEET's: --lr-first, --lr-second)"
    )
    warmup_ratio: float = option(0.0, "share of the steps spent warming the learning rate up")
    max_length: int = option(512, "longest example in tokens; longer ones are dropped, counted")
    packing: bool = option(
        False,
        "conditional-LM methods: pack each micro-batch's examples (of any preferences: "
        "LoRA routes each token through its own adapter) into rows of at most --max-length "
        "tokens instead of padding; same loss, fewer padding tokens computed",
    )
    max_steps: int = option(-1, "stop each step after this many optimiser steps (-1: epochs)")
    max_examples: int | None = option(None, "train on the first N records only")
    eval_fraction: float = option(0.05, "share of records held out (never trained on)")
    max_eval_examples: int = option(
        256, "held-out examples scored for eval_loss (the first N); default 256"
    )
    levels: int = option(2, "scores data: quantise scores into this many preference levels")
    joint_attributes: bool = option(
        False,
        "attributes data: train each response under the controls of all its attribute levels "
        "at once (a blend), so inference may ask for any combination; off: one record per "
        "attribute",
    )
    chosen: str = option("good", "the preferred preference (pairwise data, sft, dpo)")
    rejected: str = option("bad", "the dispreferred preference (pairwise data, dpo)")
    seed: int = option(42, "seed of the split, the initialisation and the data order")
    save_steps: int = option(50, "write a resumable checkpoint every N optimiser steps")
    logging_steps: int = option(5, "log the loss every N optimiser steps")
    keep_checkpoints: bool = option(False, "keep checkpoints/ after the run is saved")
    overwrite: bool = option(
        False, "clear --output first (a rerun with other settings is refused without it)"
    )
    device: str = option(
        "auto", "auto (GPUs when present, one per process under accelerate launch) or cpu"
    )
    dtype: str = option(
        "auto",
        "auto (bf16 mixed precision on a GPU that has it, else fp32), float32, bfloat16, float16",
    )
    attn_implementation: str = option(
        "auto", "auto (FlashAttention-2 on CUDA when installed, else sdpa), eager, sdpa"
    )
    gradient_checkpointing: bool = option(
        False, "recompute activations in the backward pass: less memory, ~30% more compute"
    )
    report_to: str = option(
        "none", "where the Trainer logs (loss, lr, reward margins, tokens): tensorboard, wandb,..."
    )
    beta: float = option(0.1, "dpo/clm: KL strength (tau for IPO, reward scale for SimPO)")
    loss_type: str = option("sigmoid", f"dpo/clm: pair loss, one of {', '.join(PAIR_OBJECTIVES)}")
    label_smoothing: float = option(
        0.0, "dpo/clm: label flip probability in [0, 0.5) (conservative DPO)"
    )
    simpo_gamma: float = option(0.5, "simpo: target reward margin gamma")
    use_lora: bool = option(False, "dpo: train a LoRA adapter of --lora-rank, not every weight")
    clm_loss: str = option("dpo", f"clm: the identity layer's loss, one of {', '.join(CLM_LOSSES)}")

    def __post_init__(self) -> None:
        self.model = portable_spec(self.model)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        return super().from_dict(upgrade_settings(values), source)

    @property
    def control_kind(self) -> str | None:
        return METHODS[self.method].control

    @property
    def report_list(self) -> list[str]:
        """``--report-to`` as ``TrainingArguments`` takes it: ``tensorboard,wandb`` -> a list."""
        return [r.strip() for r in self.report_to.split(",") if r.strip()] or ["none"]

    @property
    def stage_list(self) -> list[str]:
        stages = self.stages or METHODS[self.method].stages
        return ["first", "second"] if stages == "both" else [stages]

    def stage_lr(self, stage: str) -> float:
        """The learning rate of ``stage``: MEET's first or second, or ``ONLY_STEP``."""
        rates = {"first": self.lr_first, "second": self.lr_second, ONLY_STEP: self.learning_rate}
        return rates[stage]

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.stages is not None and self.stages not in STAGES:
            raise ValueError(f"--stages must be one of {', '.join(STAGES)}, got {self.stages!r}")
        if METHODS[self.method].stages == ONLY_STEP:
            if self.stages is not None:
                raise ValueError(f"{self.method} trains one step of its own; --stages is MEET's")
        elif self.learning_rate != TrainConfig.learning_rate:
            raise ValueError(
                f"--learning-rate is the rate of dpo and clm; {self.method} trains at "
                "--lr-first and --lr-second"
            )
        if not self.data:
            raise ValueError("no training data: pass --data KIND:PATH")
        if not self.output:
            raise ValueError("no run directory: pass --output DIR")
        if self.max_eval_examples < 1:
            raise ValueError(f"--max-eval-examples must be >= 1, got {self.max_eval_examples}")
        # passed as TrainingArguments' warmup_steps, read below 1 as a share of the steps
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        self._check_batch()
        _check_placement(self.device, self.dtype)
        known = ("all", "none", *INTEGRATION_TO_CALLBACK)
        unknown = [r for r in self.report_list if r not in known]
        if unknown:
            raise ValueError(f"--report-to {','.join(unknown)}: choose from {', '.join(known)}")
        if self.control_kind == "prompt" and "first" in self.stage_list:
            raise ValueError("prompt controls have nothing to train in the first step")
        if self.control_kind is None and "first" in self.stage_list:
            raise ValueError(f"{self.method} has no controls, so no first step")
        if under_zero3() and len(self.stage_list) > 1:
            # the second step's engine would partition weights the first one already
            # partitioned (DeepSpeed asserts on a parameter still in flight; seen on an H200)
            raise ValueError(
                f"{self.method} trains two steps, which DeepSpeed ZeRO-3 cannot run in one "
                "launch: pass --stages first or --stages second, or launch with "
                "configs/accelerate/zero2.yaml or fsdp.yaml"
            )
        if self.packing and METHODS[self.method].recipe != "conditional":
            raise ValueError(
                f"--packing is for the conditional-LM methods; {self.method} picks its pair "
                "layout from the attention implementation (packed under FlashAttention-2)"
            )
        self._validate_preference_options()

    def _validate_preference_options(self) -> None:
        if self.loss_type not in PAIR_OBJECTIVES:
            raise ValueError(f"--loss-type must be one of {', '.join(PAIR_OBJECTIVES)}")
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


@dataclass
class RewardModelConfig(ConfigBase):
    """Every ``ctrlalign train-rm`` flag."""

    data: str = option("", f"KIND:PATH of (chosen, rejected) pairs, KIND one of {', '.join(KINDS)}")
    output: str = option("", "folder for the reward model (a Hugging Face model folder)")
    model: str = option(
        "smollm2", f"base model: Hugging Face id, local folder or one of {', '.join(BUILTIN_SPECS)}"
    )
    epochs: float = option(1.0, "training epochs")
    batch_size: int = option(16, "pairs per optimiser step")
    micro_batch_size: int = option(8, "pairs per forward")
    lr: float = option(1e-5, "learning rate")
    max_length: int = option(512, "tokens per (prompt, answer) input; longer ones are cut")
    max_steps: int = option(-1, "stop after this many optimiser steps (-1: epochs)")
    max_examples: int | None = option(None, "train on the first N pairs only")
    eval_fraction: float = option(0.1, "share of pairs held out for pairwise accuracy")
    seed: int = option(42, "seed of the split, the head's initialisation and the data order")
    logging_steps: int = option(10, "log the loss every N optimiser steps")
    device: str = option("auto", "auto (a GPU when present) or cpu")
    dtype: str = option("auto", "auto (bf16 mixed precision on a GPU that has it), float32, ...")

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no training data: pass --data KIND:PATH (pairwise)")
        _check_placement(self.device, self.dtype)
        if not self.output:
            raise ValueError("no output folder: pass --output DIR")
        self._check_batch()
