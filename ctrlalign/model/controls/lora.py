"""One PEFT LoRA adapter per preference.

PEFT refuses per-row adapters (``adapter_names``) in training mode, so training runs one
forward per preference present in the batch (exactly the same loss and gradients as a
mixed forward). Generation mixes adapters per row with ``per_row``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import Linear as LoraLinear
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls.base import Control


def lora_config(
    rank: int,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
) -> LoraConfig:
    """PEFT's config for every LoRA ctrlalign trains (controls, DPO's adapter): alpha
    defaults to twice the rank, as in the LoRA paper's common setting."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )


class LoraControl(Control):
    kind = "lora"
    per_preference_weights = True

    def __init__(
        self,
        preferences: list[str],
        rank: int = 4,
        alpha: int | None = None,
        dropout: float = 0.0,
        target_modules: str | list[str] = "all-linear",
    ):
        super().__init__(preferences)
        self.config = lora_config(rank, alpha, dropout, target_modules)
        self.peft: PeftModel | None = None

    @classmethod
    def from_options(cls, preferences: list[str], options: Mapping[str, object]) -> Control:
        return cls(preferences, rank=options.get("lora_rank", 4), alpha=options.get("lora_alpha"))

    def attach(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        first, *rest = self.preferences
        peft = get_peft_model(lm, self.config, adapter_name=first)
        for pref in rest:
            peft.add_adapter(pref, self.config)
        self.peft = peft
        return peft

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft.named_parameters() if "lora_" in n]

    @contextlib.contextmanager
    def use(self, preference: str) -> Iterator[None]:
        trainable = {id(p): p.requires_grad for p in self.adapter_parameters()}
        self.peft.base_model.set_adapter(self.preferences[self.index(preference)])
        # set_adapter flips requires_grad to the active adapter only; the optimizer holds
        # every adapter, so restore the flags to keep all of them trainable.
        for p in self.adapter_parameters():
            p.requires_grad_(trainable[id(p)])
        yield

    @contextlib.contextmanager
    def per_row(self, preferences: Sequence[str]) -> Iterator[None]:
        """Batch row i goes through the adapter of ``preferences[i]`` (inference only).

        PEFT's ``adapter_names`` does the same, but at every forward (every generated token)
        it registers a hook on each LoRA module and rebuilds each adapter's row list in
        Python; here the row masks are built once per batch.
        """
        first = next(self.peft.parameters())
        owners = torch.tensor([self.index(p) for p in preferences], device=first.device)
        masks = {
            pref: (owners == self.index(pref)).to(first.dtype).view(-1, 1, 1)
            for pref in dict.fromkeys(preferences)
        }
        patched = [m for m in self.peft.modules() if isinstance(m, LoraLinear)]
        for module in patched:
            module.forward = partial(_per_row_forward, module, masks)
        try:
            yield
        finally:
            for module in patched:
                del module.forward

    def first_stage_parameters(self, lm: PreTrainedModel) -> list[nn.Parameter]:
        return self.adapter_parameters()

    def save(self, directory: Path, lm: PreTrainedModel) -> None:
        for pref in self.preferences:
            self.peft.save_pretrained(str(directory / "lora"), selected_adapters=[pref])

    def load(self, directory: Path, lm: PreTrainedModel) -> None:
        for pref in self.preferences:
            weights = load_file(str(directory / "lora" / pref / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=pref)


def _per_row_forward(
    module: LoraLinear, masks: dict[str, torch.Tensor], x: torch.Tensor, *args, **kwargs
) -> torch.Tensor:
    """A LoRA linear layer with each adapter added to its own rows only (no dropout: eval).
    Each adapter runs on every row and a 0/1 row mask keeps its share: at LoRA ranks the
    extra products cost less than gathering and scattering rows."""
    result = module.base_layer(x, *args, **kwargs)
    for pref, mask in masks.items():
        delta = module.lora_B[pref](module.lora_A[pref](x.to(module.lora_A[pref].weight.dtype)))
        result = result + (delta * (module.scaling[pref] * mask)).to(result.dtype)
    return result
