"""Batched generation where every row may use its own control, and logits may be mixed.

Each output row is decoded from one or more *streams* (the same prompt under a given
control); the row's next-token logits are a weighted sum of its streams' logits. One stream
with weight 1 is plain controlled generation; two streams with weights (1 - a, a) are the
alignment dial. All streams of all rows run in one left-padded batch with one KV cache, so
a mixed batch gives the tokens each row would get alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedTokenizerBase

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import Blend
from ctrlalign.model.layout import Message, collate, encode_prompt


@dataclass(frozen=True)
class Stream:
    """A prompt under one control: which preference (its prefix and adapter) or natively
    composed blend of them, and for a CLM run whether it goes through the identity layer
    (aligned) or around it (unaligned)."""

    preference: str | Blend | None = None
    aligned: bool = True


@dataclass(frozen=True)
class Row:
    messages: tuple[tuple[str, str], ...]
    streams: tuple[Stream, ...] = (Stream(),)
    weights: tuple[float, ...] = (1.0,)
    #: this row's own cap (a server's per-request ``max_tokens``); default: the config's
    max_new_tokens: int | None = None


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    stop_ids: list[int] = field(default_factory=list)


def as_messages(prompt: str | Sequence[Message]) -> tuple[tuple[str, str], ...]:
    if isinstance(prompt, str):
        return (("user", prompt),)
    return tuple((m["role"], m["content"]) for m in prompt)


def plain_row(prompt: str | Sequence[Message], preference: str | Blend | None = None) -> Row:
    return Row(as_messages(prompt), (Stream(preference),), (1.0,))


def alpha_row(
    prompt: str | Sequence[Message],
    alpha: float,
    preference: str | Blend | None = None,
    against: str | None = None,
    high: Sequence[tuple[Stream, float]] | None = None,
) -> Row:
    """The alignment dial: logits = (1 - alpha) * low + alpha * high.

    Without ``against`` (a CLM run) low is the unaligned stream and high the aligned one;
    with it (a MEET run) low is the ``against`` control and high ``preference``, or the
    weighted streams of ``high`` (a blend composed by logits, weights summing to 1). At
    alpha 0 or 1 only the side with weight 1 runs; alpha < 0 or > 1 extrapolates.
    """
    if against is None:
        low = Stream(preference, aligned=False)
    else:
        if preference is None and high is None:
            raise ValueError("--against needs --preference (the side alpha moves towards)")
        low = Stream(against)
    parts = [(low, 1.0 - alpha)] + [(s, alpha * w) for s, w in high or [(Stream(preference), 1.0)]]
    parts = [(s, w) for s, w in parts if w != 0]
    streams, weights = zip(*parts, strict=True)
    return Row(as_messages(prompt), streams, weights)


def _alignment(rows: Sequence[Row]) -> torch.Tensor:
    """Per batch row (streams in the order ``_generate_batch`` lays them out): aligned?"""
    return torch.tensor([s.aligned for row in rows for s in row.streams])


def _pick(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator):
    if config.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > config.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _adapters_for(model: ControlledLM, rows: Sequence[Row]) -> contextlib.AbstractContextManager:
    """Route each LoRA stream through its preference's adapter: one adapter for the whole
    batch when the rows share a preference (the common case, e.g. evaluating one run; a
    plain forward), per-row adapters otherwise."""
    if model.control is None or not model.control.per_preference_weights:
        return contextlib.nullcontext()
    prefs = [s.preference for row in rows for s in row.streams]
    if None in prefs:
        return contextlib.nullcontext()  # encode_prompt names the problem
    if len(set(prefs)) == 1 and isinstance(prefs[0], str):
        return model.control.use(prefs[0])
    return model.control.per_row(prefs)


@torch.no_grad()
def _generate_batch(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: GenerationConfig,
    generator: torch.Generator,
) -> list[list[int]]:
    examples, owner, weights = [], [], []
    for i, row in enumerate(rows):
        for stream, weight in zip(row.streams, row.weights, strict=True):
            chat = [{"role": r, "content": c} for r, c in row.messages]
            examples.append(encode_prompt(tokenizer, model.control, chat, stream.preference))
            owner.append(i)
            weights.append(weight)
    device = next(model.parameters()).device
    batch = {
        k: v.to(device) for k, v in collate(examples, tokenizer.pad_token_id, left=True).items()
    }
    owner_t = torch.tensor(owner, device=device)
    weight_t = torch.tensor(weights, device=device).unsqueeze(-1)
    suppressed = model.control.suppressed_token_ids() if model.control is not None else []
    stop = torch.tensor(config.stop_ids or model.end_ids(tokenizer), device=device)

    limits = torch.tensor(
        [row.max_new_tokens or config.max_new_tokens for row in rows], device=device
    )
    mask = batch["attention_mask"]
    embeds = model.embed(batch["input_ids"], batch["prefix_mask"], batch["preference_ids"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = {model.cache_argument: DynamicCache()}
    out = [[] for _ in rows]
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    for step in range(int(limits.max())):
        logits = (
            model.lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **cache,
            )
            .logits[:, -1]
            .float()
        )
        mixed = torch.zeros(len(rows), logits.shape[-1], device=device)
        mixed.index_add_(0, owner_t, logits * weight_t)
        if suppressed:
            mixed[:, suppressed] = float("-inf")
        nxt = _pick(mixed, config, generator)
        for i in (~done).nonzero(as_tuple=True)[0].tolist():
            out[i].append(int(nxt[i]))
        done |= torch.isin(nxt, stop) | (limits <= step + 1)
        if bool(done.all()):
            break
        step_ids = nxt[owner_t].unsqueeze(-1)
        embeds = model.embed(step_ids)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=-1)
        positions = positions[:, -1:] + 1
    return out


def generate_ids(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: GenerationConfig | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """The new token ids of every row, in the order of ``rows``; a row that stopped ends
    with its stop id (so a caller can tell a stop from running out of tokens)."""
    config = config or GenerationConfig()
    model.eval()
    # on the model's device: torch.multinomial refuses a generator from another device
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    out: list[list[int]] = []
    starts = range(0, len(rows), config.batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress):
        batch = rows[start : start + config.batch_size]
        with model.aligned_rows(_alignment(batch)), _adapters_for(model, batch):
            out += _generate_batch(model, tokenizer, batch, config, generator)
    return out


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int], config: GenerationConfig) -> str:
    """A response's text: the stop id dropped, special tokens skipped (the model's other
    end tokens are special tokens too)."""
    stop = set(config.stop_ids or [tokenizer.eos_token_id])
    ids = ids[:-1] if ids and ids[-1] in stop else ids
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_rows(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: GenerationConfig | None = None,
    progress: bool = False,
) -> list[str]:
    """Decode every row; returns the response texts in the order of ``rows``."""
    config = config or GenerationConfig()
    ids = generate_ids(model, tokenizer, rows, config, progress)
    return [decode(tokenizer, row_ids, config) for row_ids in ids]


def blend_streams(preference: str | Blend | None, compose: str) -> list[tuple[Stream, float]]:
    """The streams that answer under ``preference`` and their weights: one stream, or for
    a blend composed by logits one per part, the weights scaled to sum to 1 (by the
    largest first, so huge weights cannot overflow the sum)."""
    if not isinstance(preference, Blend) or compose == "native":
        return [(Stream(preference), 1.0)]
    largest = max(preference.weights)
    total = sum(w / largest for w in preference.weights)
    return [(Stream(n), w / largest / total) for n, w in preference.parts]


def generate(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Sequence[Message]],
    preferences: Sequence[str | Mapping[str, float] | None] | str | Mapping[str, float] | None,
    config: GenerationConfig | None = None,
    progress: bool = False,
    compose: str = "native",
) -> list[str]:
    """Answer each prompt under its preference (one for all, or one per prompt); a
    preference may be a blend ``{name: weight}``, composed natively by the control or, with
    ``compose="logits"``, by mixing one stream per preference."""
    if preferences is None or isinstance(preferences, str | Mapping):
        preferences = [preferences] * len(prompts)
    if len(preferences) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(preferences)} preferences")
    rows = []
    for prompt, pref in zip(prompts, preferences, strict=True):
        blend = Blend.of(pref) if isinstance(pref, Mapping) else pref
        streams, weights = zip(*blend_streams(blend, compose), strict=True)
        rows.append(Row(as_messages(prompt), streams, weights))
    return generate_rows(model, tokenizer, rows, config, progress)
