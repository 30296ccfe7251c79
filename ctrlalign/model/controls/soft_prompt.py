"""Soft prompts (prompt tuning) with one table per preference, mixable within a batch.

PEFT's prompt tuning keeps one adapter active per forward, so a batch cannot mix
preferences; here the prefix positions hold placeholder ids whose embeddings are replaced
by the row's own soft prompt, which also works with left padding at generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Control
from ctrlalign.model.controls.token import init_from_words


class SoftPromptControl(Control):
    kind = "soft-prompt"

    def __init__(
        self, preferences: list[str], length: int = 50, init: Mapping[str, str] | None = None
    ):
        super().__init__(preferences)
        if length < 1:
            raise ValueError(f"soft prompt length must be >= 1, got {length}")
        unknown = sorted(set(init or {}) - set(preferences))
        if unknown:
            raise ValueError(f"soft prompt init for unknown preferences {unknown}")
        self.length = length
        #: preference -> text whose token embeddings start its soft prompt (else its name)
        self.init = dict(init or {})
        self.prompts = nn.Parameter(torch.empty(0))
        self._placeholder = 0

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        return cls(
            preferences, options.get("soft_prompt_length", 50), options.get("soft_prompt_init")
        )

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        self._placeholder = tokenizer.pad_token_id
        rows = []
        for pref in self.preferences:
            # the paper starts from the embeddings of "good"/"bad"; a text such as CoH's
            # "A good summary is" starts the step-2-only ablation from the prompt baseline
            words = init_from_words(lm, tokenizer, self.init.get(pref, pref))
            reps = -(-self.length // words.shape[0])
            rows.append(words.repeat(reps, 1)[: self.length])
        self.prompts = nn.Parameter(torch.stack(rows))
        return lm

    def prefix_ids(self, preference: str) -> list[int]:
        self.index(preference)
        return [self._placeholder] * self.length

    def embed(self, embeds: torch.Tensor, prefix_mask: torch.Tensor, pref_ids: torch.Tensor):
        """Each row's prefix positions get its soft prompt, or a blend's soft prompts one
        after another (``pref_ids`` rows x parts, -1 past a row's last part)."""
        if pref_ids.dim() == 1:
            values = self.prompts[pref_ids]
        else:
            values = self.prompts[pref_ids[pref_ids >= 0]]  # row-major: each row's in order
        return embeds.masked_scatter(prefix_mask.unsqueeze(-1), values.to(embeds.dtype))

    def first_stage_parameters(self, lm: PreTrainedModel) -> list[nn.Parameter]:
        return [self.prompts]

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        save_file(
            {"prompts": self.prompts.detach().contiguous().cpu()},
            str(directory / "soft_prompts.safetensors"),
            metadata={"preferences": ",".join(self.preferences)},
        )

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        with torch.no_grad():
            self.prompts.copy_(load_file(str(directory / "soft_prompts.safetensors"))["prompts"])
