"""Hand-written prompt controls, as in Chain-of-Hindsight: fixed text, nothing to learn."""

from __future__ import annotations

from collections.abc import Mapping

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Control

#: the paper's wording for the two classic preferences; others get "A {name} response is"
PAPER_PROMPTS = {
    "good": "A good conversation is",
    "bad": "A bad conversation is",
}
SUMMARY_PROMPTS = {"good": "A good summary is", "bad": "A bad summary is"}


class PromptControl(Control):
    kind = "prompt"

    def __init__(self, preferences: list[str], texts: dict[str, str] | None = None):
        super().__init__(preferences)
        texts = dict(texts or {})
        self.texts = {
            p: texts.get(p) or PAPER_PROMPTS.get(p, f"A {p} response is") for p in preferences
        }
        self._ids: dict[str, list[int]] = {}

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        return cls(preferences, options.get("prompt_texts"))

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        self._ids = {
            p: tokenizer(text + "\n", add_special_tokens=False).input_ids
            for p, text in self.texts.items()
        }
        return lm

    def prefix_ids(self, preference: str) -> list[int]:
        return self._ids[self.preferences[self.index(preference)]]
