"""The decode core: rows, streams, stream mixing, sampling and adapter routing, written once.

An answer (a ``Choice``) is decoded from one or more *streams*: the same prompt under a
given control, and for a CLM run through the identity layer (aligned) or around it
(unaligned). Its next-token logits are the weighted sum of its streams' logits: one stream
with weight 1 is plain controlled generation, two with weights (1 - alpha, alpha) are the
alignment dial.

``DecodeBatch`` holds the answers in flight, their streams as consecutive rows of one
left-padded batch with one KV cache. ``join`` prefills newcomers and merges their cache into
the batch; ``step`` advances every row by one token in one forward; ``drop`` removes answers
that are done, cutting the cache columns no remaining row uses, so a step costs what the
rows still running need. Both drivers run this same step: offline generation
(``generation.generate_ids``, synchronous) and the continuous-batching server engine
(``engine.Engine``, a worker thread with a queue).

Why re-batch caches rather than keep one cache per row: one batched forward per step is
what makes many rows cheap; merging costs one copy of the cache when rows join or leave,
about what a step already costs (``DynamicCache`` grows by concatenation).

The CLM identity layer is skipped by a forward in which no row is aligned, which leaves its
cache slot short or missing; those columns only ever feed rows whose output of that layer
is discarded (unaligned rows), so they are zero-filled to keep every layer the same length.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import Blend, Control
from ctrlalign.model.layout import Example, collate, control_prefix, encode_prompt
from ctrlalign.model.logprobs import IGNORE_INDEX

#: temperatures below this are greedy (as in vLLM): dividing logits by a value near zero
#: overflows to inf and the sampling distribution to NaN
GREEDY_BELOW = 1e-5

#: (token, logprob, [(alternative, logprob), ...]) of one generated token
TokenLogprob = tuple[int, float, list[tuple[int, float]]]


@dataclass(frozen=True)
class Stream:
    """A prompt under one control: which preference (its prefix and adapter) or natively
    composed blend of them, and for a CLM run whether it goes through the identity layer
    (aligned) or around it (unaligned)."""

    preference: str | Blend | None = None
    aligned: bool = True


@dataclass(frozen=True)
class Row:
    """One answer to decode: the prompt's messages and the weighted streams it mixes."""

    messages: tuple[tuple[str, str], ...]
    streams: tuple[Stream, ...] = (Stream(),)
    weights: tuple[float, ...] = (1.0,)
    #: this row's own cap (a server's per-request ``max_tokens``); default: the config's
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Sampling:
    """How an answer picks its tokens, the same offline and served; temperature 0 (below
    ``GREEDY_BELOW``) is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    #: answer i draws from a generator seeded ``seed + i``; None: a fresh random seed
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def generator(self, device: torch.device, index: int) -> torch.Generator | None:
        """Answer ``index``'s own generator on ``device`` (torch.multinomial refuses one
        from another device), so its samples do not depend on what it is batched with."""
        if self.greedy:
            return None
        seed = int.from_bytes(os.urandom(8), "little") >> 1 if self.seed is None else self.seed
        return torch.Generator(device=device).manual_seed(seed + index)


@dataclass(eq=False)
class Choice:
    """One answer in flight: its streams encoded, how it samples, what it has produced."""

    examples: tuple[Example, ...]  # one per stream: [control prefix][prompt]
    streams: tuple[Stream, ...]
    weights: tuple[float, ...]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    #: draws this answer's samples (``Sampling.generator``); None when greedy
    generator: torch.Generator | None = None
    #: record each token's log-probability and this many alternatives; None: none
    top_logprobs: int | None = None
    #: what the driver keeps with the answer (the server: its request and text)
    owner: object = None
    ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def finish_reason(self, stop_ids: set[int]) -> str | None:
        """ "stop" after a stop id, "length" at the cap, else None (still running)."""
        if self.ids and self.ids[-1] in stop_ids:
            return "stop"
        if len(self.ids) >= self.max_new_tokens:
            return "length"
        return None


def encode_text(
    tokenizer: PreTrainedTokenizerBase,
    control: Control | None,
    text: str,
    preference: str | Blend | None,
) -> Example:
    """``[control prefix][text]`` for a raw completion: no chat template, the text as given."""
    ids = tokenizer(text).input_ids
    if control is None:
        return Example(ids, [IGNORE_INDEX] * len(ids), 0, 0)
    prefix, preference_id = control_prefix(control, preference)
    ids = prefix + ids
    return Example(ids, [IGNORE_INDEX] * len(ids), preference_id, len(prefix))


def encode_row(
    model: ControlledLM, tokenizer: PreTrainedTokenizerBase, row: Row, text: str | None = None
) -> tuple[Example, ...]:
    """Every stream of ``row`` encoded: its chat messages under the stream's control, or
    ``text`` as a raw completion prompt (the server's ``/v1/completions``)."""
    if text is not None:
        return tuple(encode_text(tokenizer, model.control, text, s.preference) for s in row.streams)
    chat = [{"role": r, "content": c} for r, c in row.messages]
    return tuple(encode_prompt(tokenizer, model.control, chat, s.preference) for s in row.streams)


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One token from a row's logits at the temperature, within the ``top_p`` nucleus."""
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > sampling.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def adapter_plan(model: ControlledLM, streams: Sequence[Stream]) -> tuple | None:
    """How LoRA rows reach their adapters: ("use", pref) when the rows share one (a plain
    PEFT forward, the common case of evaluating one run), ("rows", prefs) for per-row
    adapters or blends, None without per-preference weights."""
    control = model.control
    prefs = tuple(s.preference for s in streams)
    if control is None or not control.per_preference_weights or None in prefs:
        return None  # a missing preference: encode_prompt names the problem
    if len(set(prefs)) == 1 and isinstance(prefs[0], str):
        return ("use", prefs[0])
    return ("rows", prefs)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _pad_right(t: torch.Tensor, width: int) -> torch.Tensor:
    """Keys or values [rows, heads, columns, dim] with zero columns appended up to ``width``."""
    missing = width - t.shape[2]
    if missing <= 0:
        return t
    return torch.cat([t, t.new_zeros(*t.shape[:2], missing, t.shape[3])], 2)


def _cache_from(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A ``DynamicCache`` holding the given (keys, values) per layer, through its public
    ``update`` (so the layers are built the way transformers builds them)."""
    cache = DynamicCache()
    for idx, (keys, values) in enumerate(pairs):
        cache.update(keys, values, idx)
    return cache


class DecodeBatch:
    """The answers in flight and their KV cache; one user at a time (not thread-safe)."""

    def __init__(self, model: ControlledLM, pad_id: int, stop_ids: set[int]):
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = stop_ids
        self.device = next(model.parameters()).device
        self.suppressed = model.control.suppressed_token_ids() if model.control else []
        self.n_layers = model.config.get_text_config().num_hidden_layers
        self.choices: list[Choice] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, columns], 1 where a token is
        self._next: torch.Tensor | None = None  # [rows], the token each row feeds next
        # the adapter routing stays set up while the batch's preferences do not change:
        # PEFT's set_adapter walks every module, which costs as much as a small model's step
        self._adapters = contextlib.ExitStack()
        self._adapter_key: tuple | None = None

    @property
    def rows(self) -> int:
        return 0 if self._mask is None else self._mask.shape[0]

    def reset(self) -> None:
        """An empty batch; the model is left as plain as it was (no per-row patches)."""
        self.choices, self._cache, self._mask, self._next = [], None, None, None
        self._route(None)

    @torch.no_grad()
    def join(self, joiners: list[Choice]) -> list[int]:
        """Prefill ``joiners`` (one forward over the newcomers only), append them to the
        batch and return their first tokens."""
        examples = [e for c in joiners for e in c.examples]
        batch = {k: v.to(self.device) for k, v in collate(examples, self.pad_id, left=True).items()}
        mask = batch["attention_mask"]
        embeds = self.model.embed(batch["input_ids"], batch["prefix_mask"], batch["preference_ids"])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(embeds, mask, positions, cache, joiners)
        self._merge(cache, mask, joiners)
        tokens = self._choose(joiners, logits)
        new = self._feed(joiners, tokens)
        self._next = new if self._next is None else torch.cat([self._next, new])
        return tokens

    @torch.no_grad()
    def step(self) -> list[int]:
        """Every answer's next token, from one batched forward over all rows."""
        step_ids = self._next.unsqueeze(-1)
        positions = self._mask.sum(-1, keepdim=True)  # real tokens so far = the next position
        self._mask = torch.cat([self._mask, torch.ones_like(step_ids)], dim=-1)
        embeds = self.model.embed(step_ids)
        logits = self._forward(embeds, self._mask, positions, self._cache, self.choices)
        self._complete_layers()
        tokens = self._choose(self.choices, logits)
        self._next = self._feed(self.choices, tokens)
        return tokens

    def drop(self, indices: set[int]) -> None:
        """Remove the answers at ``indices`` and the cache columns no remaining row uses."""
        if not indices:
            return
        keep_choices = [c for i, c in enumerate(self.choices) if i not in indices]
        if not keep_choices:
            self.reset()
            return
        rows, start = [], 0
        for i, choice in enumerate(self.choices):
            if i not in indices:
                rows += range(start, start + len(choice.streams))
            start += len(choice.streams)
        keep = torch.tensor(rows, device=self.device)
        mask = self._mask.index_select(0, keep)
        used = mask.sum(0).nonzero()
        first = int(used[0]) if len(used) else 0
        pairs = self._layer_pairs(self._cache, self._mask.shape[0], self._mask.shape[1])
        self._cache = _cache_from(
            [
                (k.index_select(0, keep)[:, :, first:], v.index_select(0, keep)[:, :, first:])
                for k, v in pairs
            ]
        )
        self._mask = mask[:, first:]
        self._next = self._next.index_select(0, keep)
        self.choices = keep_choices

    # -- one forward, the mix and the pick ---------------------------------------------

    def _route(self, plan: tuple | None) -> None:
        if plan == self._adapter_key:
            return
        self._adapters.close()
        self._adapter_key = plan
        if plan is not None:
            kind, prefs = plan
            control = self.model.control
            context = control.use(prefs) if kind == "use" else control.per_row(list(prefs))
            self._adapters.enter_context(context)

    def _forward(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
        choices: Sequence[Choice],
    ) -> torch.Tensor:
        """Last-position logits of every row, each through its own control and CLM switch."""
        streams = [s for c in choices for s in c.streams]
        aligned = torch.tensor([s.aligned for s in streams], device=self.device)
        self._route(adapter_plan(self.model, streams))
        with self.model.aligned_rows(aligned):
            out = self.model.lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.model.cache_argument: cache},
            )
        return out.logits[:, -1].float()

    def _mix(self, choices: Sequence[Choice], logits: torch.Tensor) -> torch.Tensor:
        """Each answer's logits: the weighted sum of its streams' rows (the one place
        streams are mixed); tokens the control reserves can never be picked."""
        owner = torch.tensor(
            [i for i, c in enumerate(choices) for _ in c.streams], device=self.device
        )
        weights = torch.tensor([w for c in choices for w in c.weights], device=self.device)
        mixed = torch.zeros(len(choices), logits.shape[-1], device=self.device)
        mixed.index_add_(0, owner, logits * weights.unsqueeze(-1))
        if self.suppressed:
            mixed[:, self.suppressed] = float("-inf")
        return mixed

    def _choose(self, choices: Sequence[Choice], logits: torch.Tensor) -> list[int]:
        """Each answer's next token by its own sampling, appended to its ``ids``."""
        mixed = self._mix(choices, logits)
        tokens = mixed.argmax(-1).tolist()
        for i, choice in enumerate(choices):
            if not choice.sampling.greedy:
                tokens[i] = sample(mixed[i], choice.sampling, choice.generator)
            if choice.top_logprobs is not None:
                # the answer's own distribution (its streams mixed, the dial included),
                # before temperature and top_p, as vLLM reports by default
                logps = torch.log_softmax(mixed[i], dim=-1)
                top = logps.topk(choice.top_logprobs) if choice.top_logprobs else None
                alternatives = (
                    list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else []
                )
                choice.logprobs.append((tokens[i], float(logps[tokens[i]]), alternatives))
            choice.ids.append(tokens[i])
        return tokens

    def _feed(self, choices: Sequence[Choice], tokens: list[int]) -> torch.Tensor:
        """The token each of these answers' rows feeds at the next step."""
        ids = [t for c, t in zip(choices, tokens, strict=True) for _ in c.streams]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # -- the KV cache ------------------------------------------------------------------

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, joiners: list[Choice]) -> None:
        """Append the newcomers' prefilled cache to the batch's, both left-padded to one
        width (padding columns are masked, so they change nothing)."""
        new = self._layer_pairs(cache, mask.shape[0], mask.shape[1])
        if not self.choices:
            self._cache, self._mask, self.choices = _cache_from(new), mask, list(joiners)
            return
        width = max(mask.shape[1], self._mask.shape[1])
        old = self._layer_pairs(self._cache, self._mask.shape[0], self._mask.shape[1])
        pairs = [
            (
                torch.cat([_pad_left(k0, width, 2), _pad_left(k1, width, 2)]),
                torch.cat([_pad_left(v0, width, 2), _pad_left(v1, width, 2)]),
            )
            for (k0, v0), (k1, v1) in zip(old, new, strict=True)
        ]
        self._cache = _cache_from(pairs)
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self.choices += joiners

    def _layer_pairs(
        self, cache: DynamicCache, rows: int, width: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) of every decoder layer at ``width`` columns; a layer that a forward
        skipped (the CLM layer when no row was aligned) is zero-filled: only unaligned rows,
        whose output of that layer is discarded, ever read those columns."""
        layers = [layer for layer in cache.layers if layer.is_initialized]
        ref_k, ref_v = layers[0].keys, layers[0].values
        pairs = []
        for idx in range(max(self.n_layers, len(cache.layers))):
            layer = cache.layers[idx] if idx < len(cache.layers) else None
            if layer is None or not layer.is_initialized:
                k = ref_k.new_zeros(rows, ref_k.shape[1], width, ref_k.shape[3])
                v = ref_v.new_zeros(rows, ref_v.shape[1], width, ref_v.shape[3])
            else:  # skipped at the last steps: the missing columns go last
                k, v = _pad_right(layer.keys, width), _pad_right(layer.values, width)
            pairs.append((k, v))
        return pairs

    def _complete_layers(self) -> None:
        """After a step that skipped the CLM layer: give it this step's column (zeros) in
        place, so every layer keeps the mask's width without copying the others."""
        width = self._mask.shape[1]
        layers = self._cache.layers
        if len(layers) < self.n_layers or any(not layer.is_initialized for layer in layers):
            self._cache = _cache_from(self._layer_pairs(self._cache, self.rows, width))
            return
        for layer in layers:
            layer.keys, layer.values = (
                _pad_right(layer.keys, width),
                _pad_right(layer.values, width),
            )
