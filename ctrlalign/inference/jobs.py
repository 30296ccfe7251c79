"""What a serving engine takes and tells: jobs, events, and the interface the server calls.

The HTTP service (``serving.service``) turns a request into ``Job``s and hands them to an
engine through ``ServingEngine``; an engine reports back through each job's sink. The
builtin continuous-batching engine (``engine.Engine``) is one implementation; another
engine is one more module implementing the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ctrlalign.inference.decode import Sampling, Stream, TokenLogprob
from ctrlalign.model.layout import Example


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


class ServingEngine(Protocol):
    """What the server needs of an engine: take jobs, report their events through their
    sinks from any thread, say how busy it is, and drain on close."""

    stats: dict[str, int]

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
