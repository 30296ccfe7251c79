"""``ctrlalign serve``: a run behind an OpenAI-compatible chat-completions endpoint, with the
preference and the alignment dial chosen per request.

A request is a standard chat completion plus three optional fields: ``preference`` (which
control), ``alpha`` (the dial: a CLM run's strength, or with ``against`` the mix of two MEET
controls). Requests that arrive while the model is busy are answered together: one worker
thread drains the queue into a batch of generation rows, each with its own control, alpha
and ``max_tokens`` (``generation.py`` runs them as one left-padded batch), so concurrent
users share a decode instead of queueing behind each other. Greedy answers do not depend on
what they were batched with; sampled ones draw from one generator per batch, so a request is
batched only with others of the same temperature, top_p and seed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ctrlalign.inference.dial import DialError, DialRequest, dial_row
from ctrlalign.inference.generation import GenerationConfig, Row, decode, generate_ids
from ctrlalign.model.layout import prompt_ids
from ctrlalign.model.rundir import Run, default_preference

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")


class RequestError(ValueError):
    """A request the server refuses (HTTP 400), naming the field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class Job:
    row: Row
    key: tuple  # requests batch together only when their sampling settings agree
    done: threading.Event = field(default_factory=threading.Event)
    ids: list[int] | None = None
    error: Exception | None = None


class Batcher:
    """One worker thread that turns queued jobs into batched ``generate_ids`` calls."""

    def __init__(self, run: Run, max_batch_size: int, batch_wait_s: float):
        self.run = run
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.requests = 0
        self.batches = 0
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._held: list[Job] = []
        self._thread = threading.Thread(target=self._loop, name="ctrlalign-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> list[int]:
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.ids

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _next_batch(self) -> list[Job] | None:
        first = self._held.pop(0) if self._held else self._queue.get()
        if first is None:
            return None
        batch, later = [first], []
        for job in self._held:
            (batch if job.key == first.key and len(batch) < self.max_batch_size else later).append(
                job
            )
        self._held = later
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            (batch if job.key == first.key else self._held).append(job)
        return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            temperature, top_p, seed = batch[0].key
            config = GenerationConfig(
                max_new_tokens=max(job.row.max_new_tokens for job in batch),
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                batch_size=len(batch),
            )
            try:
                ids = generate_ids(
                    self.run.model, self.run.tokenizer, [j.row for j in batch], config
                )
                for job, job_ids in zip(batch, ids, strict=True):
                    job.ids = job_ids
            except Exception as err:  # reported to every waiting request, never lost
                log.exception("generation failed for a batch of %d", len(batch))
                for job in batch:
                    job.error = err
            self.requests += len(batch)
            self.batches += 1
            for job in batch:
                job.done.set()


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"`{name}` must be a number in [{low}, {high}], got {value!r}", name)
    return float(value)


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list of {role, content}", "messages")
    out = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise RequestError(
                f"messages[{i}] must have a role in {list(ROLES)} and a string content",
                "messages",
            )
        out.append({"role": role, "content": content})
    return out


def _as_fields(message: str) -> str:
    """The dial checks speak in CLI flags; a request names JSON fields."""
    for flag in ("alpha", "against", "preference"):
        message = message.replace(f"--{flag}", f"`{flag}`")
    return message


class Service:
    """What the HTTP handler calls: request validation, the batcher, the response shape."""

    def __init__(
        self,
        run: Run,
        name: str,
        max_new_tokens: int = 512,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.02,
    ):
        self.run = run
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.default_preference = default_preference(run.info)
        self.batcher = Batcher(run, max_batch_size, batch_wait_s)

    def models(self) -> dict:
        card = {
            "id": self.name,
            "object": "model",
            "owned_by": "ctrlalign",
            "method": self.run.info.get("method"),
            "preferences": self.run.preferences,
            "default_preference": self.default_preference,
            "dial": bool(self.run.info.get("clm") or self.run.info.get("control")),
        }
        return {"object": "list", "data": [card]}

    def stats(self) -> dict:
        b = self.batcher
        return {"requests": b.requests, "batches": b.batches}

    def job(self, body: dict) -> Job:
        """Validate one chat-completion request body into a generation job."""
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("stream"):
            raise RequestError("streaming is not supported; send `stream: false`", "stream")
        if body.get("n", 1) != 1:
            raise RequestError("only `n: 1` is supported", "n")
        messages = _messages(body)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        limit = self.max_new_tokens if limit is None else limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestError(
                f"`max_tokens` must be a positive integer, got {limit!r}", "max_tokens"
            )
        if limit > self.max_new_tokens:
            raise RequestError(
                f"`max_tokens` {limit} is over this server's --max-new-tokens "
                f"{self.max_new_tokens}",
                "max_tokens",
            )
        temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RequestError(f"`seed` must be an integer, got {seed!r}", "seed")
        request = DialRequest(
            messages, body.get("preference"), body.get("against"), body.get("alpha"), limit
        )
        try:
            row = dial_row(self.run, request)
        except DialError as err:
            raise RequestError(_as_fields(str(err)), err.field) from None
        return Job(row, (temperature, top_p, seed))

    def complete(self, body: dict) -> dict:
        job = self.job(body)
        ids = self.batcher.submit(job)
        tokenizer = self.run.tokenizer
        stopped = bool(ids) and ids[-1] == tokenizer.eos_token_id
        chat = [{"role": r, "content": c} for r, c in job.row.messages]
        prompt_tokens = len(prompt_ids(tokenizer, chat))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": decode(tokenizer, ids, GenerationConfig()),
                    },
                    "finish_reason": "stop" if stopped else "length",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(ids),
                "total_tokens": prompt_tokens + len(ids),
            },
            "preference": body.get("preference", self.default_preference),
            "alpha": body.get("alpha"),
        }


class Handler(BaseHTTPRequestHandler):
    service: Service  # set on the subclass ``make_server`` builds

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": param}})

    def do_GET(self) -> None:
        routes = {"/health": lambda: {"status": "ok"}, "/v1/models": self.service.models}
        routes["/stats"] = self.service.stats
        if self.path not in routes:
            self._error(404, f"no route {self.path}", "not_found")
            return
        self._send(200, routes[self.path]())

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}; POST /v1/chat/completions", "not_found")
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError) as err:
            self._error(400, f"the request body is not JSON: {err}", "invalid_request_error")
            return
        try:
            self._send(200, self.service.complete(body))
        except RequestError as err:
            self._error(400, str(err), "invalid_request_error", err.param)
        except Exception as err:  # the client gets the reason; the log gets the traceback
            self._error(500, f"generation failed: {err}", "server_error")

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threaded HTTP server over ``service`` (port 0 picks a free port)."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
