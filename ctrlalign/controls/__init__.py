"""Controls: how a preference reaches the network. See ``base.Control``."""

from __future__ import annotations

from ctrlalign.controls.base import Control
from ctrlalign.controls.lora import LoraControl
from ctrlalign.controls.prompt import PromptControl
from ctrlalign.controls.soft_prompt import SoftPromptControl
from ctrlalign.controls.token import TokenControl

CONTROL_KINDS = ("prompt", "token", "soft-prompt", "lora")


def build_control(
    kind: str,
    preferences: list[str],
    *,
    prompt_texts: dict[str, str] | None = None,
    soft_prompt_length: int = 50,
    lora_rank: int = 4,
    lora_alpha: int | None = None,
) -> Control:
    if kind == "prompt":
        return PromptControl(preferences, prompt_texts)
    if kind == "token":
        return TokenControl(preferences)
    if kind == "soft-prompt":
        return SoftPromptControl(preferences, soft_prompt_length)
    if kind == "lora":
        return LoraControl(preferences, rank=lora_rank, alpha=lora_alpha)
    raise ValueError(f"unknown control kind {kind!r}; choose one of {', '.join(CONTROL_KINDS)}")


__all__ = ["CONTROL_KINDS", "Control", "build_control"]
