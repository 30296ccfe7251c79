"""A reward model: any one-logit sequence classifier that scores (prompt, response) pairs.

The paper scores answers with OpenAssistant/reward-model-deberta-v3-large-v2; any Hugging
Face model with a one-logit classification head works the same way, from the hub or a
folder (e.g. one trained with ``train-rm``). ``encode_for_reward`` is the one input layout,
shared by training and scoring, so a reward model is trained on exactly what it will read.
Scoring runs without gradients in fp32, which is the fast path on CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _resolve(model: str | Path) -> str:
    """A folder that exists, or something shaped like a hub id; anything else is an error."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"reward model folder {str(model)!r} has no config.json; pass a folder written "
                "by save_pretrained"
            )
        return str(path)
    if path.exists():
        raise NotADirectoryError(f"reward model {str(model)!r} is a file; pass its folder")
    if isinstance(model, str) and _HUB_ID.fullmatch(model):
        return model
    raise FileNotFoundError(
        f"reward model {str(model)!r} not found: no such folder, and not a Hugging Face id"
    )


class RewardModel:
    """Scores (prompt, response) pairs with a one-logit sequence-classification model.

    The model side of a reward-model judge; ``train-rm`` scores its held-out pairs with it.

    When the tokenizer marks the boundary of a text pair (BERT and DeBERTa add a separator)
    the input is ``tokenizer(prompt, response)``, as the OpenAssistant reward models were
    trained; otherwise it is the prompt, a blank line and the response as one text, cut from
    the left so the response's end (where decoder reward models read) survives truncation.
    """

    def __init__(
        self,
        model: str | Path,
        batch_size: int = 8,
        max_length: int = 512,
        device: torch.device | str = "cpu",
    ) -> None:
        source = _resolve(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise OSError(f"cannot load reward model {str(model)!r}: {err}") from err
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward model {str(model)!r} has {self.model.config.num_labels} labels; "
                "a reward model needs exactly one output"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            # Decoder classifiers find the last real token through pad_token_id.
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.uses_pairs = uses_text_pairs(self.tokenizer)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One reward per (prompt, response); batches group similar lengths to pad less."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        rewards = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self._encode([prompts[i] for i in batch], [responses[i] for i in batch])
            logits = self.model(**inputs).logits[:, 0]
            for i, reward in zip(batch, logits.tolist(), strict=True):
                rewards[i] = reward
        return rewards

    def _encode(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        encoded = encode_for_reward(self.tokenizer, prompts, responses, self.max_length)
        return {name: tensor.to(self.device) for name, tensor in encoded.items()}


def uses_text_pairs(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer marks a text pair's boundary (BERT, DeBERTa add a separator)."""
    return tokenizer.num_special_tokens_to_add(pair=True) > tokenizer.num_special_tokens_to_add(
        pair=False
    )


def encode_for_reward(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
) -> dict[str, torch.Tensor]:
    """Padded model inputs for (prompt, response) pairs, as ``RewardModel`` reads them.

    Shared with ``train-rm`` so a reward model is trained on exactly the inputs it judges.
    Without a pair template the text is cut from the left (the tokenizer's truncation side
    is set so), keeping the response's end, where a decoder classifier reads.
    """
    options = {"truncation": True, "max_length": max_length, "padding": True}
    if uses_text_pairs(tokenizer):
        return dict(tokenizer(list(prompts), list(responses), return_tensors="pt", **options))
    tokenizer.truncation_side = "left"
    texts = [f"{p}\n\n{r}" for p, r in zip(prompts, responses, strict=True)]
    return dict(tokenizer(texts, return_tensors="pt", **options))
