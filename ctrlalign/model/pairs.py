"""Pair layouts: how (prompt, chosen, rejected) reach the network. DPO, its relatives and
CLM read pairs through ``batch_pair_logps`` and collate them with ``pair_collator``, which
picks the layout the attention implementation can run:

- shared prompt (SDPA, eager): one row ``[prompt][chosen][rejected]`` per pair in which both
  responses are positioned right after the prompt and a 4D attention mask keeps each
  response from seeing the other, so the log-probs (and gradients) are those of two full
  sequences (tested against TRL) with the prompt computed once;
- packed (FlashAttention-2, which takes no 4D mask): every pair's two sequences
  ``[prompt][chosen]`` and ``[prompt][rejected]`` one after another in a single row without
  padding, positions restarting at each; FlashAttention-2 reads the sequence bounds from the
  position ids (varlen), other implementations get the block-diagonal mask. The prompt runs
  twice, the price of the kernel; no token of padding is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from ctrlalign.data import Record
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.layout import (
    as_attention_mask,
    prompt_ids,
    response_ids,
)
from ctrlalign.model.logprobs import lm_logits

PAIR_INPUTS = ("input_ids", "position_ids", "segment_ids", "source", "targets", "owner")
PACKED_INPUTS = ("input_ids", "position_ids", "sequence_ids", "source", "targets", "owner")


@dataclass(frozen=True)
class PairExample:
    """Token ids of one prompt and its two responses (each ending in eos), and the
    reference model's summed log-probs of the responses once they are computed."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def encode_pairs(
    records: Iterable[Record],
    tokenizer: PreTrainedTokenizerBase,
    chosen: str,
    rejected: str,
    max_length: int,
) -> tuple[list[PairExample], int]:
    """Pairs in the layout MEET and generation use; pairs whose prompt plus longer response
    exceed ``max_length`` are dropped (and counted), as for the other recipes."""
    examples, dropped = [], 0
    for record in records:
        prompt = prompt_ids(tokenizer, record.chat)
        good = response_ids(tokenizer, record.responses[chosen])
        bad = response_ids(tokenizer, record.responses[rejected])
        if len(prompt) + max(len(good), len(bad)) > max_length:
            dropped += 1
        else:
            examples.append(PairExample(prompt, good, bad))
    return examples, dropped


PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, -1


def _per_pair(examples: Sequence[PairExample]) -> dict[str, torch.Tensor]:
    """What every pair layout carries per pair: response lengths and reference log-probs."""
    return {
        "response_lengths": torch.tensor(
            [[len(e.chosen_ids), len(e.rejected_ids)] for e in examples]
        ),
        "ref_logps": torch.tensor([[e.ref_chosen, e.ref_rejected] for e in examples]),
    }


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, ``[prompt][chosen][rejected]``, both responses positioned right after
    the prompt; ``segment_ids`` tell the attention mask which tokens see which.

    ``source``/``targets``/``owner`` list every response token: the flat position of the
    hidden state that predicts it, the token, and its sequence (2i chosen, 2i + 1 rejected).
    """
    width = max(len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    ids, positions, segments, source, targets, owner = [], [], [], [], [], []
    for row, e in enumerate(examples):
        p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
        pad = width - p - c - r
        ids.append(e.prompt_ids + e.chosen_ids + e.rejected_ids + [pad_id] * pad)
        positions.append([*range(p + c), *range(p, p + r), *[0] * pad])
        segments.append([PROMPT] * p + [CHOSEN] * c + [REJECTED] * r + [PAD] * pad)
        base = row * width
        # the last prompt position predicts the first token of both responses
        source += [base + p - 1, *range(base + p, base + p + c - 1)]
        source += [base + p - 1, *range(base + p + c, base + p + c + r - 1)]
        targets += e.chosen_ids + e.rejected_ids
        owner += [2 * row] * c + [2 * row + 1] * r
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.tensor(positions),
        "segment_ids": torch.tensor(segments),
        "source": torch.tensor(source),
        "targets": torch.tensor(targets),
        "owner": torch.tensor(owner),
        **_per_pair(examples),
    }


def pair_attention_mask(segment_ids: torch.Tensor, attn_implementation: str, dtype) -> torch.Tensor:
    """4D mask: causal, and a response sees the prompt and itself, never the other response.

    Padding queries see the prompt (never an empty row, which would give NaN). ``sdpa``
    takes the boolean mask; other implementations get it additive in the model's dtype.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(
            f"the shared-prompt pair layout needs a 4D attention mask, which "
            f"{attn_implementation!r} attention does not take; collate with pair_collator, "
            "which packs the pairs for it"
        )
    width = segment_ids.shape[1]
    index = torch.arange(width, device=segment_ids.device)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    allowed = (index[None, :] <= index[:, None]) & ((key == PROMPT) | (key == query)) & (key != PAD)
    return as_attention_mask(allowed[:, None], attn_implementation, dtype)


def pair_logps(
    model: ControlledLM,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    segment_ids: torch.Tensor,
    source: torch.Tensor,
    targets: torch.Tensor,
    owner: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected responses, each prompt run once."""
    embeds_dtype = model.base.get_input_embeddings().weight.dtype
    mask = pair_attention_mask(segment_ids, model.config._attn_implementation, embeds_dtype)
    return _response_sums(
        model, input_ids, mask, position_ids, source, targets, owner, input_ids.shape[0]
    )


def collate_packed_pairs(examples: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """All pairs in one padding-free row: sequence 2i is ``[prompt][chosen]`` of pair i,
    2i + 1 its ``[prompt][rejected]``, each positioned from 0. ``pad_id`` is unused (there is
    no padding); it is taken so every pair collator has one signature."""
    ids, positions, sequences, source, targets, owner = [], [], [], [], [], []
    for row, e in enumerate(examples):
        for side, response in ((0, e.chosen_ids), (1, e.rejected_ids)):
            start, sequence = len(ids), e.prompt_ids + response
            ids += sequence
            positions += range(len(sequence))
            sequences += [2 * row + side] * len(sequence)
            # the last prompt position predicts the response's first token
            source += range(start + len(e.prompt_ids) - 1, start + len(sequence) - 1)
            targets += response
            owner += [2 * row + side] * len(response)
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "sequence_ids": torch.tensor([sequences]),
        "source": torch.tensor(source),
        "targets": torch.tensor(targets),
        "owner": torch.tensor(owner),
        **_per_pair(examples),
    }


def _response_sums(
    model: ControlledLM,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    source: torch.Tensor,
    targets: torch.Tensor,
    owner: torch.Tensor,
    pairs: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    embeds = model.embed(input_ids)
    hidden = (
        model.base.get_decoder()(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
        )
        .last_hidden_state.flatten(0, 1)
        .index_select(0, source)
    )
    logps = -F.cross_entropy(lm_logits(model.base, hidden), targets, reduction="none")
    sums = torch.zeros(2 * pairs, dtype=logps.dtype, device=logps.device)
    sums = sums.index_add(0, owner, logps)
    return sums[0::2], sums[1::2]


def packed_pair_logps(
    model: ControlledLM,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    sequence_ids: torch.Tensor,
    source: torch.Tensor,
    targets: torch.Tensor,
    owner: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected responses, packed layout."""
    mask = model.packed_mask(sequence_ids)
    pairs = int(sequence_ids.max()) // 2 + 1
    return _response_sums(model, input_ids, mask, position_ids, source, targets, owner, pairs)


def pair_collator(attn_implementation: str) -> Callable[..., dict[str, torch.Tensor]]:
    """The pair layout this attention implementation runs (see the module docstring)."""
    return collate_packed_pairs if attn_implementation == "flash_attention_2" else collate_pairs


def batch_pair_logps(
    model: ControlledLM, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs of a collated batch, whichever its layout."""
    if "sequence_ids" in batch:
        return packed_pair_logps(model, *(batch[k] for k in PACKED_INPUTS))
    return pair_logps(model, *(batch[k] for k in PAIR_INPUTS))
