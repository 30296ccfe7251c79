"""Continuous batching: the decode core's step driven by a worker thread with a queue.

``generation.generate_ids`` drives ``decode.DecodeBatch`` for a list known in advance; a
server needs rows to come and go while the batch runs, so here one worker thread owns the
batch:

- a request waits in a bounded queue (``QueueFull`` when it is full, so a server can answer
  429 instead of piling up work it will never finish in time);
- at the next step its prompt is prefilled (``DecodeBatch.join``: one forward over the
  newcomers only) and its KV cache merged into the running batch;
- every step then advances each active row in one batched forward (``DecodeBatch.step``);
- a row that stops (end of turn, a stop string, its own ``max_tokens``, its client gone)
  leaves the batch at once, so the next step costs what the rows still running need.

Each choice keeps its own sampling: temperature, top_p and a ``torch.Generator`` on the
model's device seeded per choice, so a seeded answer does not depend on what it was batched
with, and greedy answers equal one-by-one generation.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from ctrlalign.inference.decode import Choice, DecodeBatch
from ctrlalign.inference.jobs import AnswerText, EngineClosed, Event, Handle, Job, QueueFull, Sink
from ctrlalign.model.controlled_lm import ControlledLM

log = logging.getLogger(__name__)

SCHEDULERS = ("continuous", "static")


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
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.scheduler = scheduler
        self.batch_wait_s = batch_wait_s
        self.on_step = on_step
        self.max_prefill_tokens = max_prefill_tokens
        self.stop_ids = set(model.end_ids(tokenizer))  # as offline generation stops
        self.batch = DecodeBatch(model, tokenizer.pad_token_id, self.stop_ids)
        self.stats = {"requests": 0, "steps": 0, "prefills": 0, "max_rows": 0, "tokens": 0}
        self._waiting: collections.deque[Handle] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = False
        self._thread = threading.Thread(target=self._loop, name="ctrlalign-engine", daemon=True)
        model.eval()
        self._thread.start()

    # -- the public side (any thread) -------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_length(self) -> int:
        return len(self._waiting)

    @property
    def active_rows(self) -> int:
        return len(self.batch.choices)

    def submit(self, job: Job, sink: Sink) -> Handle:
        """Queue ``job``; events go to ``sink`` from the worker thread."""
        handle = Handle(job, sink)
        with self._cond:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            if not self._thread.is_alive():
                raise EngineClosed("the engine's worker has stopped; restart the server")
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
                while not self._waiting and not self.batch.choices and not self._closing:
                    self._cond.wait()
                if self._abort or (self._closing and not self._waiting and not self.batch.choices):
                    break
            joiners = self._admit()
            try:
                self._run_step(joiners)
            except Exception as err:  # every row involved hears of it; the loop goes on
                log.exception("generation failed for %d rows", self.active_rows + len(joiners))
                self._fail([*self.batch.choices, *joiners], err)
        closed = EngineClosed("the server shut down before this request finished")
        self._fail(self.batch.choices, closed, waiting=True)

    def _run_step(self, joiners: list[Choice]) -> None:
        """Prefill the newcomers, then advance every answer by one token."""
        if joiners:
            self.batch.join(joiners)
            self.stats["prefills"] += 1
            now = time.monotonic()
            for choice in joiners:
                handle = choice.owner[0]
                handle.first_token = handle.first_token or now
            self._after(joiners, first=self.active_rows - len(joiners))
        if self.batch.choices:
            rows = self.active_rows
            self.batch.step()
            self.stats["steps"] += 1
            self.stats["max_rows"] = max(self.stats["max_rows"], rows)
            if self.on_step is not None:
                self.on_step(rows, len(self._waiting))
            self._after(list(self.batch.choices), first=0)

    def _fail(self, choices: list[Choice], err: Exception, waiting: bool = False) -> None:
        """Empty the batch (and with ``waiting`` the queue); each request hears ``err``."""
        handles = {id(c.owner[0]): c.owner[0] for c in choices}
        if waiting:
            handles |= {id(h): h for h in self._waiting}
            self._waiting.clear()
        self.batch.reset()
        for handle in handles.values():
            handle.cancelled = True
            handle.sink(Event("error", error=err))

    def _admit(self) -> list[Choice]:
        """The choices that join the batch at this step."""
        if self.scheduler == "static" and self.batch.choices:
            return []
        free = self.max_batch_size - self.active_rows
        if not self.batch.choices and self.batch_wait_s > 0 and free > 1:
            # an idle engine waits a moment for company: requests sent together share a prefill
            deadline = time.monotonic() + self.batch_wait_s
            with self._cond:
                while (
                    sum(h.job.n - h.admitted for h in self._waiting) < free
                    and not self._closing
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
        joiners: list[Choice] = []
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
                joiners.append(self._choice(handle, handle.admitted))
                handle.admitted += 1
                if handle.admitted == handle.job.n:
                    self._waiting.popleft()
        return joiners

    def _choice(self, handle: Handle, index: int) -> Choice:
        """Choice ``index`` of a request, with its own sampler (``Sampling.generator``)."""
        job = handle.job
        return Choice(
            job.examples,
            job.streams,
            job.weights,
            job.max_new_tokens,
            job.sampling,
            job.sampling.generator(self.batch.device, index),
            job.logprobs,
            owner=(handle, index, AnswerText(self.tokenizer, job, self.stop_ids)),
        )

    def _after(self, choices: list[Choice], first: int) -> None:
        """Tell each choice's sink of its new token (the last of its ``ids``) and drop the
        choices that are done; ``choices`` are the batch's from index ``first`` on."""
        done = set()
        for offset, choice in enumerate(choices):
            handle, index, text = choice.owner
            self.stats["tokens"] += 1
            delta, stopped = text.update(choice.ids, handle.job.stream)
            reason = "stop" if stopped else choice.finish_reason(self.stop_ids)
            logprobs = handle.job.logprobs is not None
            if handle.cancelled:
                done.add(first + offset)
            elif reason is not None:
                done.add(first + offset)
                rest, content = text.finish(choice.ids)  # after this token's own delta
                handle.finished += 1
                event = Event("finish", index, delta + rest, content, reason, len(choice.ids))
                event.logprobs = list(choice.logprobs) if logprobs else None
                handle.sink(event)
            elif handle.job.stream:
                event = Event("token", index, delta, completion_tokens=len(choice.ids))
                event.logprobs = choice.logprobs[-1:] if logprobs else None
                handle.sink(event)
        cancelled = {i for i, c in enumerate(self.batch.choices) if c.owner[0].cancelled}
        self.batch.drop(done | cancelled)
