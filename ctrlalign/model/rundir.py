"""The run directory: everything ``generate`` needs, and nothing it must fetch again.

Layout::

    run.yaml        config, control kind, preferences, base model, what was trained
    control/        soft_prompts.safetensors | token_embeddings.safetensors | lora/<pref>/
    model/          the LM's weights and tokenizer, only when training changed them
    clm/            CLM: the identity layer alone (the base model is named, not copied)
    adapter/        DPO with --use-lora: the adapter in PEFT's format (base model named)
    metrics.json    losses, counts of dropped examples, timings
    checkpoints/    per-stage Trainer checkpoints while training (removed when done)

Artifacts are written to a staging folder and renamed into place, so an interrupted save
never leaves a run that looks complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import build_control, control_options
from ctrlalign.model.device import Placement
from ctrlalign.model.identity_layer import load_identity_layer, save_identity_layer
from ctrlalign.model.loading import load_model

RUN_FILE = "run.yaml"


class RunError(ValueError):
    """A folder that is not a (complete) run directory."""


@dataclass
class Run:
    model: ControlledLM
    tokenizer: PreTrainedTokenizerBase
    info: dict

    @property
    def preferences(self) -> list[str]:
        return self.info.get("preferences") or []


def _plain_state_dict(model: ControlledLM) -> dict:
    """The LM's own weights, without LoRA tensors, under the names transformers expects."""
    state = model.base.state_dict()
    if not isinstance(model.lm, PeftModel):
        return state
    return {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}


def save_run(
    directory: str | Path,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    info: dict,
    metrics: dict,
    save_lm: bool,
) -> Path:
    clm = model.clm
    adapter = model.control is None and isinstance(model.lm, PeftModel)
    if save_lm and clm is not None:
        raise ValueError("a CLM run stores its layer only; the base model is named, not copied")
    directory = Path(directory)
    staging = directory / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    flags = {"lm_saved": save_lm, "clm": clm is not None, "adapter": adapter}
    (staging / RUN_FILE).write_text(yaml.safe_dump({**info, **flags}, sort_keys=False))
    if clm is not None:
        (staging / "clm").mkdir()
        save_identity_layer(clm, staging / "clm")
    if adapter:
        model.lm.save_pretrained(str(staging / "adapter"))
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    if model.control is not None:
        (staging / "control").mkdir()
        model.control.save(staging / "control", model.lm)
    if save_lm:
        model.base.save_pretrained(staging / "model", state_dict=_plain_state_dict(model))
        tokenizer.save_pretrained(staging / "model")
    # run.yaml marks a complete run: drop the old one first and move the new one last, so
    # a crash while moving leaves a directory that load_run refuses rather than a mixed one.
    (directory / RUN_FILE).unlink(missing_ok=True)
    for child in sorted(staging.iterdir(), key=lambda c: c.name == RUN_FILE):
        target = directory / child.name
        if target.is_dir():
            shutil.rmtree(target)
        child.replace(target)
    staging.rmdir()
    return directory


def default_preference(info: dict) -> str | None:
    """The control a run answers under when none is asked for: its chosen one (CoH's
    "A good ..." prompt), else its first; None for a run without controls."""
    if not info.get("control"):
        return None
    return info.get("chosen") or info["preferences"][0]


def read_run_info(directory: str | Path) -> dict:
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise RunError(f"{directory} is not a run directory (no {RUN_FILE}); train one first")
    return yaml.safe_load(path.read_text())


def load_run(
    directory: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "auto",
) -> Run:
    """Rebuild the trained model and its controls from a run directory alone, on
    ``device`` in ``dtype`` (``auto``: bf16 on a GPU or CPU that computes it natively, else
    fp32; see ``model.device``)."""
    directory = Path(directory)
    info = read_run_info(directory)
    where = Placement.resolve(device, dtype, attn_implementation)
    lm_spec = str(directory / "model") if info.get("lm_saved") else info["model"]
    lm, tokenizer = load_model(lm_spec, where.dtype, where.device, where.attn_implementation)
    if info.get("clm"):
        load_identity_layer(lm, directory / "clm")
    if info.get("adapter"):
        lm = PeftModel.from_pretrained(lm, str(directory / "adapter"))
    control = None
    if info.get("control"):
        control = build_control(info["control"], info["preferences"], **control_options(info))
        lm = control.attach(lm, tokenizer)
        control.load(directory / "control", lm)
    model = ControlledLM(lm, control)
    model.eval()
    return Run(model, tokenizer, info)
