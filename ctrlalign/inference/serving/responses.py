"""OpenAI's response bodies and server-sent events, from the engine's events.

``Call`` brings one HTTP request's events from the engine's thread to the event loop;
``answer`` gathers them into one JSON body, ``stream`` into OpenAI's chunks. What differs
between chat and completions (object names, the choice's shape, the logprobs format) is a
``Shape``, picked once per request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ctrlalign.inference.jobs import EngineClosed, Event, Handle, QueueFull
from ctrlalign.inference.serving.protocol import (
    ChatCompletionRequest,
    RequestError,
    error_body,
)
from ctrlalign.inference.serving.service import Prepared, Service


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Failed(Exception):
    """The engine failed this request's generation."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


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


@dataclass(frozen=True)
class Shape:
    """How one endpoint names and shapes its answers."""

    id_prefix: str
    object: str
    chunk_object: str
    chat: bool

    def whole(self, text: str) -> dict:
        """A finished choice's text: a chat message, or a completion's ``text``."""
        return {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}

    def content(self, text: str | None, first: bool = False) -> dict:
        """A streamed chunk's text: a chat delta, or a completion's ``text``."""
        if not self.chat:
            return {"text": text or ""}
        delta: dict = {"role": "assistant", "content": ""} if first else {}
        if text:
            delta["content"] = text
        return {"delta": delta}

    def logprobs(self, tokenizer, entries: list, offset: int) -> tuple[dict, int]:
        """The logprobs of ``entries`` and the text offset after them (completions)."""
        if self.chat:
            return chat_logprobs(tokenizer, entries), offset
        out = completion_logprobs(tokenizer, entries, offset)
        return out, offset + sum(len(t) for t in out["tokens"])


CHAT = Shape("chatcmpl", "chat.completion", "chat.completion.chunk", chat=True)
COMPLETION = Shape("cmpl", "text_completion", "text_completion", chat=False)


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class Call:
    """One HTTP request's jobs in the engine, with their events brought to the event loop."""

    def __init__(self, service: Service, prepared: Prepared):
        self.service = service
        self.prepared = prepared
        self.shape = CHAT if isinstance(prepared.body, ChatCompletionRequest) else COMPLETION
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.handles: list[Handle] = []
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.done = False
        self.ident = f"{self.shape.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.extra = {"preference": prepared.preference, "alpha": prepared.body.alpha}

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

    def prompt_offset(self, index: int) -> int:
        """Completions: where choice ``index``'s text starts (after its prompt)."""
        chars = self.prepared.prompt_chars
        return chars[index // self.prepared.jobs[0].n] if chars else 0

    @property
    def choices(self) -> int:
        return sum(job.n for job in self.prepared.jobs)

    async def next(self, request: Request | None) -> tuple[int, Event]:
        """The next (choice index, event); with ``request``, a client that has gone
        cancels the rows."""
        while True:
            try:
                job_index, event = await asyncio.wait_for(self.events.get(), 0.5)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    self.cancel()
                    raise ClientGone from None
                continue
            if event.kind == "error":
                self.cancel()
                raise Failed(event.error)
            if self.first_token is None:
                self.first_token = time.monotonic()
                self.service.metrics.ttft.observe(self.first_token - self.started)
            return self.index(job_index, event.choice), event

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

    def head(self, chunk: bool) -> dict:
        """The fields every body or chunk of this answer starts with."""
        shape = self.shape
        return {
            "id": self.ident,
            "object": shape.chunk_object if chunk else shape.object,
            "created": self.created,
            "model": self.prepared.model,
        }


async def respond(service: Service, prepared: Prepared, request: Request):
    """The answer to a validated request: one JSON body, or a stream of events."""
    call = Call(service, prepared)
    call.submit()
    if prepared.body.stream:
        return StreamingResponse(
            stream(call),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await answer(call, request)


async def answer(call: Call, request: Request) -> JSONResponse:
    """Every choice gathered into OpenAI's one-body response."""
    finished: dict[int, Event] = {}
    try:
        while len(finished) < call.choices:
            index, event = await call.next(request)
            if event.kind == "finish":
                finished[index] = event
    except asyncio.CancelledError:
        call.cancel()
        raise
    usage = call.usage(finished)
    call.record(usage)
    tokenizer = call.service.run.tokenizer
    choices = []
    for index in sorted(finished):
        event = finished[index]
        logprobs = None
        if event.logprobs is not None:
            logprobs = call.shape.logprobs(tokenizer, event.logprobs, call.prompt_offset(index))[0]
        choice = {"index": index, **call.shape.whole(event.content), "logprobs": logprobs}
        choices.append({**choice, "finish_reason": event.finish_reason})
    body = {**call.head(chunk=False), "choices": choices, "usage": usage}
    return JSONResponse({**body, "system_fingerprint": None, **call.extra})


class _Chunks:
    """One streamed answer's chunks: logprobs held until their token's text is sent."""

    def __init__(self, call: Call):
        self.call = call
        self.head = {**call.head(chunk=True), "system_fingerprint": None}
        if call.prepared.body.include_usage:
            self.head["usage"] = None
        self.pending: dict[int, list] = {}  # logprobs of tokens whose text is not sent yet
        self.sent: dict[int, int] = {}  # logprob entries reported by token events
        self.offsets: dict[int, int] = {}  # completions: where the next token's text starts

    def note(self, index: int, event: Event) -> None:
        """Keep an event's logprobs; a finish event repeats those its token events sent."""
        if event.logprobs is None:
            return
        entries = event.logprobs
        if event.kind == "finish":
            entries = entries[self.sent.get(index, 0) :]
        else:
            self.sent[index] = self.sent.get(index, 0) + len(entries)
        self.pending.setdefault(index, []).extend(entries)

    def chunk(self, index: int, text: str | None, reason: str | None, first: bool = False) -> str:
        logprobs = None
        entries = None if first else self.pending.pop(index, None)
        if entries is not None:
            start = self.offsets.get(index, self.call.prompt_offset(index))
            tokenizer = self.call.service.run.tokenizer
            logprobs, self.offsets[index] = self.call.shape.logprobs(tokenizer, entries, start)
        choice = {"index": index, **self.call.shape.content(text, first)}
        choice |= {"logprobs": logprobs, "finish_reason": reason}
        return _sse({**self.head, "choices": [choice], **self.call.extra})


async def stream(call: Call) -> AsyncIterator[str]:
    """OpenAI's chunks: a role chunk per choice (chat), content deltas, a finish chunk per
    choice, the usage chunk when asked for, then ``[DONE]``. A client that goes away
    cancels the generator (starlette), which cancels the rows."""
    chunks = _Chunks(call)
    finished: dict[int, Event] = {}
    try:
        if call.shape.chat:
            for index in range(call.choices):
                yield chunks.chunk(index, None, None, first=True)
        while len(finished) < call.choices:
            index, event = await call.next(None)
            chunks.note(index, event)
            if event.kind == "finish":
                finished[index] = event
                yield chunks.chunk(index, event.text, event.finish_reason)
            elif event.text:
                yield chunks.chunk(index, event.text, None)
        usage = call.usage(finished)
        call.record(usage)
        if call.prepared.body.include_usage:
            yield _sse({**chunks.head, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    except Failed as err:
        yield _sse(error_body(f"generation failed: {err}", "server_error"))
        yield _sse("[DONE]")
    finally:
        if not call.done:
            call.cancel()
