"""Continuous batching: one decode loop in which every step advances every active row.

``generation.generate_ids`` fixes a batch when it starts: a request that arrives a moment
later waits for the batch's longest answer, and rows that stopped are still computed until
the last one stops. A server needs the opposite, so here one worker thread owns a batch
whose rows change at every step:

- a request waits in a bounded queue (``QueueFull`` when it is full, so a server can answer
  429 instead of piling up work it will never finish in time);
- at the next step its prompt is prefilled (one forward over the newcomers only), its first
  token sampled, and its KV cache merged into the running batch by left-padding;
- every step then feeds each active row its last token in one batched forward;
- a row that stops (end of turn, a stop string, its own ``max_tokens``, its client gone)
  leaves the batch at once: its cache rows are dropped and columns that only it used are
  cut, so the next step costs what the rows still running need.

Each row keeps what ``generation.Row`` gives it (its streams, their weights: a control per
row, the alignment dial per row) plus its own sampling: temperature, top_p and a
``torch.Generator`` on the model's device seeded per choice, so a seeded answer does not
depend on what it was batched with, and greedy answers equal one-by-one generation.

Why re-batch caches rather than keep one cache per row: one batched forward per step is
what makes concurrent users cheap; merging costs one copy of the cache when rows join or
leave, about what a step already costs (``DynamicCache`` grows by concatenation).

The CLM identity layer is skipped by a forward in which no row is aligned, which leaves its
cache slot short or missing; those columns only ever feed rows whose output of that layer
is discarded (unaligned rows), so they are zero-filled to keep every layer the same length.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from ctrlalign.inference.generation import GenerationConfig, Row, Stream, _pick
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import Blend, Control
from ctrlalign.model.layout import (
    Example,
    Message,
    collate,
    control_prefix,
    encode_prompt,
    prompt_ids,
)
from ctrlalign.model.logprobs import IGNORE_INDEX

log = logging.getLogger(__name__)

SCHEDULERS = ("continuous", "static")
#: temperatures below this are greedy (as in vLLM): dividing logits by a value near zero
#: overflows to inf and the sampling distribution to NaN
GREEDY_BELOW = 1e-5


class QueueFull(RuntimeError):
    """The engine already holds ``max_queue`` waiting requests (HTTP 429)."""


class EngineClosed(RuntimeError):
    """The engine is shutting down and takes no new requests (HTTP 503)."""


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens; temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    #: choice i draws from a generator seeded ``seed + i``; None: a fresh random seed
    seed: int | None = None


@dataclass(frozen=True)
class Job:
    """One request as the engine runs it: its prompt encoded under each stream, and what
    every one of its ``n`` choices stops on."""

    examples: tuple[Example, ...]  # one per stream: [control prefix][prompt]
    streams: tuple[Stream, ...]
    weights: tuple[float, ...]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    n: int = 1
    stop: tuple[str, ...] = ()
    #: chat answers are stripped like ``generation.decode``; raw completions keep their spaces
    strip: bool = True
    #: send a ``token`` event per generated token (streaming); otherwise only ``finish``
    stream: bool = False
    #: the prompt's own tokens, control prefix excluded (what ``usage`` reports)
    prompt_tokens: int = 0
    #: report each token's log-probability and this many alternatives; None: none
    logprobs: int | None = None

    @property
    def total_prompt_tokens(self) -> int:
        """Tokens the longest stream prefills (the control prefix included)."""
        return max(len(e.input_ids) for e in self.examples)


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
) -> tuple[tuple[Example, ...], int]:
    """Every stream of ``row`` encoded (its chat messages, or ``text`` as a raw completion
    prompt), and the prompt's own token count."""
    chat: list[Message] = [{"role": r, "content": c} for r, c in row.messages]
    examples = []
    for stream in row.streams:
        if text is None:
            examples.append(encode_prompt(tokenizer, model.control, chat, stream.preference))
        else:
            examples.append(encode_text(tokenizer, model.control, text, stream.preference))
    own = len(tokenizer(text).input_ids) if text is not None else len(prompt_ids(tokenizer, chat))
    return tuple(examples), own


@dataclass
class Event:
    """What the engine tells a request's sink, from the worker thread."""

    kind: str  # "token" (streaming only), "finish" (one per choice), "error"
    choice: int = 0
    #: token: the new text (may be empty: a partial character, a held-back stop prefix);
    #: finish: the text not sent yet
    text: str = ""
    content: str = ""  # finish: the whole answer
    finish_reason: str | None = None  # finish: "stop" or "length"
    completion_tokens: int = 0
    error: Exception | None = None
    #: with ``Job.logprobs``: (token, logprob, [(alternative, logprob), ...]) per token;
    #: a token event has its own token's, a finish event every token's
    logprobs: list[TokenLogprob] | None = None


Sink = Callable[[Event], None]
TokenLogprob = tuple[int, float, list[tuple[int, float]]]


@dataclass
class Handle:
    """A submitted request: ``cancel`` drops its rows at the next step (client gone)."""

    job: Job
    sink: Sink
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    cancelled: bool = False
    admitted: int = 0  # choices that have joined the batch so far
    finished: int = 0

    def cancel(self) -> None:
        self.cancelled = True


class _Text:
    """A choice's token ids as text while they come: stop strings end it, and text that is
    sent early is never taken back (a partial character, trailing spaces that a stripped
    answer would lose, or the start of a stop string are held until they are safe)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, job: Job, stop_ids: set[int]):
        self.tokenizer = tokenizer
        self.stops = job.stop
        self.strip = job.strip
        self.stop_ids = stop_ids
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.sent = ""
        self.final: str | None = None

    def _decode(self, ids: list[int]) -> str:
        ids = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text.lstrip() if self.strip else text

    def update(self, ids: list[int], stream: bool) -> tuple[str, bool]:
        """(new text safe to send, whether a stop string ended the answer)."""
        if not self.stops and not stream:
            return "", False
        text = self._decode(ids)
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.final = text[: min(hits)]
            return "", True
        if not stream:
            return "", False
        safe = text[: max(0, len(text) - self.hold)].rstrip("\ufffd")
        if self.strip:
            safe = safe.rstrip()
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return "", False
        delta, self.sent = safe[len(self.sent) :], safe
        return delta, False

    def finish(self, ids: list[int]) -> tuple[str, str]:
        """(the text not sent yet, the whole answer)."""
        content = self.final if self.final is not None else self._decode(ids)
        if self.strip:
            content = content.strip()
        if not content.startswith(self.sent):  # a tokenizer that rewrites earlier text
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, content)
            return "", content
        return content[len(self.sent) :], content


@dataclass
class _Seq:
    """One choice in flight: its streams occupy consecutive rows of the batch."""

    handle: Handle
    choice: int
    config: GenerationConfig
    generator: torch.Generator | None
    text: _Text
    ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def job(self) -> Job:
        return self.handle.job


def _adapter_plan(model: ControlledLM, prefs: Sequence[str | Blend | None]) -> tuple | None:
    """How LoRA rows reach their adapters: ("use", pref) when the rows share one (a plain
    PEFT forward), ("rows", prefs) for per-row adapters or blends, None without per-row
    weights."""
    control = model.control
    if control is None or not control.per_preference_weights or None in prefs:
        return None
    if len(set(prefs)) == 1 and isinstance(prefs[0], str):
        return ("use", prefs[0])
    return ("rows", tuple(prefs))


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _cache_from(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A ``DynamicCache`` holding the given (keys, values) per layer, through its public
    ``update`` (so the layers are built the way transformers builds them)."""
    cache = DynamicCache()
    for idx, (keys, values) in enumerate(pairs):
        cache.update(keys, values, idx)
    return cache


class Engine:
    """The decode loop and its queue; one worker thread is the model's only user.

    ``scheduler="static"`` reproduces micro-batching for comparison: a batch is admitted
    only when the previous one has finished (rows still leave as soon as they stop).
    ``max_batch_size`` counts choices (rows of answers); a dial row runs two streams.
    ``max_prefill_tokens`` caps the prompt tokens one step prefills (one request always
    joins), so a burst of arrivals cannot stall the running rows for all of its prefill:
    they advance between its parts, as vLLM's ``max_num_batched_tokens`` does.
    """

    def __init__(
        self,
        model: ControlledLM,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_size: int = 16,
        max_queue: int = 256,
        scheduler: str = "continuous",
        batch_wait_s: float = 0.0,
        on_step: Callable[[int, int], None] | None = None,
        max_prefill_tokens: int = 4096,
    ):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose from {SCHEDULERS}")
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.scheduler = scheduler
        self.batch_wait_s = batch_wait_s
        self.on_step = on_step
        self.max_prefill_tokens = max_prefill_tokens
        self.device = next(model.parameters()).device
        self.stop_ids = set(model.end_ids(tokenizer))  # as generation.py stops
        self.suppressed = model.control.suppressed_token_ids() if model.control else []
        self.n_layers = model.config.get_text_config().num_hidden_layers
        self.cache_keyword = model.cache_argument
        self.stats = {"requests": 0, "steps": 0, "prefills": 0, "max_rows": 0, "tokens": 0}
        self._waiting: collections.deque[Handle] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = False
        self._seqs: list[_Seq] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, columns], 1 where a token is
        self._next: torch.Tensor | None = None  # [rows], the token each row feeds next
        # the adapter routing stays set up while the batch's preferences do not change:
        # PEFT's set_adapter walks every module, which costs as much as a small model's step
        self._adapters = contextlib.ExitStack()
        self._adapter_key: tuple | None = None
        self._thread = threading.Thread(target=self._loop, name="ctrlalign-engine", daemon=True)
        model.eval()
        self._thread.start()

    # -- the public side (any thread) -------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._waiting)

    @property
    def active_rows(self) -> int:
        return len(self._seqs)

    def submit(self, job: Job, sink: Sink) -> Handle:
        """Queue ``job``; events go to ``sink`` from the worker thread."""
        handle = Handle(job, sink)
        with self._cond:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(handle)
            self.stats["requests"] += 1
            self._cond.notify()
        return handle

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish those in flight (for ``timeout`` seconds at most,
        then cancel them with an error) and stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abort = True
                self._cond.notify()
            self._thread.join()

    # -- the worker ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._seqs and not self._closing:
                    self._cond.wait()
                if self._abort or (self._closing and not self._waiting and not self._seqs):
                    break
            joiners = self._admit()
            try:
                with torch.no_grad():
                    if joiners:
                        self._prefill(joiners)
                    if self._seqs:
                        self._decode()
            except Exception as err:  # every row involved hears of it; the loop goes on
                log.exception("generation failed for %d rows", len(self._seqs) + len(joiners))
                failed = {id(s.handle): s.handle for s in [*self._seqs, *joiners]}
                self._reset()
                for handle in failed.values():
                    handle.cancelled = True
                    handle.sink(Event("error", error=err))
        closed = EngineClosed("the server shut down before this request finished")
        handles = {id(s.handle): s.handle for s in self._seqs} | {id(h): h for h in self._waiting}
        self._reset()
        self._waiting.clear()
        for handle in handles.values():
            handle.sink(Event("error", error=closed))

    def _reset(self) -> None:
        """An empty batch; the model is left as plain as it was (no per-row patches)."""
        self._seqs, self._cache, self._mask, self._next = [], None, None, None
        self._route(None)

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

    def _admit(self) -> list[_Seq]:
        """The choices that join the batch at this step."""
        if self.scheduler == "static" and self._seqs:
            return []
        free = self.max_batch_size - len(self._seqs)
        if not self._seqs and self.batch_wait_s > 0 and free > 1:
            # an idle engine waits a moment for company: requests sent together share a prefill
            deadline = time.monotonic() + self.batch_wait_s
            with self._cond:
                while (
                    sum(h.job.n - h.admitted for h in self._waiting) < free
                    and not self._closing
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
        joiners: list[_Seq] = []
        tokens = 0
        with self._cond:
            while self._waiting and len(joiners) < free:
                handle = self._waiting[0]
                if handle.cancelled:
                    self._waiting.popleft()
                    continue
                cost = sum(len(e.input_ids) for e in handle.job.examples)
                if joiners and tokens + cost > self.max_prefill_tokens:
                    break  # the rest join at the next step, after the running rows advance
                tokens += cost
                joiners.append(self._new_seq(handle, handle.admitted))
                handle.admitted += 1
                if handle.admitted == handle.job.n:
                    self._waiting.popleft()
        return joiners

    def _new_seq(self, handle: Handle, choice: int) -> _Seq:
        sampling = handle.job.sampling
        temperature = sampling.temperature if sampling.temperature >= GREEDY_BELOW else 0.0
        config = GenerationConfig(temperature=temperature, top_p=sampling.top_p)
        generator = None
        if temperature > 0:
            seed = sampling.seed
            seed = int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed + choice
            # on the model's device: torch.multinomial refuses a generator from another one
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return _Seq(
            handle, choice, config, generator, _Text(self.tokenizer, handle.job, self.stop_ids)
        )

    def _forward(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
        streams: Sequence[Stream],
    ) -> torch.Tensor:
        """Last-position logits of every row, each through its own control and CLM switch."""
        aligned = torch.tensor([s.aligned for s in streams], device=self.device)
        self._route(_adapter_plan(self.model, [s.preference for s in streams]))
        with self.model.aligned_rows(aligned):
            out = self.model.lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_keyword: cache},
            )
        return out.logits[:, -1].float()

    def _streams(self, seqs: Sequence[_Seq]) -> list[Stream]:
        return [s for seq in seqs for s in seq.job.streams]

    def _prefill(self, joiners: list[_Seq]) -> None:
        examples = [e for seq in joiners for e in seq.job.examples]
        batch = {
            k: v.to(self.device)
            for k, v in collate(examples, self.tokenizer.pad_token_id, left=True).items()
        }
        mask = batch["attention_mask"]
        embeds = self.model.embed(batch["input_ids"], batch["prefix_mask"], batch["preference_ids"])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(embeds, mask, positions, cache, self._streams(joiners))
        self.stats["prefills"] += 1
        self._merge(cache, mask, joiners)
        tokens = self._pick(joiners, logits)
        now = time.monotonic()
        for seq in joiners:
            if seq.handle.first_token is None:
                seq.handle.first_token = now
        self._advance(joiners, tokens, first=len(self._seqs) - len(joiners))

    def _decode(self) -> None:
        rows = self._mask.shape[0]
        step_ids = self._next.unsqueeze(-1)
        positions = self._mask.sum(-1, keepdim=True)  # real tokens so far = the next position
        self._mask = torch.cat([self._mask, torch.ones_like(step_ids)], dim=-1)
        logits = self._forward(
            self.model.embed(step_ids),
            self._mask,
            positions,
            self._cache,
            self._streams(self._seqs),
        )
        self._complete_layers()
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self._seqs))
        if self.on_step is not None:
            self.on_step(len(self._seqs), len(self._waiting))
        log.debug("step: %d choices in %d rows", len(self._seqs), rows)
        self._advance(list(self._seqs), self._pick(self._seqs, logits), first=0)

    def _pick(self, seqs: Sequence[_Seq], logits: torch.Tensor) -> list[int]:
        """Each choice's next token from its streams' mixed logits, by its own sampling."""
        owner = torch.tensor(
            [i for i, seq in enumerate(seqs) for _ in seq.job.streams], device=self.device
        )
        weights = torch.tensor(
            [w for seq in seqs for w in seq.job.weights], device=self.device
        ).unsqueeze(-1)
        mixed = torch.zeros(len(seqs), logits.shape[-1], device=self.device)
        mixed.index_add_(0, owner, logits * weights)
        if self.suppressed:
            mixed[:, self.suppressed] = float("-inf")
        tokens = mixed.argmax(-1).tolist()
        for i, seq in enumerate(seqs):
            if seq.generator is not None:
                tokens[i] = int(_pick(mixed[i : i + 1], seq.config, seq.generator)[0])
            if seq.job.logprobs is not None:
                # the row's own distribution (its streams mixed, the dial included), before
                # temperature and top_p, as vLLM reports by default
                logps = torch.log_softmax(mixed[i], dim=-1)
                top = logps.topk(seq.job.logprobs) if seq.job.logprobs else None
                alternatives = (
                    list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else []
                )
                seq.logprobs.append((tokens[i], float(logps[tokens[i]]), alternatives))
        return tokens

    def _advance(self, seqs: list[_Seq], tokens: list[int], first: int) -> None:
        """Append each choice's token, tell its sink, and drop the rows that are done;
        ``seqs`` are the batch's choices from index ``first`` on."""
        done = set()
        next_ids = []
        for offset, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            handle = seq.handle
            seq.ids.append(token)
            self.stats["tokens"] += 1
            delta, stopped = seq.text.update(seq.ids, handle.job.stream)
            reason = None
            if stopped or token in self.stop_ids:
                reason = "stop"
            elif len(seq.ids) >= handle.job.max_new_tokens:
                reason = "length"
            if handle.cancelled:
                done.add(first + offset)
            elif reason is not None:
                done.add(first + offset)
                rest, content = seq.text.finish(seq.ids)  # after this token's own delta
                handle.finished += 1
                event = Event("finish", seq.choice, delta + rest, content, reason, len(seq.ids))
                event.logprobs = list(seq.logprobs) if handle.job.logprobs is not None else None
                handle.sink(event)
            elif handle.job.stream:
                event = Event("token", seq.choice, delta, completion_tokens=len(seq.ids))
                event.logprobs = seq.logprobs[-1:] if handle.job.logprobs is not None else None
                handle.sink(event)
            next_ids += [token] * len(seq.job.streams)
        # the rows these choices feed next (all rows when this is a decode step)
        new = torch.tensor(next_ids, dtype=torch.long, device=self.device)
        if first == 0:
            self._next = new
        else:
            self._next = torch.cat([self._next[: self._rows_before(first)], new])
        cancelled = {i for i, s in enumerate(self._seqs) if s.handle.cancelled}
        if done or cancelled:
            self._remove(done | cancelled)

    def _rows_before(self, index: int) -> int:
        return sum(len(s.job.streams) for s in self._seqs[:index])

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, joiners: list[_Seq]) -> None:
        """Append the newcomers' prefilled cache to the batch's, both left-padded to one
        width (padding columns are masked, so they change nothing)."""
        new = self._layer_pairs(cache, mask.shape[0], mask.shape[1])
        if not self._seqs:
            self._cache, self._mask, self._seqs = _cache_from(new), mask, list(joiners)
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
        self._seqs += joiners

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
            else:
                k, v = layer.keys, layer.values
                if k.shape[2] < width:  # skipped at the last steps: the missing columns go last
                    k = torch.cat([k, k.new_zeros(*k.shape[:2], width - k.shape[2], k.shape[3])], 2)
                    v = torch.cat([v, v.new_zeros(*v.shape[:2], width - v.shape[2], v.shape[3])], 2)
            pairs.append((k, v))
        return pairs

    def _complete_layers(self) -> None:
        """After a step that skipped the CLM layer: give it this step's column (zeros) in
        place, so every layer keeps the mask's width without copying the others."""
        width = self._mask.shape[1]
        layers = self._cache.layers
        if len(layers) < self.n_layers or any(not layer.is_initialized for layer in layers):
            rows = self._mask.shape[0]
            self._cache = _cache_from(self._layer_pairs(self._cache, rows, width))
            return
        for layer in layers:
            missing = width - layer.keys.shape[2]
            if missing > 0:
                k, v = layer.keys, layer.values
                layer.keys = torch.cat([k, k.new_zeros(*k.shape[:2], missing, k.shape[3])], 2)
                layer.values = torch.cat([v, v.new_zeros(*v.shape[:2], missing, v.shape[3])], 2)

    def _remove(self, indices: set[int]) -> None:
        """Drop finished or cancelled choices and the columns no remaining row uses."""
        keep_seqs = [s for i, s in enumerate(self._seqs) if i not in indices]
        if not keep_seqs:
            self._reset()
            return
        rows = []
        for i, seq in enumerate(self._seqs):
            start = self._rows_before(i)
            if i not in indices:
                rows += range(start, start + len(seq.job.streams))
        keep = torch.tensor(rows, device=self.device)
        mask = self._mask.index_select(0, keep)
        used = mask.sum(0).nonzero()
        start = int(used[0]) if len(used) else 0
        pairs = self._layer_pairs(self._cache, self._mask.shape[0], self._mask.shape[1])
        self._cache = _cache_from(
            [
                (k.index_select(0, keep)[:, :, start:], v.index_select(0, keep)[:, :, start:])
                for k, v in pairs
            ]
        )
        self._mask = mask[:, start:]
        self._next = self._next.index_select(0, keep)
        self._seqs = keep_seqs
