"""The OpenAI request bodies this server takes, and its error type.

Strict, closed pydantic models: ``"temperature": "0.5"`` and unknown fields are refused (a
field we cannot honour must not be ignored silently). What differs between the chat and
the completions endpoint lives on the body (its prompts, its cap, its logprobs, what it
refuses), so the service and the response shaping never branch on the endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ctrlalign.inference.decode import Sampling

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


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The message as the chat template takes it (``developer`` is a system message)."""
        content = self.content
        if not isinstance(content, str):
            content = "".join(part.text for part in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(_Body):
    include_usage: bool = False


class ResponseFormat(_Body):
    type: Literal["text"]


class GenerationRequest(_Body):
    """Fields both endpoints share."""

    #: the request field that holds the prompt (named in errors about it)
    prompt_field: ClassVar[str]
    #: chat answers are stripped; raw completions keep their spaces
    strip: ClassVar[bool]

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

    def refuse_unsupported(self) -> None:
        """A ``RequestError`` for a field set to a value this server cannot honour."""
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0):
                raise RequestError(f"`{name}` is not supported by this server (only 0)", name)
        if self.logit_bias:
            raise RequestError("`logit_bias` is not supported by this server", "logit_bias")
        if self.stream_options is not None and not self.stream:
            raise RequestError("`stream_options` needs `stream: true`", "stream_options")

    def sampling(self) -> Sampling:
        temperature = 0.0 if self.temperature is None else self.temperature
        return Sampling(temperature, 1.0 if self.top_p is None else self.top_p, self.seed)

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise RequestError("`stop` takes up to 4 non-empty strings", "stop")
        return tuple(stops)

    def token_limit(self) -> int | None:
        """The cap the request asks for, if any."""
        return self.max_tokens

    def prompts(self) -> list[tuple[list[dict[str, str]], str | None]]:
        """One (chat messages, raw completion text or None) per prompt of the request."""
        raise NotImplementedError

    def top_logprobs_count(self) -> int | None:
        """Alternatives to report per token, or None: no logprobs at all."""
        raise NotImplementedError

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(GenerationRequest):
    prompt_field: ClassVar[str] = "messages"
    strip: ClassVar[bool] = True

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64 - 1)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs is not None and not self.logprobs:
            raise RequestError("`top_logprobs` needs `logprobs: true`", "top_logprobs")
        if self.tools:
            raise RequestError("tool calls are not supported by this server", "tools")

    def token_limit(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def prompts(self) -> list[tuple[list[dict[str, str]], str | None]]:
        return [([m.as_dict() for m in self.messages], None)]

    def top_logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(GenerationRequest):
    prompt_field: ClassVar[str] = "prompt"
    strip: ClassVar[bool] = False

    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise RequestError("`echo` is not supported by this server", "echo")
        if self.suffix is not None:
            raise RequestError("`suffix` is not supported by this server", "suffix")
        if self.best_of not in (None, self.n):
            raise RequestError("`best_of` other than `n` is not supported", "best_of")

    def prompts(self) -> list[tuple[list[dict[str, str]], str | None]]:
        texts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        return [([{"role": "user", "content": text}], text) for text in texts]

    def top_logprobs_count(self) -> int | None:
        return self.logprobs
