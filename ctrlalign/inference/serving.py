"""``ctrlalign serve``: a run behind an OpenAI-compatible HTTP API (FastAPI on uvicorn), with
the preference and the alignment dial chosen per request, decoded by continuous batching.

The surface is what users of vLLM's OpenAI server expect, so their clients work unchanged:
``/v1/chat/completions`` and ``/v1/completions`` (both streaming as server-sent events in
OpenAI's chunk format), ``/v1/models``, ``/health``, ``/metrics`` (Prometheus), errors in
OpenAI's body (``{"error": {"message", "type", "param", "code"}}``), ``--api-key``. What
only ctrlalign has rides on four extra body fields (``extra_body`` in the ``openai``
client): ``preference`` (the control), ``alpha`` (the dial: a CLM run's strength, or with
``against`` the mix of two MEET controls), ``against`` and ``compose``; the preference may also be
chosen as the model, ``"model": "RUN:concise"``, as vLLM and LoRAX users pick adapters,
or be a blend of several with weights (``{"concise": 1, "warm": 0.5}``, composed as
``compose`` says), which each request of a batch chooses for itself.

Requests are validated here (pydantic models with unknown fields refused: a field we cannot
honour must not be ignored silently) and turned into ``engine.Job``s through ``dial_row``,
the same path the CLI uses; ``engine.Engine`` decodes them, every step advancing every
active row with its own control, alpha, sampling and stop strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ctrlalign.inference.dial import DialError, DialRequest, dial_row
from ctrlalign.inference.engine import (
    Engine,
    EngineClosed,
    Event,
    Handle,
    Job,
    QueueFull,
    Sampling,
    encode_row,
)
from ctrlalign.model.rundir import Run, default_preference

log = logging.getLogger(__name__)

INT64 = 2**63
MAX_TOP_LOGPROBS = 20


class RequestError(ValueError):
    """A request the server refuses, naming the field at fault (OpenAI's ``param``)."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


# -- request bodies ------------------------------------------------------------------------


class _Body(BaseModel):
    """Strict, closed models: ``"temperature": "0.5"`` and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class ResponseFormat(_Body):
    type: Literal["text"]


class _Generation(_Body):
    """Fields both endpoints share."""

    model: str | None = Field(None, description="RUN, or RUN:PREFERENCE to pick a control")
    max_tokens: int | None = Field(None, ge=1, le=INT64 - 1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 (default): greedy")
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=INT64 - 1)
    seed: int | None = Field(None, ge=-INT64, le=INT64 - 1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    preference: str | dict[str, float] | None = Field(
        None,
        description="the control to answer under, or several at once: a blend "
        '"concise+warm", "concise=1+warm=0.5" or {"concise": 1.0, "warm": 0.5}',
    )
    compose: Literal["native", "logits"] | None = Field(
        None,
        description="how a blend is composed: native (default; by the control kind) or "
        "logits (one stream per preference, logits mixed with the weights scaled to sum to 1)",
    )
    against: str | None = Field(None, description="MEET run: the control alpha moves away from")
    alpha: float | None = Field(
        None, ge=-100, le=100, description="the dial (CLM: 0 base, 1 aligned; < 0, > 1 extrapolate)"
    )
    # accepted at their neutral value only (any other value is a 400, not silently ignored)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # harmless to ignore: they do not change the answer
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


class ChatCompletionRequest(_Generation):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64 - 1)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


# -- the service ---------------------------------------------------------------------------


def _as_fields(message: str) -> str:
    """The dial checks speak in CLI flags; a request names JSON fields."""
    for flag in ("alpha", "against", "preference", "compose"):
        message = message.replace(f"--{flag}", f"`{flag}`")
    return message


class Metrics:
    """The Prometheus series ``/metrics`` exposes, in a registry of their own (so several
    services can live in one process, as in tests and benchmarks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ctrlalign_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "ctrlalign_prompt_tokens", "prompt tokens of answered requests", registry=r
        )
        self.generation_tokens = Counter(
            "ctrlalign_generation_tokens", "tokens generated for answered requests", registry=r
        )
        self.batch_rows = Histogram(
            "ctrlalign_batch_rows",
            "answers (choices) advanced by one decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_length = Gauge(
            "ctrlalign_queue_length", "requests waiting to join the batch", registry=r
        )
        self.running = Gauge("ctrlalign_running_rows", "answers being decoded", registry=r)
        latency_buckets = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
        self.latency = Histogram(
            "ctrlalign_request_latency_seconds",
            "request arrival to its last token",
            buckets=latency_buckets,
            registry=r,
        )
        self.ttft = Histogram(
            "ctrlalign_time_to_first_token_seconds",
            "request arrival to its first generated token",
            buckets=latency_buckets,
            registry=r,
        )

    def on_step(self, rows: int, waiting: int) -> None:
        self.batch_rows.observe(rows)


@dataclass
class Prepared:
    """A validated request: its engine jobs (one per prompt), and what the answer names."""

    jobs: list[Job]
    model: str
    preference: str | dict[str, float] | None
    alpha: float | None
    stream: bool
    include_usage: bool
    #: completions: each prompt's length in characters (where ``text_offset`` starts)
    prompt_chars: list[int] = dataclass_field(default_factory=list)


class Service:
    """Validation, the engine and the response shapes, for one run."""

    def __init__(
        self,
        run: Run,
        name: str,
        max_new_tokens: int = 512,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.02,
        max_queue: int = 256,
        max_n: int = 8,
        scheduler: str = "continuous",
        max_prefill_tokens: int = 4096,
    ):
        self.run = run
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.max_n = max_n
        self.default_preference = default_preference(run.info)
        config = run.model.config.get_text_config()
        self.context = getattr(config, "max_position_embeddings", None)
        self.metrics = Metrics()
        self.engine = Engine(
            run.model,
            run.tokenizer,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            scheduler=scheduler,
            batch_wait_s=batch_wait_s,
            on_step=self.metrics.on_step,
            max_prefill_tokens=max_prefill_tokens,
        )
        self.metrics.queue_length.set_function(lambda: self.engine.queue_length)
        self.metrics.running.set_function(lambda: self.engine.active_rows)

    def close(self, timeout: float | None = None) -> None:
        self.engine.close(timeout)

    def stats(self) -> dict:
        return dict(self.engine.stats)

    # -- models --

    def model_ids(self) -> list[str]:
        return [self.name] + [f"{self.name}:{p}" for p in self.run.preferences]

    def models(self) -> dict:
        created = int(time.time())
        card = {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": "ctrlalign",
            "root": self.name,
            "parent": None,
            "max_model_len": self.context,
            "method": self.run.info.get("method"),
            "preferences": self.run.preferences,
            "default_preference": self.default_preference,
            "dial": bool(self.run.info.get("clm") or self.run.info.get("control")),
        }
        cards = [card]
        for pref in self.run.preferences:
            cards.append(
                {
                    "id": f"{self.name}:{pref}",
                    "object": "model",
                    "created": created,
                    "owned_by": "ctrlalign",
                    "root": self.name,
                    "parent": self.name,
                    "max_model_len": self.context,
                    "preference": pref,
                }
            )
        return {"object": "list", "data": cards}

    def _preference(self, body: _Generation) -> str | None:
        """The preference asked for, by ``preference`` or as ``"model": "RUN:PREF"``."""
        model = body.model
        if model is None or model == self.name:
            return body.preference
        if model not in self.model_ids():
            raise RequestError(
                f"the model `{model}` does not exist; this server has {self.model_ids()}",
                "model",
                404,
                "model_not_found",
            )
        chosen = model.split(":", 1)[1] if model.startswith(f"{self.name}:") else model
        if body.preference is not None and body.preference != chosen:
            raise RequestError(
                f"`model` {model!r} names preference {chosen!r} but `preference` is "
                f"{body.preference!r}",
                "preference",
            )
        return chosen

    # -- validation --

    def _refuse_unsupported(self, body: _Generation) -> None:
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(body, name) not in (None, 0):
                raise RequestError(f"`{name}` is not supported by this server (only 0)", name)
        if body.logit_bias:
            raise RequestError("`logit_bias` is not supported by this server", "logit_bias")
        if body.stream_options is not None and not body.stream:
            raise RequestError("`stream_options` needs `stream: true`", "stream_options")
        if isinstance(body, ChatCompletionRequest):
            if body.top_logprobs is not None and not body.logprobs:
                raise RequestError("`top_logprobs` needs `logprobs: true`", "top_logprobs")
            if body.tools:
                raise RequestError("tool calls are not supported by this server", "tools")
        if isinstance(body, CompletionRequest):
            if body.echo:
                raise RequestError("`echo` is not supported by this server", "echo")
            if body.suffix is not None:
                raise RequestError("`suffix` is not supported by this server", "suffix")
            if body.best_of not in (None, body.n):
                raise RequestError("`best_of` other than `n` is not supported", "best_of")

    def _stops(self, stop: str | list[str] | None) -> tuple[str, ...]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise RequestError("`stop` takes up to 4 non-empty strings", "stop")
        return tuple(stops)

    def _limit(self, body: _Generation) -> int | None:
        limit = body.max_tokens
        if isinstance(body, ChatCompletionRequest) and body.max_completion_tokens is not None:
            limit = body.max_completion_tokens
        if limit is not None and limit > self.max_new_tokens:
            raise RequestError(
                f"`max_tokens` {limit} is over this server's --max-new-tokens "
                f"{self.max_new_tokens}",
                "max_tokens",
            )
        return limit

    def prepare(self, body: ChatCompletionRequest | CompletionRequest) -> Prepared:
        """Validate a request into engine jobs, or raise a ``RequestError`` naming the field."""
        preference = self._preference(body)
        self._refuse_unsupported(body)
        if body.n > self.max_n:
            raise RequestError(f"`n` {body.n} is over this server's --max-n {self.max_n}", "n")
        limit = self._limit(body)
        stops = self._stops(body.stop)
        sampling = Sampling(
            0.0 if body.temperature is None else body.temperature,
            1.0 if body.top_p is None else body.top_p,
            body.seed,
        )
        chat = isinstance(body, ChatCompletionRequest)
        if chat:
            messages = [
                {
                    "role": "system" if m.role == "developer" else m.role,
                    "content": m.content
                    if isinstance(m.content, str)
                    else "".join(part.text for part in m.content),
                }
                for m in body.messages
            ]
            prompts: list = [messages]
        else:
            prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        field = "messages" if chat else "prompt"
        # top alternatives per token, or None: no logprobs (chat asks with a bool)
        chat_logprobs_k = (body.top_logprobs or 0) if chat and body.logprobs else None
        logprobs = chat_logprobs_k if chat else body.logprobs
        jobs = []
        for prompt in prompts:
            request = DialRequest(
                prompt if chat else [{"role": "user", "content": prompt}],
                preference,
                body.against,
                body.alpha,
                compose=body.compose or "native",
            )
            try:
                row = dial_row(self.run, request)
            except DialError as err:
                raise RequestError(_as_fields(str(err)), err.field) from None
            examples, own = encode_row(
                self.run.model, self.run.tokenizer, row, None if chat else prompt
            )
            total = max(len(e.input_ids) for e in examples)
            if total == 0:
                raise RequestError("the prompt is empty", field)
            max_new = self._fit(total, limit, field)
            jobs.append(
                Job(
                    examples,
                    row.streams,
                    row.weights,
                    max_new,
                    sampling,
                    body.n,
                    stops,
                    strip=chat,
                    stream=bool(body.stream),
                    prompt_tokens=own,
                    logprobs=logprobs,
                )
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return Prepared(
            jobs,
            body.model or self.name,
            preference if preference is not None else self.default_preference,
            body.alpha,
            bool(body.stream),
            include_usage,
            [] if chat else [len(p) for p in prompts],
        )

    def _fit(self, prompt_len: int, limit: int | None, field: str) -> int:
        """The answer's cap within the model's context: a prompt that does not fit, or an
        explicit ``max_tokens`` that runs past the context, is refused (as vLLM does)."""
        cap = limit if limit is not None else self.max_new_tokens
        if self.context is None:
            return cap
        if prompt_len >= self.context:
            raise RequestError(
                f"the prompt is {prompt_len} tokens (control prefix included); this model's "
                f"context is {self.context}",
                field,
                code="context_length_exceeded",
            )
        if limit is not None and prompt_len + limit > self.context:
            raise RequestError(
                f"the prompt ({prompt_len} tokens) plus `max_tokens` {limit} is over this "
                f"model's context of {self.context}",
                "max_tokens",
                code="context_length_exceeded",
            )
        return min(cap, self.context - prompt_len)


# -- the HTTP app --------------------------------------------------------------------------


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param: str | None = None, code: str | None = None):
    kinds = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
        503: "server_error",
    }
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(
        error_body(message, kinds.get(status, "server_error"), param, code), status, headers
    )


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "list[str]", "list[TextPart]") and not str(part).startswith(
            "function-"
        ):
            out += f".{part}" if out else str(part)
    return out


def _validation_error(err: RequestValidationError) -> JSONResponse:
    """Pydantic's first complaint as OpenAI's 400, with the top-level field as ``param``."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    loc = loc[1:] if loc and loc[0] == "body" else loc
    kind = first.get("type", "")
    if kind == "json_invalid":
        return _error(400, f"the request body is not JSON: {first.get('msg')}")
    if not loc:  # no body, or not an object
        return _error(400, "the request body must be a JSON object")
    param = next((p for p in loc if isinstance(p, str)), None)
    where = _location(loc)
    if kind == "extra_forbidden":
        return _error(400, f"unknown field `{where}`: this server does not support it", param)
    return _error(400, f"`{where}`: {first.get('msg')}", param)


class Guard:
    """ASGI middleware in front of every route: the API key (``/health`` stays open, as
    probes have no key) and a body size limit checked while the body streams in, so an
    oversized body is refused without being read whole."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"] != "/health":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                response = _error(
                    401,
                    "missing or wrong API key: send `Authorization: Bearer KEY`",
                    code="invalid_api_key",
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # an HTTPException passes through FastAPI's body parsing to our handler
                    raise StarletteHTTPException(413, self._too_large_message)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except StarletteHTTPException as err:  # raised where no handler runs (e.g. a stream)
            if err.status_code != 413 or started:
                raise
            await self._too_large(scope, receive, send)

    @property
    def _too_large_message(self) -> str:
        return f"the request body is over this server's limit of {self.max_body_bytes} bytes"

    async def _too_large(self, scope, receive, send) -> None:
        response = _error(413, self._too_large_message, code="request_too_large")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class Counting:
    """ASGI middleware counting responses by route and status for ``/metrics``."""

    ROUTES = frozenset(
        ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"]
    )

    def __init__(self, app, service: Callable[[], Service | None]):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.ROUTES else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start" and (svc := self.service()) is not None:
                svc.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def _logprob(value: float) -> float:
    """JSON has no -inf: a token the row cannot emit reports OpenAI's floor instead."""
    return max(value, -9999.0)


def chat_logprobs(tokenizer, entries: list) -> dict:
    """OpenAI's chat ``logprobs``: each token, its log-probability and alternatives."""

    def one(token: int, logprob: float) -> dict:
        text = tokenizer.decode([token])
        return {"token": text, "logprob": _logprob(logprob), "bytes": list(text.encode())}

    content = [
        {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in alternatives]}
        for token, logprob, alternatives in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(tokenizer, entries: list, offset: int) -> dict:
    """The legacy completions ``logprobs``: parallel lists, offsets into prompt + text."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, logprob, alternatives in entries:
        text = tokenizer.decode([token])
        out["tokens"].append(text)
        out["token_logprobs"].append(_logprob(logprob))
        out["top_logprobs"].append({tokenizer.decode([t]): _logprob(lp) for t, lp in alternatives})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class _ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class _Failed(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class _Call:
    """One HTTP request's jobs in the engine, with their events brought to the event loop."""

    def __init__(self, service: Service, prepared: Prepared):
        self.service = service
        self.prepared = prepared
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.handles: list[Handle] = []
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.done = False

    def submit(self) -> None:
        try:
            for i, job in enumerate(self.prepared.jobs):
                self.handles.append(self.service.engine.submit(job, self._sink(i)))
        except QueueFull as err:
            self.cancel()
            raise RequestError(
                f"the server is busy ({err}); retry later", None, 429, "queue_full"
            ) from None
        except EngineClosed as err:
            self.cancel()
            raise RequestError(str(err), None, 503, "shutting_down") from None

    def _sink(self, job_index: int):
        def sink(event: Event) -> None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (job_index, event))

        return sink

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    def index(self, job_index: int, choice: int) -> int:
        return job_index * self.prepared.jobs[0].n + choice

    @property
    def choices(self) -> int:
        return sum(job.n for job in self.prepared.jobs)

    async def next(self, request: Request | None) -> tuple[int, Event]:
        """The next event; with ``request``, a client that has gone cancels the rows."""
        while True:
            try:
                job_index, event = await asyncio.wait_for(self.events.get(), 0.5)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    self.cancel()
                    raise _ClientGone from None
                continue
            if event.kind == "error":
                self.cancel()
                raise _Failed(event.error)
            if self.first_token is None:
                self.first_token = time.monotonic()
                self.service.metrics.ttft.observe(self.first_token - self.started)
            return job_index, event

    def usage(self, finished: dict[int, Event]) -> dict:
        prompt = sum(job.prompt_tokens for job in self.prepared.jobs)
        completion = sum(e.completion_tokens for e in finished.values())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def record(self, usage: dict) -> None:
        self.done = True
        metrics = self.service.metrics
        metrics.prompt_tokens.inc(usage["prompt_tokens"])
        metrics.generation_tokens.inc(usage["completion_tokens"])
        metrics.latency.observe(time.monotonic() - self.started)


def build_app(
    service: Service | Callable[[], Service | None],
    api_key: str | None = None,
    max_body_bytes: int = 1 << 20,
    drain_timeout_s: float | None = 30.0,
) -> FastAPI:
    """The FastAPI app over ``service`` (or a callable giving it, None while loading)."""
    get = service if callable(service) and not isinstance(service, Service) else lambda: service

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        svc = get()
        if svc is not None:  # uvicorn has drained the connections; stop the engine
            await asyncio.to_thread(svc.close, drain_timeout_s)

    app = FastAPI(
        title="ctrlalign",
        description="OpenAI-compatible serving with a preference and an alignment dial per request",
        lifespan=lifespan,
    )

    def ready() -> Service:
        svc = get()
        if svc is None:
            raise RequestError("the model is still loading", None, 503, "loading")
        return svc

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return _error(err.status, str(err), err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _validation_error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}", code="unknown_url")
        if err.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        if err.status_code == 413:
            return _error(413, str(err.detail), code="request_too_large")
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(_Failed)
    async def _failed(request: Request, err: _Failed) -> JSONResponse:
        return _error(500, f"generation failed: {err}")

    @app.exception_handler(_ClientGone)
    async def _gone(request: Request, err: _ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.get("/health")
    async def health() -> dict:
        ready()
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        svc = ready()
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        return ready().models()

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict:
        svc = ready()
        for card in svc.models()["data"]:
            if card["id"] == model_id:
                return card
        raise RequestError(
            f"the model `{model_id}` does not exist", "model", 404, "model_not_found"
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        return await _answer(ready(), body, request, chat=True)

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        return await _answer(ready(), body, request, chat=False)

    # the last added runs first: count every response, refused ones included
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.add_middleware(Counting, service=get)
    return app


async def _answer(
    svc: Service, body: ChatCompletionRequest | CompletionRequest, request: Request, chat: bool
) -> JSONResponse | StreamingResponse:
    prepared = svc.prepare(body)
    call = _Call(svc, prepared)
    call.submit()
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    extra = {"preference": prepared.preference, "alpha": prepared.alpha}
    if prepared.stream:
        return StreamingResponse(
            _stream(call, ident, created, chat, extra),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    finished: dict[int, Event] = {}
    try:
        while len(finished) < call.choices:
            job_index, event = await call.next(request)
            if event.kind == "finish":
                finished[call.index(job_index, event.choice)] = event
    except asyncio.CancelledError:
        call.cancel()
        raise
    usage = call.usage(finished)
    call.record(usage)
    choices = []
    tokenizer = svc.run.tokenizer
    for index in sorted(finished):
        event = finished[index]
        logprobs = None
        if chat:
            choice = {"message": {"role": "assistant", "content": event.content}}
            if event.logprobs is not None:
                logprobs = chat_logprobs(tokenizer, event.logprobs)
        else:
            choice = {"text": event.content}
            if event.logprobs is not None:
                start = prepared.prompt_chars[index // prepared.jobs[0].n]
                logprobs = completion_logprobs(tokenizer, event.logprobs, start)
        choices.append(
            {"index": index, **choice, "logprobs": logprobs, "finish_reason": event.finish_reason}
        )
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": prepared.model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": None,
            **extra,
        }
    )


async def _stream(
    call: _Call, ident: str, created: int, chat: bool, extra: dict
) -> AsyncIterator[str]:
    """OpenAI's chunks: a role chunk per choice (chat), content deltas, a finish chunk per
    choice, the usage chunk when asked for, then ``[DONE]``. A client that goes away
    cancels the generator (starlette), which cancels the rows."""
    prepared = call.prepared
    head = {
        "id": ident,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": prepared.model,
        "system_fingerprint": None,
    }
    if prepared.include_usage:
        head["usage"] = None

    tokenizer = call.service.run.tokenizer
    pending: dict[int, list] = {}  # logprobs of tokens whose text is not sent yet
    offsets: dict[int, int] = {}  # completions: where the next token's text starts

    def logprobs_of(index: int) -> dict | None:
        entries = pending.pop(index, None)
        if entries is None:
            return None
        if chat:
            return chat_logprobs(tokenizer, entries)
        start = offsets.get(index, prepared.prompt_chars[index // prepared.jobs[0].n])
        out = completion_logprobs(tokenizer, entries, start)
        offsets[index] = start + sum(len(t) for t in out["tokens"])
        return out

    def chunk(index: int, text: str | None, reason: str | None, first: bool = False) -> str:
        logprobs = None if first else logprobs_of(index)
        if chat:
            delta: dict = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {
                "index": index,
                "text": text or "",
                "logprobs": logprobs,
                "finish_reason": reason,
            }
        return _sse({**head, "choices": [choice], **extra})

    finished: dict[int, Event] = {}
    sent_logprobs: dict[int, int] = {}
    try:
        if chat:
            for index in range(call.choices):
                yield chunk(index, None, None, first=True)
        while len(finished) < call.choices:
            job_index, event = await call.next(None)
            index = call.index(job_index, event.choice)
            if event.kind == "token":
                if event.logprobs is not None:
                    pending.setdefault(index, []).extend(event.logprobs)
                    sent_logprobs[index] = sent_logprobs.get(index, 0) + len(event.logprobs)
                if event.text:
                    yield chunk(index, event.text, None)
                continue
            if event.logprobs is not None:  # the last token's, not sent by a token event
                rest = event.logprobs[sent_logprobs.get(index, 0) :]
                pending.setdefault(index, []).extend(rest)
            finished[index] = event
            yield chunk(index, event.text, event.finish_reason)
        usage = call.usage(finished)
        call.record(usage)
        if prepared.include_usage:
            yield _sse({**head, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    except _Failed as err:
        body = error_body(f"generation failed: {err}", "server_error")
        yield _sse(body)
        yield _sse("[DONE]")
    finally:
        if not call.done:
            call.cancel()


# -- running it ----------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket (port 0 picks a free one), so the caller knows the port
    before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def uvicorn_server(
    app: FastAPI, drain_timeout_s: float | None = 30.0, access_log: bool = False
) -> uvicorn.Server:
    """uvicorn for ``app``: a deep accept backlog (a burst of clients must not get
    connection errors), keep-alive long enough for clients that pool connections, and
    ``drain_timeout_s`` for requests in flight at shutdown."""
    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=None if drain_timeout_s is None else int(drain_timeout_s),
    )
    return uvicorn.Server(config)


class ServerThread:
    """A uvicorn server in a background thread (tests, benchmarks): ``url`` is its base."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn_server(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
