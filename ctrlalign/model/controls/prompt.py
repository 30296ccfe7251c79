"""Hand-written prompt controls, as in Chain-of-Hindsight: fixed text, nothing to learn."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Control

#: the paper's wording for the two classic preferences, per task (``data.records.data_task``);
#: other preferences get "A {name} response is"
PAPER_PROMPTS = {
    "dialogue": {"good": "A good conversation is", "bad": "A bad conversation is"},
    "summary": {"good": "A good summary is", "bad": "A bad summary is"},
}
TEXTS_FILE = "prompt_texts.json"


class PromptControl(Control):
    kind = "prompt"

    def __init__(
        self,
        preferences: list[str],
        texts: dict[str, str] | None = None,
        task: str = "dialogue",
    ):
        super().__init__(preferences)
        texts = dict(texts or {})
        defaults = PAPER_PROMPTS[task]
        self.texts = {p: texts.get(p) or defaults.get(p, f"A {p} response is") for p in preferences}
        self._ids: dict[str, list[int]] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        return cls(preferences, options.get("prompt_texts"), options.get("task", "dialogue"))

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        self._tokenizer = tokenizer
        self._ids = {
            p: tokenizer(text + "\n", add_special_tokens=False).input_ids
            for p, text in self.texts.items()
        }
        return lm

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        """The texts trained with: defaults follow the data's task, which a loaded run
        no longer sees."""
        (directory / TEXTS_FILE).write_text(json.dumps(self.texts, indent=2))

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        path = directory / TEXTS_FILE
        if path.is_file():  # runs saved before the texts were stored use their settings
            self.texts = {**self.texts, **json.loads(path.read_text())}
            self.attach(lm, self._tokenizer)

    def prefix_ids(self, preference: str) -> list[int]:
        return self._ids[self.preferences[self.index(preference)]]
