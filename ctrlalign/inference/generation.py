"""Offline generation: rows decoded by the decode core's step, driven synchronously.

Every output row is one ``decode.Row`` (its streams and their weights: a control per row,
the alignment dial per row). ``generate_ids`` keeps up to ``batch_size`` rows in flight in
one ``DecodeBatch``: a row that stops leaves at once and the next waiting row joins, so a
long answer does not hold the others' places. It is the step the server's engine runs, so a
mixed batch gives the tokens each row would get alone, offline and served.

With ``engine`` (a ``jobs.ServingEngine``, e.g. ``--engine vllm``), the same rows are jobs
of that engine instead, all submitted at once so it batches them as it would a server's.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ctrlalign.inference.decode import Choice, DecodeBatch, Row, Sampling, Stream, encode_row
from ctrlalign.inference.jobs import Event, Job, QueueFull, ServingEngine
from ctrlalign.inference.serving.engines import ENGINE_CHOICES
from ctrlalign.model.controlled_lm import ControlledLM
from ctrlalign.model.controls import Blend
from ctrlalign.model.layout import Message


@dataclass
class GenerationConfig:
    """How offline generation decodes; the CLI builds one flag per field."""

    max_new_tokens: int = field(
        default=128, metadata={"help": "cap on new tokens per answer (a row may set its own)"}
    )
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 is greedy"})
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "nucleus sampling: keep the smallest set of tokens "
            "whose probability reaches top_p (1 keeps all)"
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "row i samples from a generator seeded seed + i, so "
            "an answer does not depend on what it is batched with"
        },
    )
    batch_size: int = field(
        default=8,
        metadata={"help": "answers decoded together; a finished one makes room for the next"},
    )
    stop_ids: list[int] = field(
        default_factory=list,
        metadata={"help": "token ids that end an answer (default: the model's end tokens)"},
    )
    engine: str = field(
        default="builtin",
        metadata={
            "help": "what decodes: builtin (the decode core, in this process), vllm (vLLM's "
            "engine over the run exported to RUN/vllm; needs `make serve-env`), auto (vllm on "
            "a GPU where it is installed)",
            "choices": ENGINE_CHOICES,
        },
    )

    def __post_init__(self) -> None:
        """Refuse what would decode nothing (or forever: no room for a row), naming the flag."""
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"--top-p must be within [0, 1], got {self.top_p}")

    def sampling(self) -> Sampling:
        """How every row samples; row i from a generator seeded ``seed + i``."""
        return Sampling(self.temperature, self.top_p, self.seed)


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
    max_new_tokens: int | None = None,
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
    return Row(as_messages(prompt), streams, weights, max_new_tokens)


def _choices(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Row],
    config: GenerationConfig,
) -> list[Choice]:
    """Each row encoded under each of its streams, with its own sampler: row i draws from
    a generator seeded ``config.seed + i``, as the server's choice i of a seeded request."""
    device = next(model.parameters()).device
    sampling = config.sampling()
    out = []
    for i, row in enumerate(rows):
        out.append(
            Choice(
                encode_row(model, tokenizer, row),
                row.streams,
                row.weights,
                row.max_new_tokens or config.max_new_tokens,
                sampling,
                sampling.generator(device, i),
            )
        )
    return out


def engine_ids(
    engine: ServingEngine,
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: GenerationConfig,
    progress: bool = False,
) -> list[list[int]]:
    """``generate_ids`` through a serving engine: row i one job seeded ``seed + i``, its
    ids read from the finish event's log-probabilities; a full queue waits for an answer."""
    sampling = config.sampling()
    done = threading.Condition()
    events: dict[int, Event] = {}
    bar = tqdm(total=len(rows), desc="generating", disable=not progress)

    def sink(index: int):
        def tell(event: Event) -> None:
            if event.kind in ("finish", "error"):
                with done:
                    events[index] = event
                    bar.update(1)
                    done.notify()

        return tell

    try:
        for i, row in enumerate(rows):
            seed = None if sampling.seed is None else sampling.seed + i
            job = Job(
                encode_row(model, tokenizer, row),
                row.streams,
                row.weights,
                row.max_new_tokens or config.max_new_tokens,
                dataclasses.replace(sampling, seed=seed),
                logprobs=0,
            )
            while True:
                try:
                    engine.submit(job, sink(i))
                    break
                except QueueFull:
                    with done:
                        done.wait(1.0)
        with done:
            done.wait_for(lambda: len(events) == len(rows))
    finally:
        bar.close()
    failed = [e for e in events.values() if e.kind == "error"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} rows failed: {failed[0].error}")
    return [[token for token, _, _ in events[i].logprobs] for i in range(len(rows))]


def generate_ids(
    model: ControlledLM,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: GenerationConfig | None = None,
    progress: bool = False,
    engine: ServingEngine | None = None,
) -> list[list[int]]:
    """The new token ids of every row, in the order of ``rows``; a row that stopped ends
    with its stop id (so a caller can tell a stop from running out of tokens)."""
    config = config or GenerationConfig()
    if engine is not None:
        return engine_ids(engine, model, tokenizer, rows, config, progress)
    model.eval()
    stop_ids = set(config.stop_ids or model.end_ids(tokenizer))
    batch = DecodeBatch(model, tokenizer.pad_token_id, stop_ids)
    choices = _choices(model, tokenizer, rows, config)
    waiting = choices[::-1]  # popped from the end: rows join in order
    bar = tqdm(total=len(rows), desc="generating", disable=not progress)

    def drop_finished() -> None:
        done = {i for i, c in enumerate(batch.choices) if c.finish_reason(stop_ids)}
        batch.drop(done)
        bar.update(len(done))

    try:
        while waiting or batch.choices:
            free = min(len(waiting), config.batch_size - len(batch.choices))
            if free:
                batch.join([waiting.pop() for _ in range(free)])
                drop_finished()
            if batch.choices:
                batch.step()
                drop_finished()
    finally:
        batch.reset()
        bar.close()
    return [choice.ids for choice in choices]


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
    engine: ServingEngine | None = None,
) -> list[str]:
    """Decode every row; returns the response texts in the order of ``rows``."""
    config = config or GenerationConfig()
    ids = generate_ids(model, tokenizer, rows, config, progress, engine)
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
    engine: ServingEngine | None = None,
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
    return generate_rows(model, tokenizer, rows, config, progress, engine)
