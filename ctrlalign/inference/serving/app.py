"""The FastAPI app: routes, error handlers and middleware over one ``Service``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ctrlalign.inference.serving.middleware import (
    Counting,
    Guard,
    error_response,
    validation_error,
)
from ctrlalign.inference.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
)
from ctrlalign.inference.serving.responses import ClientGone, Failed, respond
from ctrlalign.inference.serving.service import Service


def _handlers(app: FastAPI) -> None:
    """Every refusal in OpenAI's error body."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err.status, str(err), err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return validation_error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            return error_response(404, f"no route {where}", code="unknown_url")
        if err.status_code == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        if err.status_code == 413:
            return error_response(413, str(err.detail), code="request_too_large")
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(Failed)
    async def _failed(request: Request, err: Failed) -> JSONResponse:
        return error_response(500, f"generation failed: {err}")

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, err: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


def _routes(app: FastAPI, ready: Callable[[], Service]) -> None:
    @app.get("/health")
    async def health() -> dict:
        if not ready().engine.alive:
            raise RequestError(
                "the engine has stopped; restart the server", None, 503, "engine_dead"
            )
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        registry = ready().metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        return ready().models()

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict:
        for card in ready().models()["data"]:
            if card["id"] == model_id:
                return card
        raise RequestError(
            f"the model `{model_id}` does not exist", "model", 404, "model_not_found"
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        svc = ready()
        return await respond(svc, svc.prepare(body), request)

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        svc = ready()
        return await respond(svc, svc.prepare(body), request)


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

    def ready() -> Service:
        svc = get()
        if svc is None:
            raise RequestError("the model is still loading", None, 503, "loading")
        return svc

    app = FastAPI(
        title="ctrlalign",
        description="OpenAI-compatible serving with a preference and an alignment dial per request",
        lifespan=lifespan,
    )
    _handlers(app)
    _routes(app, ready)
    # the last added runs first: count every response, refused ones included
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.add_middleware(Counting, metrics=lambda: (svc := get()) and svc.metrics)
    return app
