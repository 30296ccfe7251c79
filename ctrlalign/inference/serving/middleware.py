"""Errors in OpenAI's body, and the ASGI middleware in front of every route."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ctrlalign.inference.serving.metrics import Metrics
from ctrlalign.inference.serving.protocol import error_body


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
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


def validation_error(err: RequestValidationError) -> JSONResponse:
    """Pydantic's first complaint as OpenAI's 400, with the top-level field as ``param``."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    loc = loc[1:] if loc and loc[0] == "body" else loc
    kind = first.get("type", "")
    if kind == "json_invalid":
        return error_response(400, f"the request body is not JSON: {first.get('msg')}")
    if not loc:  # no body, or not an object
        return error_response(400, "the request body must be a JSON object")
    param = next((p for p in loc if isinstance(p, str)), None)
    where = _location(loc)
    if kind == "extra_forbidden":
        return error_response(
            400, f"unknown field `{where}`: this server does not support it", param
        )
    return error_response(400, f"`{where}`: {first.get('msg')}", param)


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
                response = error_response(
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
        response = error_response(413, self._too_large_message, code="request_too_large")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class Counting:
    """ASGI middleware counting responses by route and status for ``/metrics``."""

    ROUTES = frozenset(
        ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"]
    )

    def __init__(self, app, metrics: Callable[[], Metrics | None]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.ROUTES else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start" and (m := self.metrics()) is not None:
                m.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
