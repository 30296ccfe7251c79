"""The interface every control kind implements.

A control turns "answer with preference p" into something the network sees: extra prompt
tokens (``prompt``, ``token``), learned input embeddings (``soft-prompt``) or a LoRA adapter
(``lora``). The training recipes and the generator only talk to this interface, so a batch
may mix preferences whatever the kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Control(nn.Module):
    """Per-preference conditioning; subclasses override what their kind needs."""

    kind: str = ""
    #: whether each preference runs through its own weights (``use``, ``per_row`` route them)
    per_preference_weights: bool = False

    def __init__(self, preferences: list[str]):
        super().__init__()
        if len(preferences) < 2:
            raise ValueError(f"a control needs at least two preferences, got {preferences}")
        self.preferences = list(preferences)

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        """Build from run settings (``CONTROL_OPTIONS``); each kind reads the keys it takes."""
        return cls(preferences)

    def index(self, preference: str) -> int:
        try:
            return self.preferences.index(preference)
        except ValueError:
            raise ValueError(
                f"unknown preference {preference!r}; this run knows {self.preferences}"
            ) from None

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """Prepare the LM (and tokenizer) for this control; returns the LM to use from now on."""
        return lm

    def prefix_ids(self, preference: str) -> list[int]:
        """Token ids placed before the prompt for this preference."""
        return []

    def embed(self, embeds: torch.Tensor, prefix_mask: torch.Tensor, pref_ids: torch.Tensor):
        """Replace the embeddings at prefix positions; only soft prompts need this."""
        return embeds

    @contextlib.contextmanager
    def use(self, preference: str) -> Iterator[None]:
        """Activate one preference's own weights (LoRA) for the duration of a forward."""
        yield

    @contextlib.contextmanager
    def per_row(self, preferences: Sequence[str] | torch.Tensor) -> Iterator[None]:
        """Send batch row i through the weights of ``preferences[i]`` (a name, or an index
        into ``self.preferences``) for the forwards inside, so a batch mixing preferences
        is one forward. Kinds without per-preference weights reach each row through its
        input (prefix tokens, embeddings), so they have nothing to route."""
        yield

    def first_stage_parameters(self, lm: PreTrainedModel) -> list[nn.Parameter]:
        """What the first MEET step trains while every LM weight stays frozen."""
        raise ValueError(f"{self.kind} controls have nothing to train in the first step")

    def restrict_first_stage(self, lm: PreTrainedModel) -> list:
        """Hooks for controls whose trainable part lives inside a frozen LM tensor.

        Returns removable handles; the recipe removes them when the first step ends.
        """
        return []

    def suppressed_token_ids(self) -> list[int]:
        """Ids generation must never emit (control tokens are inputs, not outputs)."""
        return []

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        """Write what a run directory needs to rebuild this control."""

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        """Restore the state written by ``save`` into an attached control."""
