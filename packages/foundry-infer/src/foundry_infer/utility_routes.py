"""The server's routes besides the OpenAI ones: tokenize, detokenize, version, health, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from . import __version__
from .chat import render_chat
from .errors import FoundryError
from .http_guards import APIError

if TYPE_CHECKING:
    from .server import InferenceService

__all__ = ["DetokenizeRequest", "TokenizeRequest", "install_utility_routes", "route_template"]


class TokenizeRequest(BaseModel):
    """Either ``prompt`` (text) or ``messages`` (rendered with the chat template)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


def route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values for metrics)."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _tokenize(service: InferenceService, body: TokenizeRequest) -> list[int]:
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "give exactly one of prompt and messages.", param="prompt")
    if body.messages is not None:
        try:
            return render_chat(service.tokenizer, body.messages)
        except FoundryError as exc:
            raise APIError(400, exc.message, param="messages") from exc
    encoded = service.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)
    return list(encoded.input_ids)


def _check_name(service: InferenceService, name: str | None) -> None:
    if name is not None and name != service.settings.model_name:
        raise APIError(
            404,
            f"model {name!r} does not exist on this server; it serves "
            f"{service.settings.model_name!r}.",
            param="model",
            code="model_not_found",
        )


def install_utility_routes(app: FastAPI, service: InferenceService, auth: Depends) -> None:
    @app.post("/tokenize", tags=["server"], dependencies=[auth])
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        _check_name(service, body.model)
        ids = await run_in_threadpool(_tokenize, service, body)
        return {"tokens": ids, "count": len(ids), "max_model_len": service.max_positions}

    @app.post("/detokenize", tags=["server"], dependencies=[auth])
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        _check_name(service, body.model)
        vocab = service.engine.layout.vocab_size
        if any(not 0 <= t < vocab for t in body.tokens):
            raise APIError(400, f"token ids must be in [0, {vocab}).", param="tokens")
        text = await run_in_threadpool(service.tokenizer.decode, body.tokens)
        return {"prompt": text}

    @app.get("/version", tags=["server"])
    async def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get("/health", tags=["server"])
    async def health() -> JSONResponse:
        ok = service.scheduler.accepting
        body = {
            "status": "ok" if ok else "shutting_down",
            "model": service.settings.model_name,
            "backend": service.engine.name,
            **service.scheduler.stats(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        stats = service.scheduler.stats()
        gauges = {
            "queue_waiting": ("Sequences waiting for a batch slot.", float(stats["waiting"])),
            "queue_running": ("Sequences in the running batch.", float(stats["running"])),
            "decode_steps_total": ("Batched decode steps run.", float(stats["decode_steps"])),
        }
        text = service.metrics.render(gauges)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
