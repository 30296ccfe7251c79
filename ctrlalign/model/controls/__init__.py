"""Controls: how a preference reaches the network. See ``base.Control``.

``CONTROL_KINDS`` is the registry (kind name to class); ``CONTROL_OPTIONS`` the run settings
(``TrainConfig`` fields, ``run.yaml`` keys) that control constructors read, so training and
``load_run`` build a control from the same settings in the same way; ``task`` (the data's,
``data.records.data_task``) is the one a recipe adds, for defaults that follow the data.
"""

from __future__ import annotations

from collections.abc import Mapping

from ctrlalign.model.controls.base import Blend, Control
from ctrlalign.model.controls.lora import LoraControl
from ctrlalign.model.controls.prompt import PromptControl
from ctrlalign.model.controls.soft_prompt import SoftPromptControl
from ctrlalign.model.controls.token import TokenControl

CONTROL_KINDS: dict[str, type[Control]] = {
    cls.kind: cls for cls in (PromptControl, TokenControl, SoftPromptControl, LoraControl)
}
CONTROL_OPTIONS = (
    "prompt_texts",
    "soft_prompt_length",
    "soft_prompt_init",
    "lora_rank",
    "lora_alpha",
    "task",
)


def control_options(settings: Mapping[str, object]) -> dict[str, object]:
    """The control settings among a run's settings (a config dict or ``run.yaml``)."""
    return {k: settings[k] for k in CONTROL_OPTIONS if settings.get(k) is not None}


def build_control(kind: str, preferences: list[str], **options: object) -> Control:
    """A control of ``kind`` for ``preferences``; ``options`` are ``CONTROL_OPTIONS`` keys."""
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control kind {kind!r}; choose one of {', '.join(CONTROL_KINDS)}")
    unknown = sorted(set(options) - set(CONTROL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown control options {unknown}; known: {list(CONTROL_OPTIONS)}")
    return CONTROL_KINDS[kind].from_options(list(preferences), options)


__all__ = [
    "CONTROL_KINDS",
    "CONTROL_OPTIONS",
    "Blend",
    "Control",
    "build_control",
    "control_options",
]
