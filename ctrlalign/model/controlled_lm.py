"""A causal LM together with its control, as one module.

Keeping both in one ``nn.Module`` lets ``transformers.Trainer`` (and so ``accelerate``,
DDP, FSDP, DeepSpeed) wrap, save and step the pair without knowing about controls. It
computes log-probs, never a loss: the objectives that train it live in ``training``.
"""

from __future__ import annotations

import contextlib
import inspect
from functools import partial

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ctrlalign.model.controls import Control
from ctrlalign.model.identity_layer import IdentityLayer, find_identity_layer
from ctrlalign.model.layout import packed_attention_mask
from ctrlalign.model.logprobs import lm_logits, response_logps


class ControlledLM(nn.Module):
    def __init__(self, lm: PreTrainedModel | PeftModel, control: Control | None = None):
        super().__init__()
        self.lm = lm
        self.control = control

    @property
    def base(self) -> PreTrainedModel:
        """The transformers model underneath any PEFT wrapper."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    @property
    def config(self):
        return self.base.config

    def end_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Every token that ends an answer: the tokenizer's eos and each id of the model's
        ``generation_config.eos_token_id`` (Llama-3 style models list several)."""
        ids = [tokenizer.eos_token_id]
        config = getattr(self.base, "generation_config", None)
        extra = getattr(config, "eos_token_id", None)
        ids += extra if isinstance(extra, list) else [extra]
        return list(dict.fromkeys(i for i in ids if i is not None))

    @property
    def cache_argument(self) -> str:
        """The keyword the LM's forward takes its KV cache by: ``cache`` on transformers
        versions that renamed ``past_key_values`` (deprecated there, removed in 5.40), the
        old name on those that did not."""
        forward = inspect.signature(type(self.base).forward).parameters
        return "cache" if "cache" in forward else "past_key_values"

    @property
    def clm(self) -> IdentityLayer | None:
        """The CLM identity layer, when one was inserted (it lives inside the decoder)."""
        return find_identity_layer(self.base)

    def aligned_rows(self, aligned: torch.Tensor | bool) -> contextlib.AbstractContextManager:
        """Send rows through the CLM layer (aligned) or around it (unaligned) within the block."""
        layer = self.clm
        if layer is not None:
            return layer.rows(aligned)
        if aligned is False or (isinstance(aligned, torch.Tensor) and not bool(aligned.all())):
            raise ValueError(
                "this run has no CLM layer, so no unaligned stream: --alpha alone needs a CLM run "
                "(on a MEET run use --alpha with --preference and --against)"
            )
        return contextlib.nullcontext()

    def packed_mask(self, sequence_ids: torch.Tensor) -> torch.Tensor | None:
        """The attention mask of a packed batch, as this model's attention takes it."""
        dtype = self.base.get_input_embeddings().weight.dtype
        return packed_attention_mask(sequence_ids, self.config._attn_implementation, dtype)

    def embed(
        self,
        input_ids: torch.Tensor,
        prefix_mask: torch.Tensor | None = None,
        preference_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the controls' prefixes filled in; ``preference_ids`` gives
        the preference of each prefix in row-major order (per row, or a packed batch's
        ``prefix_blocks``)."""
        embeds = self.base.get_input_embeddings()(input_ids)
        if self.control is not None and prefix_mask is not None and prefix_mask.any():
            embeds = self.control.embed(embeds, prefix_mask, preference_ids)
        return embeds

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_mask: torch.Tensor | None = None,
        preference_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        blocks = preference_ids if prefix_blocks is None else prefix_blocks
        embeds = self.embed(input_ids, prefix_mask, blocks)
        out = self.base.get_decoder()(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        return out.last_hidden_state

    def token_logps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        prefix_mask: torch.Tensor | None = None,
        preference_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_blocks: torch.Tensor | None = None,
        token_preference_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of labelled tokens and their rows, through each row's own control.

        One forward whatever the mix of preferences: controls with per-preference weights
        (LoRA) route each row through its own inside ``per_row``. A packed batch passes its
        4D mask (or None for varlen FlashAttention-2), position ids, prefix blocks and each
        token's preference (its rows mix examples of several), routed by ``per_token``.
        """
        head = partial(lm_logits, self.base)
        if self.control is None:
            routing = contextlib.nullcontext()
        elif token_preference_ids is not None:
            routing = self.control.per_token(token_preference_ids)
        elif preference_ids is not None:
            routing = self.control.per_row(preference_ids)
        else:
            routing = contextlib.nullcontext()
        with routing:
            hidden = self.hidden_states(
                input_ids, attention_mask, prefix_mask, preference_ids, position_ids, prefix_blocks
            )
        return response_logps(hidden, labels, head)
