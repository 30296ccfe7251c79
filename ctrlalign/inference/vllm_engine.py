"""vLLM as a serving engine: the run's answers decoded by vLLM's ``AsyncLLM`` in process.

A row that one forward of one model answers runs on vLLM, whatever its control:

- LoRA preferences through vLLM's multi-LoRA, the run's adapters registered per request;
- a natively composed blend of LoRA preferences as one adapter of the summed rank
  (``lora_blend``), exact because a sum of LoRA deltas is one LoRA; built on first use, the
  newest ``MAX_BLENDS`` kept registered;
- prompt and token controls as their prefix ids, soft prompts as prompt embeddings
  (``enable_prompt_embeds``), so rows of any preference share vLLM's batches;
- the dial at alpha 0 or 1 (one stream), a CLM run's aligned model.

Rows that mix several streams' logits at every step (alpha between or beyond 0 and 1, a
blend composed by logits, a CLM run's unaligned stream) are decoded by ``fallback``, the
builtin engine over the same run, in the same process: exact, never a batch-wide alpha.
vLLM cannot carry them itself without a model of its own: two requests paired by a logits
processor leave lockstep when the scheduler admits them in different steps
(docs/serving.md gives the evidence).

Text, stop strings and finish reasons go through the builtin engine's ``AnswerText``, so a
request gets the same events from both engines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import EmbedsPrompt, TokensPrompt
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from ctrlalign.inference.decode import TokenLogprob
from ctrlalign.inference.export import (
    VLLM_LORA_RANKS,
    export_run,
    run_fingerprint,
    vllm_lora_rank,
)
from ctrlalign.inference.jobs import (
    AnswerText,
    EngineClosed,
    Event,
    Handle,
    Job,
    QueueFull,
    ServingEngine,
    Sink,
)
from ctrlalign.inference.lora_blend import blend_adapter, blend_rank
from ctrlalign.model.controls import Blend
from ctrlalign.model.layout import collate
from ctrlalign.model.rundir import Run

log = logging.getLogger(__name__)

#: blended adapters kept registered; the least recently used goes when one more is asked for
MAX_BLENDS = 32

#: vLLM clamps a logit bias to [-100, 100]: a control token can never win against that
SUPPRESS = -100.0


def vllm_export(run: Run, folder: Path) -> dict:
    """The run exported for vLLM into ``folder`` (made on first use, reused after), or a
    ``ValueError`` when ``folder`` holds another run's export."""
    manifest_path = folder / "export.json"
    if not manifest_path.exists():
        return export_run(run, folder)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("fingerprint") != run_fingerprint(run):
        raise ValueError(
            f"{folder} holds the export of another run (or of this run before it changed); "
            "remove it or pick another --vllm-export folder"
        )
    return manifest


def _lora_rank(rank: int) -> int:
    allowed = vllm_lora_rank(rank)
    if allowed is None:
        raise ValueError(f"a LoRA of rank {rank} is over vLLM's largest, {VLLM_LORA_RANKS[-1]}")
    return allowed


class VllmEngine:
    """``ServingEngine`` over vLLM's ``AsyncLLM``; multi-stream rows go to ``fallback``.

    ``export_dir``: where the run is exported for vLLM (made once, reused after).
    ``max_lora_rank``: vLLM's own, which every LoRA row pays for (its kernels
    pad each adapter to it); a blend of a larger summed rank is decoded by ``fallback``.
    Default: the smallest vLLM accepts above the largest preference's rank, so a plain
    preference costs what it costs on plain vLLM.
    ``engine_args``: vLLM's own ``AsyncEngineArgs`` fields (``tensor_parallel_size``,
    ``max_num_seqs``, ``gpu_memory_utilization``, ``dtype``, ``enforce_eager``, ...).
    """

    def __init__(
        self,
        run: Run,
        export_dir: str | Path,
        fallback: ServingEngine,
        max_queue: int = 256,
        max_lora_rank: int | None = None,
        **engine_args: object,
    ):
        self.run = run
        self.fallback = fallback
        self.max_queue = max_queue
        self.folder = Path(export_dir).resolve()
        self.manifest = vllm_export(run, self.folder)
        model = run.model
        self.control = model.control
        self.kind = self.control.kind if self.control is not None else None
        self.stop_ids = set(model.end_ids(run.tokenizer))
        suppressed = self.control.suppressed_token_ids() if self.control else []
        self.bias = {int(t): SUPPRESS for t in suppressed} or None
        self.adapters = {
            pref: LoRARequest(pref, i + 1, str(self.folder / entry["adapter"]))
            for i, (pref, entry) in enumerate(self.manifest["preferences"].items())
            if "adapter" in entry
        }
        self.ranks = {p: self.control.peft.peft_config[p].r for p in self.adapters if self.kind}
        if self.adapters and not self.ranks:  # DPO's adapter: the LM is the PeftModel
            self.ranks = {"aligned": model.lm.peft_config["default"].r}
        largest = max(self.ranks.values(), default=1)
        self.max_lora_rank = _lora_rank(max(max_lora_rank or 1, largest))
        self._blends: OrderedDict[Blend, LoRARequest] = OrderedDict()
        self._next_lora_id = len(self.adapters) + 1
        self.stats = {"requests": 0, "tokens": 0, "vllm_requests": 0, "fallback_requests": 0}
        self._live: dict[int, _Handle] = {}  # submitted, not yet answered, by id
        self._closing = False
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ctrlalign-vllm")
        self._thread.daemon = True
        self._thread.start()
        args = self._engine_args(engine_args)
        self.llm: AsyncLLM = self._call(self._start(args))

    # -- set-up ---------------------------------------------------------------------------

    def _engine_args(self, options: dict) -> AsyncEngineArgs:
        args: dict = {"model": str(self.folder / "model"), "seed": 0}
        if self.adapters:
            args |= {
                "enable_lora": True,
                "max_lora_rank": self.max_lora_rank,
                "max_loras": len(self.adapters),
                "max_cpu_loras": len(self.adapters) + MAX_BLENDS,
            }
        if self.kind == "soft-prompt":
            args["enable_prompt_embeds"] = True
        args |= {k: v for k, v in options.items() if v is not None}
        return AsyncEngineArgs(**args)

    async def _start(self, args: AsyncEngineArgs) -> AsyncLLM:
        return AsyncLLM.from_engine_args(args)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    # -- the public side (any thread) -------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self.llm.errored and self._thread.is_alive() and self.fallback.alive

    def _handles(self) -> list[_Handle]:
        with self._lock:  # another thread may be adding or removing one
            return list(self._live.values())

    @property
    def queue_length(self) -> int:
        waiting = sum(h.first_token is None for h in self._handles())
        return waiting + self.fallback.queue_length

    @property
    def active_rows(self) -> int:
        running = [h for h in self._handles() if h.first_token is not None]
        return sum(h.job.n - h.finished for h in running) + self.fallback.active_rows

    def runs_on_vllm(self, job: Job) -> bool:
        """One stream of weight 1 that the exported model answers: not a CLM run's
        unaligned stream, not a LoRA blend over ``max_lora_rank``."""
        if len(job.streams) != 1 or job.weights != (1.0,):
            return False
        stream = job.streams[0]
        if isinstance(stream.preference, Blend) and self.kind == "lora":
            return blend_rank(self.folder, stream.preference) <= self.max_lora_rank
        return stream.aligned or self.run.model.clm is None

    def submit(self, job: Job, sink: Sink) -> Handle:
        if not self.alive:
            raise EngineClosed(f"the vLLM engine has stopped: {self.llm.dead_error}")
        if not self.runs_on_vllm(job):
            handle = self.fallback.submit(job, sink)
            self.stats["fallback_requests"] += 1
            self.stats["requests"] += 1
            return handle
        with self._lock:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            waiting = sum(h.first_token is None for h in self._live.values())
            if waiting >= self.max_queue:
                raise QueueFull(f"{waiting} requests are already waiting")
        prompt, lora = self._prompt(job)
        handle = _Handle(job, sink)
        with self._lock:
            self._live[id(handle)] = handle
            self.stats["requests"] += 1
            self.stats["vllm_requests"] += 1
        asyncio.run_coroutine_threadsafe(self._answer(handle, prompt, lora), self.loop)
        return handle

    def close(self, timeout: float | None = None) -> None:
        """No new requests; those in flight finish (``timeout`` seconds at most, then they
        are cancelled with an error), then vLLM's engine process stops. Again: nothing."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._live and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        for handle in self._handles():
            handle.cancel()
        self.fallback.close(timeout)
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _stop(self) -> None:
        """vLLM's engine process down, then every task it left on this loop ended."""
        self.llm.shutdown()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.wait(rest, timeout=10) if rest else None

    # -- one request ----------------------------------------------------------------------

    def _prompt(self, job: Job) -> tuple[TokensPrompt | EmbedsPrompt, LoRARequest | None]:
        """What vLLM is sent for the job's one stream: ids, or embeddings where a soft
        prompt fills the prefix; and the adapter, for a LoRA run."""
        example, stream = job.examples[0], job.streams[0]
        if self.kind == "soft-prompt":
            batch = collate([example], self.run.tokenizer.pad_token_id, left=True)
            device = next(self.run.model.parameters()).device
            with torch.no_grad():
                embeds = self.run.model.embed(
                    batch["input_ids"].to(device),
                    batch["prefix_mask"].to(device),
                    batch["preference_ids"].to(device),
                )
            prompt = EmbedsPrompt(prompt_embeds=embeds[0].float().cpu())
        else:
            prompt = TokensPrompt(prompt_token_ids=list(example.input_ids))
        if self.kind == "lora":
            return prompt, self._adapter(stream.preference)
        return prompt, self.adapters.get("aligned")  # DPO's adapter, or None

    def _adapter(self, preference: str | Blend) -> LoRARequest:
        if isinstance(preference, str):
            return self.adapters[preference]
        with self._lock:
            if preference in self._blends:
                self._blends.move_to_end(preference)
                return self._blends[preference]
        request = self._build_blend(preference)
        with self._lock:
            self._blends[preference] = request
            while len(self._blends) > MAX_BLENDS:  # its folder stays: cheap to register again
                self._blends.popitem(last=False)
        return request

    def _build_blend(self, blend: Blend) -> LoRARequest:
        folder = blend_adapter(self.folder, blend)
        with self._lock:
            ident, self._next_lora_id = self._next_lora_id, self._next_lora_id + 1
        return LoRARequest(f"blend-{folder.name}", ident, str(folder))

    def _params(self, job: Job, index: int) -> SamplingParams:
        sampling = job.sampling
        seed = None if sampling.seed is None else sampling.seed + index
        return SamplingParams(
            max_tokens=job.max_new_tokens,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p,
            seed=seed,
            logprobs=job.logprobs,
            stop_token_ids=sorted(self.stop_ids),
            logit_bias=self.bias,
            detokenize=False,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
        )

    async def _answer(self, handle: _Handle, prompt, lora: LoRARequest | None) -> None:
        """Every choice of one job as its own vLLM request, concurrently."""
        handle.task = asyncio.current_task()
        try:
            if handle.cancelled:  # its client left before it started
                return
            choices = [self._choice(handle, i, prompt, lora) for i in range(handle.job.n)]
            results = await asyncio.gather(*choices, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors and not handle.cancelled:
                if not isinstance(errors[0], asyncio.CancelledError):
                    log.error("vLLM request failed", exc_info=errors[0])
                handle.sink(
                    Event("error", error=EngineClosed(f"the vLLM engine failed: {errors[0]}"))
                )
        except asyncio.CancelledError:
            if not handle.cancelled:
                handle.sink(Event("error", error=EngineClosed("the server shut down first")))
        finally:
            with self._lock:
                self._live.pop(id(handle), None)

    async def _choice(self, handle: _Handle, index: int, prompt, lora) -> None:
        job = handle.job
        text = AnswerText(self.run.tokenizer, job, self.stop_ids)
        ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        request_id = f"{uuid.uuid4().hex}-{index}"
        async for out in self.llm.generate(
            prompt, self._params(job, index), request_id, lora_request=lora
        ):
            if handle.cancelled:
                await self.llm.abort(request_id)
                return
            handle.first_token = handle.first_token or time.monotonic()
            piece = out.outputs[0]
            new = list(piece.token_ids)
            ids += new
            self.stats["tokens"] += len(new)
            if job.logprobs is not None and piece.logprobs:
                entries = zip(new, piece.logprobs, strict=True)
                logprobs += [_logprob(t, e, job.logprobs) for t, e in entries]
            delta, stopped = text.update(ids, job.stream)
            if stopped or piece.finish_reason is not None:
                if not out.finished:
                    await self.llm.abort(request_id)
                rest, content = text.finish(ids)
                reason = "stop" if stopped or (ids and ids[-1] in self.stop_ids) else "length"
                event = Event("finish", index, delta + rest, content, reason, len(ids))
                event.logprobs = logprobs if job.logprobs is not None else None
                handle.finished += 1
                handle.sink(event)
                return
            if job.stream:
                event = Event("token", index, delta, completion_tokens=len(ids))
                event.logprobs = logprobs[-len(new) :] if job.logprobs is not None else None
                handle.sink(event)


def _logprob(token: int, entries: dict, top: int) -> TokenLogprob:
    """vLLM's ``{id: Logprob}`` at one position (the ``top`` best and the sampled token)
    as ``(token, logprob, [(id, logprob), ...])``, the alternatives the ``top`` best in rank
    order, as the builtin engine reports them."""
    ranked = sorted((lp.rank, tid, lp.logprob) for tid, lp in entries.items() if lp.rank <= top)
    return token, entries[token].logprob, [(tid, value) for _, tid, value in ranked]


class _Handle(Handle):
    """A vLLM job's handle: ``cancel`` aborts its requests at once (a client gone)."""

    task: asyncio.Task | None = None

    def cancel(self) -> None:
        super().cancel()
        task = self.task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
