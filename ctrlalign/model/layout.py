"""Turning records into token ids with loss masks, and padding them into batches.

Layout of one example: ``[control prefix][prompt][response][eos]``. Only the response
(and its end-of-turn token) carries loss; the prefix, the prompt and padding do not. The
prefix sits first so every control kind, soft prompts included, uses the same positions.

Two batch layouts: ``collate`` pads every example to the longest; ``collate_packed`` puts
several examples of one preference in a row (positions restarting at each, a block-diagonal
causal mask, or FlashAttention-2's varlen from the position ids), so a micro-batch of
short and long responses computes few padding tokens. Both give the same loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ctrlalign.data.records import Record, blend_parts
from ctrlalign.model.controls import Blend, Control
from ctrlalign.model.logprobs import IGNORE_INDEX

Message = dict[str, str]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """The prompt as the model expects it: its chat template, or HH-style plain text."""
    if tokenizer.chat_template:
        return list(
            tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    if len(messages) == 1 and messages[0]["role"] == "user":
        text = messages[0]["content"]
    else:
        names = {"user": "Human", "assistant": "Assistant", "system": "System"}
        turns = "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in messages)
        text = turns + "\n\nAssistant:"
    return tokenizer(text).input_ids


def response_ids(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    text = response if tokenizer.chat_template else " " + response.lstrip()
    return tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    #: the control's index of the preference, or of each preference of a blend
    preference_id: int | tuple[int, ...]
    prefix_len: int


def control_prefix(
    control: Control, preference: str | Blend
) -> tuple[list[int], int | tuple[int, ...]]:
    """The prefix ids and preference id(s) of a preference or a natively composed blend:
    the blend's controls one after another, in its order."""
    if isinstance(preference, Blend):
        control.check_blend(preference)
        prefix = [i for name in preference.names for i in control.prefix_ids(name)]
        return prefix, tuple(control.index(name) for name in preference.names)
    return control.prefix_ids(preference), control.index(preference)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    control: Control | None,
    messages: Sequence[Message],
    preference: str | Blend | None,
) -> Example:
    """``[control prefix][prompt]`` with no labels: what generation starts from.

    A run without controls takes no preference; a run with them needs one it knows.
    """
    if control is None:
        if preference is not None:
            raise ValueError("this run has no controls, so it takes no --preference")
        ids = prompt_ids(tokenizer, messages)
        return Example(ids, [IGNORE_INDEX] * len(ids), 0, 0)
    if preference is None:
        raise ValueError(f"this run needs a preference; it knows {control.preferences}")
    prefix, preference_id = control_prefix(control, preference)
    ids = prefix + prompt_ids(tokenizer, messages)
    return Example(ids, [IGNORE_INDEX] * len(ids), preference_id, len(prefix))


def encode(
    tokenizer: PreTrainedTokenizerBase,
    control: Control | None,
    messages: Sequence[Message],
    preference: str | None,
    response: str,
) -> Example:
    """``[control prefix][prompt][response][eos]``, labels on the response and eos only."""
    context = encode_prompt(tokenizer, control, messages, preference)
    answer = response_ids(tokenizer, response)
    return Example(
        context.input_ids + answer,
        context.labels + answer,
        context.preference_id,
        context.prefix_len,
    )


@dataclass
class Encoded:
    examples: list[Example]
    dropped_too_long: int


def encode_records(
    records: Iterable[Record],
    tokenizer: PreTrainedTokenizerBase,
    control: Control | None,
    max_length: int,
    only: str | None = None,
) -> Encoded:
    """One example per (record, preference) pair, a joint record's under the blend of its
    preferences; ``only`` keeps one preference (SFT).

    Examples longer than ``max_length`` are dropped, as the paper does, and counted.
    """
    examples, dropped = [], 0
    for record in records:
        for pref, response in record.responses.items():
            if only is not None and pref != only:
                continue
            ex = encode(tokenizer, control, record.chat, _as_control(control, pref), response)
            if len(ex.input_ids) > max_length:
                dropped += 1
            else:
                examples.append(ex)
    return Encoded(examples, dropped)


def _as_control(control: Control | None, key: str) -> str | Blend | None:
    """What a response key asks of the control: a preference, or a joint record's blend of
    all its parts (``data.records.blend_parts``), each at weight 1."""
    if control is None:
        return None
    parts = blend_parts(key, control.preferences)
    return parts[0] if len(parts) == 1 else Blend(tuple((p, 1.0) for p in parts))


def collate(examples: list[Example], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest example; ``left`` padding is what generation needs."""
    width = max(len(e.input_ids) for e in examples)
    batch = {k: [] for k in ("input_ids", "attention_mask", "labels", "prefix_mask")}
    for e in examples:
        n, pad = len(e.input_ids), width - len(e.input_ids)
        rows = {
            "input_ids": e.input_ids + [pad_id] * pad,
            "attention_mask": [1] * n + [0] * pad,
            "labels": e.labels + [IGNORE_INDEX] * pad,
            "prefix_mask": [1] * e.prefix_len + [0] * (width - e.prefix_len),
        }
        for key, row in rows.items():
            if left:
                row = row[n:] + row[:n] if key != "prefix_mask" else [0] * pad + row[: width - pad]
            batch[key].append(row)
    out = {k: torch.tensor(v) for k, v in batch.items()}
    out["prefix_mask"] = out["prefix_mask"].bool()
    out["preference_ids"] = preference_ids([e.preference_id for e in examples])
    return out


def pack_rows(examples: Sequence[Example], width: int) -> list[list[Example]]:
    """Rows of at most ``width`` tokens, whatever their preferences (each token is routed
    through its own example's control, ``token_preference_ids``). First-fit decreasing
    finds how many rows the examples need; the same number of rows filled longest example
    first into the emptiest row is kept instead when its widest row is narrower, as the
    batch is as wide as its widest row: FFD fills its first rows to ``width`` and leaves the
    last one short, so 1,584 tokens in rows of 512 are 4 x 512 positions packed first-fit
    and about 4 x 400 balanced (fewer padded positions, a smaller attention square)."""
    order = sorted(examples, key=lambda e: -len(e.input_ids))
    first_fit: list[list[Example]] = []
    room: list[int] = []
    for e in order:
        n = len(e.input_ids)
        fit = next((i for i, r in enumerate(room) if r >= n), None)
        if fit is None:
            first_fit.append([e])
            room.append(width - n)
        else:
            first_fit[fit].append(e)
            room[fit] -= n
    balanced: list[list[Example]] = [[] for _ in first_fit]
    loads = [0] * len(first_fit)
    for e in order:
        emptiest = loads.index(min(loads))
        balanced[emptiest].append(e)
        loads[emptiest] += len(e.input_ids)
    return balanced if max(loads) < width - min(room) else first_fit


def collate_packed(
    examples: list[Example], pad_id: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    """Examples packed into rows of at most ``width`` tokens (training passes
    ``--max-length``, so no row's attention costs more than a padded batch's can; default:
    the longest example), each example positioned from 0 with its own ``sequence_ids`` (-1
    on the short tail of padding). ``prefix_blocks`` lists, row-major, the preference of
    each control prefix, which soft prompts fill in that order; ``token_preference_ids``
    gives every token its example's preference (-1 on padding; tokens x parts for blends),
    by which LoRA controls route per token."""
    longest = max(len(e.input_ids) for e in examples)
    rows = pack_rows(examples, max(width or longest, longest))
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    keys = ("input_ids", "attention_mask", "labels", "prefix_mask", "position_ids")
    batch: dict[str, list] = {k: [] for k in (*keys, "sequence_ids")}
    blocks: list[int] = []
    owners: list[list[tuple[int, ...]]] = []
    for row in rows:
        cols = {k: [] for k in batch}
        owners.append([])
        for j, e in enumerate(row):
            n = len(e.input_ids)
            owners[-1] += [_parts(e.preference_id)] * n
            cols["input_ids"] += e.input_ids
            cols["attention_mask"] += [1] * n
            cols["labels"] += e.labels
            cols["prefix_mask"] += [1] * e.prefix_len + [0] * (n - e.prefix_len)
            cols["position_ids"] += range(n)
            cols["sequence_ids"] += [j] * n
            if e.prefix_len:
                blocks += [e.preference_id] if isinstance(e.preference_id, int) else e.preference_id
        pad = width - len(cols["input_ids"])
        owners[-1] += [(-1,)] * pad
        tails = {"input_ids": pad_id, "labels": IGNORE_INDEX, "sequence_ids": -1}
        for key, values in cols.items():
            batch[key].append(values + [tails.get(key, 0)] * pad)
    out = {k: torch.tensor(v) for k, v in batch.items()}
    out["prefix_mask"] = out["prefix_mask"].bool()
    parts = max(len(o) for row in owners for o in row)
    out["token_preference_ids"] = torch.tensor(
        [[list(o) + [-1] * (parts - len(o)) for o in row] for row in owners]
    ).view(len(rows), width, parts)
    if parts == 1:
        out["token_preference_ids"] = out["token_preference_ids"].squeeze(-1)
    out["prefix_blocks"] = torch.tensor(blocks, dtype=torch.long)
    return out


def _parts(preference_id: int | tuple[int, ...]) -> tuple[int, ...]:
    return (preference_id,) if isinstance(preference_id, int) else tuple(preference_id)


def as_attention_mask(allowed: torch.Tensor, attn_implementation: str, dtype) -> torch.Tensor:
    """A boolean B x 1 x L x L mask as the implementation takes it: SDPA the boolean one,
    eager an additive one in the model's dtype."""
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def packed_attention_mask(
    sequence_ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype
) -> torch.Tensor | None:
    """None for FlashAttention-2 (it finds the sequences from the position ids); else the
    causal block-diagonal mask, boolean for SDPA, additive for eager."""
    if attn_implementation == "flash_attention_2":
        return None
    width = sequence_ids.shape[1]
    index = torch.arange(width, device=sequence_ids.device)
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]
    allowed = (same & (index[None, :] <= index[:, None]))[:, None]
    return as_attention_mask(allowed, attn_implementation, dtype)


def preference_ids(ids: Sequence[int | tuple[int, ...]]) -> torch.Tensor:
    """One id per row, or with any blend among them, rows x parts padded with -1."""
    if all(isinstance(i, int) for i in ids):
        return torch.tensor(ids)
    rows = [(i,) if isinstance(i, int) else i for i in ids]
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [-1] * (width - len(r)) for r in rows])
