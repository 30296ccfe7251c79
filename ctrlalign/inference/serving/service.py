"""The service: one run's model cards, and requests validated into engine jobs.

A request becomes one ``Job`` per prompt through ``dial.dial_row``, the path the CLI and
Python use, so a field means the same everywhere; the engine (any ``ServingEngine``)
decodes the jobs. Every refusal is a ``RequestError`` naming the field at fault.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ctrlalign.inference.decode import encode_row
from ctrlalign.inference.dial import DialError, DialRequest, dial_row
from ctrlalign.inference.jobs import Job, ServingEngine
from ctrlalign.inference.serving.engines import ENGINES
from ctrlalign.inference.serving.metrics import Metrics
from ctrlalign.inference.serving.protocol import GenerationRequest, RequestError
from ctrlalign.model.layout import prompt_ids
from ctrlalign.model.rundir import Run, default_preference


def _as_fields(message: str) -> str:
    """The dial checks speak in CLI flags; a request names JSON fields."""
    for flag in ("alpha", "against", "preference", "compose"):
        message = message.replace(f"--{flag}", f"`{flag}`")
    return message


@dataclass
class Prepared:
    """A validated request: its engine jobs (one per prompt), and what the answer names."""

    jobs: list[Job]
    model: str
    preference: object
    body: GenerationRequest
    #: completions: each prompt's length in characters (where ``text_offset`` starts)
    prompt_chars: list[int] = field(default_factory=list)


class Service:
    """Validation and model cards for one run, over a serving engine.

    ``engine``: a ready ``ServingEngine``, or the name of one in ``engines.ENGINES``
    built with ``engine_options`` (the builtin engine's ``max_batch_size``, ``max_queue``,
    ``scheduler``, ``batch_wait_s``, ``max_prefill_tokens``; vLLM's ``export_dir`` and
    ``vllm_args`` besides).
    """

    def __init__(
        self,
        run: Run,
        name: str,
        max_new_tokens: int = 512,
        max_n: int = 8,
        engine: ServingEngine | str = "builtin",
        **engine_options: object,
    ):
        self.run = run
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.max_n = max_n
        self.default_preference = default_preference(run.info)
        config = run.model.config.get_text_config()
        self.context = getattr(config, "max_position_embeddings", None)
        self.metrics = Metrics()
        if isinstance(engine, str):
            options = {"max_batch_size": 16, "batch_wait_s": 0.02, **engine_options}
            engine = ENGINES[engine](run, self.metrics.on_step, **options)
        self.engine = engine
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
        common = {"object": "model", "created": created, "owned_by": "ctrlalign"}
        common |= {"root": self.name, "max_model_len": self.context}
        card = {
            "id": self.name,
            **common,
            "parent": None,
            "method": self.run.info.get("method"),
            "preferences": self.run.preferences,
            "default_preference": self.default_preference,
            "dial": bool(self.run.info.get("clm") or self.run.info.get("control")),
        }
        cards = [card] + [
            {"id": f"{self.name}:{pref}", **common, "parent": self.name, "preference": pref}
            for pref in self.run.preferences
        ]
        return {"object": "list", "data": cards}

    # -- validation --

    def _preference(self, body: GenerationRequest) -> str | dict[str, float] | None:
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

    def _limit(self, body: GenerationRequest) -> int | None:
        limit = body.token_limit()
        if limit is not None and limit > self.max_new_tokens:
            raise RequestError(
                f"`max_tokens` {limit} is over this server's --max-new-tokens "
                f"{self.max_new_tokens}",
                "max_tokens",
            )
        return limit

    def prepare(self, body: GenerationRequest) -> Prepared:
        """Validate a request into engine jobs, or raise a ``RequestError`` naming the field."""
        preference = self._preference(body)
        body.refuse_unsupported()
        if body.n > self.max_n:
            raise RequestError(f"`n` {body.n} is over this server's --max-n {self.max_n}", "n")
        limit = self._limit(body)
        stops = body.stops()
        prompts = body.prompts()
        compose = body.compose or "native"
        jobs = [
            self._job(
                body,
                DialRequest(messages, preference, body.against, body.alpha, compose=compose),
                text,
                limit,
                stops,
            )
            for messages, text in prompts
        ]
        return Prepared(
            jobs,
            body.model or self.name,
            preference if preference is not None else self.default_preference,
            body,
            [len(text) for _, text in prompts if text is not None],
        )

    def _job(
        self,
        body: GenerationRequest,
        request: DialRequest,
        text: str | None,
        limit: int | None,
        stops: tuple[str, ...],
    ) -> Job:
        """One prompt's job: its row through the dial, encoded, capped within the context;
        ``text``: a raw completion prompt (no chat template)."""
        try:
            row = dial_row(self.run, request)
        except DialError as err:
            raise RequestError(_as_fields(str(err)), err.field) from None
        tokenizer = self.run.tokenizer
        examples = encode_row(self.run.model, tokenizer, row, text)
        total = max(len(e.input_ids) for e in examples)
        # usage reports the prompt's own tokens, the control prefix excluded
        own = len(
            tokenizer(text).input_ids if text is not None else prompt_ids(tokenizer, request.prompt)
        )
        if total == 0:
            raise RequestError("the prompt is empty", body.prompt_field)
        return Job(
            examples,
            row.streams,
            row.weights,
            self._fit(total, limit, body.prompt_field),
            body.sampling(),
            body.n,
            stops,
            strip=body.strip,
            stream=bool(body.stream),
            prompt_tokens=own,
            logprobs=body.top_logprobs_count(),
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
