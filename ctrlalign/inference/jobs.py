"""What a serving engine takes and tells: jobs, events, and the interface the server calls.

The HTTP service (``serving.service``) turns a request into ``Job``s and hands them to an
engine through ``ServingEngine``; an engine reports back through each job's sink. The
builtin continuous-batching engine (``engine.Engine``) is one implementation; another
engine is one more module implementing the same protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from ctrlalign.inference.decode import Sampling, Stream, TokenLogprob
from ctrlalign.model.layout import Example

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The engine already holds ``max_queue`` waiting requests (HTTP 429)."""


class EngineClosed(RuntimeError):
    """The engine is shutting down and takes no new requests (HTTP 503)."""


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


class AnswerText:
    """A choice's token ids as text while they come (every engine's, so they all send the
    same events): stop strings end it, and text that is
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


class ServingEngine(Protocol):
    """What the server needs of an engine: take jobs, report their events through their
    sinks from any thread, say how busy it is, and drain on close."""

    stats: dict[str, int]

    @property
    def alive(self) -> bool:
        """False once the engine cannot answer (its worker or process died): the server
        then says 503 on /health and to new requests."""
        ...

    @property
    def queue_length(self) -> int: ...

    @property
    def active_rows(self) -> int: ...

    def submit(self, job: Job, sink: Sink) -> Handle:
        """Queue ``job``; ``QueueFull`` when full, ``EngineClosed`` when shutting down."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Finish the jobs in flight (``timeout`` seconds at most), then stop."""
        ...
