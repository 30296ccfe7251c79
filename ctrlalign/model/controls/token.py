"""One new special token per preference (Quark, LETI): a single trainable embedding row."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Control


def init_from_words(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, word: str):
    """Embeddings of a word's tokens: the paper initialises controls from "good"/"bad"."""
    ids = tokenizer(" " + word.replace("-", " "), add_special_tokens=False).input_ids
    weight = lm.get_input_embeddings().weight
    return weight[torch.tensor(ids, device=weight.device)].detach().clone()


class TokenControl(Control):
    kind = "token"

    def __init__(self, preferences: list[str]):
        super().__init__(preferences)
        self.tokens = [f"<|ctrl:{p}|>" for p in preferences]
        self.token_ids: list[int] = []
        self._first_new_row = 0

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        missing = [t for t in self.tokens if t not in tokenizer.get_vocab()]
        if missing:
            # appended, not replacing: transformers 5 by default replaces the extra special
            # tokens, so a chat model's <|im_start|> would lose its special flag and leak
            # into decoded answers
            tokenizer.add_special_tokens(
                {"additional_special_tokens": missing}, replace_extra_special_tokens=False
            )
        self.token_ids = tokenizer.convert_tokens_to_ids(self.tokens)
        self._first_new_row = min(self.token_ids)
        old_rows = lm.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old_rows:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                weight = lm.get_input_embeddings().weight
                for pref, tid in zip(self.preferences, self.token_ids, strict=True):
                    weight[tid] = init_from_words(lm, tokenizer, pref).mean(0)
        return lm

    def prefix_ids(self, preference: str) -> list[int]:
        return [self.token_ids[self.index(preference)]]

    def first_stage_parameters(self, lm: PreTrainedModel) -> list[nn.Parameter]:
        return [lm.get_input_embeddings().weight]

    def restrict_first_stage(self, lm: PreTrainedModel) -> list:
        """Zero the gradient of every pre-existing row, so only the new rows move.

        With weight decay 0 Adam's update for an all-zero gradient is exactly zero, so the
        old rows stay bit-identical (tested).
        """
        weight = lm.get_input_embeddings().weight
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[self.token_ids] = 1.0
        # .to: the Trainer may move the model after this (FSDP/DeepSpeed load on the CPU)
        return [weight.register_hook(lambda grad: grad * mask.to(grad.device))]

    def suppressed_token_ids(self) -> list[int]:
        return list(self.token_ids)

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        from safetensors.torch import save_file

        weight = lm.get_input_embeddings().weight
        rows = weight[torch.tensor(self.token_ids, device=weight.device)].detach()
        save_file(
            {"rows": rows.contiguous().cpu()}, str(directory / "token_embeddings.safetensors")
        )

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        from safetensors.torch import load_file

        rows = load_file(str(directory / "token_embeddings.safetensors"))["rows"]
        with torch.no_grad():
            weight = lm.get_input_embeddings().weight
            ids = torch.tensor(self.token_ids, device=weight.device)
            weight[ids] = rows.to(device=weight.device, dtype=weight.dtype)
