"""The interface every control kind implements.

A control turns "answer with preference p" into something the network sees: extra prompt
tokens (``prompt``, ``token``), learned input embeddings (``soft-prompt``) or a LoRA adapter
(``lora``). The training recipes and the generator only talk to this interface, so a batch
may mix preferences whatever the kind.

A ``Blend`` asks for several preferences at once. Composed natively, the controls are put
one after another (prompts, tokens, soft prompts: ``prefix_ids`` concatenated, in the
blend's order) or their LoRA deltas summed with the blend's weights; composed by logits,
each preference gets a stream of its own (``inference.dial``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Blend:
    """Several preferences asked for at once, each with a weight (hashable, ordered)."""

    parts: tuple[tuple[str, float], ...]

    def __post_init__(self):
        if not self.parts:
            raise ValueError("a blend needs at least one preference")
        names = [name for name, _ in self.parts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"preferences given more than once in a blend: {repeated}")
        for name, weight in self.parts:
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"weight of {name!r} must be a number, got {weight!r}")
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"weight of {name!r} must be a positive number, got {weight}")

    @classmethod
    def parse(cls, text: str) -> Blend:
        """``concise+warm`` (weights 1) or ``concise=1+warm=0.5``."""
        parts = []
        for item in text.split("+"):
            name, sep, weight = item.strip().partition("=")
            if not name.strip():
                raise ValueError(f"{text!r}: empty preference name in a blend (NAME[=W]+NAME[=W])")
            try:
                parts.append((name.strip(), float(weight) if sep else 1.0))
            except ValueError:
                raise ValueError(f"{text!r}: weight of {name.strip()!r} is not a number") from None
        return cls(tuple(parts))

    @classmethod
    def of(cls, value: Mapping[str, float]) -> Blend:
        return cls(tuple(value.items()))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parts]

    @property
    def weights(self) -> list[float]:
        return [float(weight) for _, weight in self.parts]

    def as_dict(self) -> dict[str, float]:
        return dict(self.parts)

    def __str__(self) -> str:
        return "+".join(n if w == 1 else f"{n}={w:g}" for n, w in self.parts)


class Control(nn.Module):
    """Per-preference conditioning; subclasses override what their kind needs."""

    kind: str = ""
    #: whether each preference runs through its own weights (``use``, ``per_row`` route them)
    per_preference_weights: bool = False
    #: whether a native blend may weight its parts (LoRA scales each delta); controls put
    #: one after another have nothing a weight could scale
    weighted_blend: bool = False

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

    def check_blend(self, blend: Blend) -> None:
        """Refuse a blend this kind cannot compose natively, naming the way out."""
        for name in blend.names:
            self.index(name)
        if not self.weighted_blend and any(w != 1 for w in blend.weights):
            raise ValueError(
                f"{self.kind} controls compose natively by putting the controls one after "
                f"another, which takes no weights (got {blend}); drop the weights or mix "
                "the logits of one stream per control (--compose logits)"
            )

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

    @contextlib.contextmanager
    def per_token(self, preferences: torch.Tensor) -> Iterator[None]:
        """Send each token of a packed batch through the weights of its own preference
        (batch x length ids, -1 on padding): rows of packed examples mix preferences.
        Kinds without per-preference weights have nothing to route here either."""
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
