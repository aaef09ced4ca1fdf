"""``serve``: an OpenAI-compatible HTTP endpoint (FastAPI + uvicorn) over the batching scheduler.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with server-sent-event
streaming and token log-probabilities), ``GET /v1/models``, ``POST /tokenize``,
``POST /detokenize``, ``GET /version``, ``GET /health``, ``GET /metrics`` (Prometheus), and
FastAPI's ``/openapi.json`` and ``/docs``.
Errors are JSON in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a
bad request, 401 for a missing or wrong API key, 404 for an unknown model or route, 413 for an
oversized body, 429 when the queue is full, 503 while shutting down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from . import __version__
from .api_schema import ChatCompletionRequest, CompletionRequest
from .chat import render_chat
from .engines import Engine
from .errors import FoundryError
from .generation import SequenceState, TextStream, check_fits
from .http_guards import APIError, BodyLimit, auth_dependency, install_error_handlers
from .metrics import Metrics, MetricsMiddleware
from .model_dir import GenerationDefaults
from .responses import answer
from .sampling import SamplingParams
from .scheduler import QueueFullError, Scheduler, ShuttingDownError, StreamEvent, Ticket
from .utility_routes import install_utility_routes, route_template

__all__ = ["APIError", "InferenceService", "ServerSettings", "create_app"]

log = logging.getLogger("foundry_infer.server")


@dataclass(frozen=True)
class ServerSettings:
    """Limits and identity of a server."""

    model_name: str
    api_key: str | None = None
    max_prompt_tokens: int | None = None  # None: the model's positions minus one
    max_new_tokens: int = 1024
    default_chat_max_tokens: int = 256
    max_batch_size: int = 8
    max_queue: int = 64
    max_body_bytes: int = 4_000_000
    max_model_len: int | None = None  # None: the model's positions


class InferenceService:
    """The engine, tokenizer and scheduler behind the routes."""

    def __init__(
        self, engine: Engine, tokenizer: Any, defaults: GenerationDefaults, settings: ServerSettings
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.settings = settings
        self.scheduler = Scheduler(
            engine, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue
        )
        self.created = int(time.time())
        self._tickets_of: dict[int, list[Ticket]] = {}
        self.metrics = Metrics(settings.model_name)
        positions = engine.layout.max_positions
        if settings.max_model_len is not None:
            if positions is not None and settings.max_model_len > positions:
                raise FoundryError(
                    f"--max-model-len {settings.max_model_len} is more than the model's "
                    f"{positions} positions. Give at most {positions}."
                )
            positions = settings.max_model_len
        self.max_positions = positions
        self.max_prompt_tokens = settings.max_prompt_tokens or (
            positions - 1 if positions else 4096
        )

    def close(self) -> None:
        self.scheduler.close()

    def check_prompt(self, ids: list[int], max_tokens: int, param: str) -> None:
        if not ids:
            raise APIError(
                400,
                f"the {param} is empty (no tokens). Give at least one token of prompt.",
                param=param,
                code="empty_prompt",
            )
        if len(ids) > self.max_prompt_tokens:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this server accepts at most "
                f"{self.max_prompt_tokens}. Shorten the prompt.",
                param=param,
                code="context_length_exceeded",
            )
        if max_tokens > self.settings.max_new_tokens:
            raise APIError(
                400,
                f"max_tokens is {max_tokens}; this server generates at most "
                f"{self.settings.max_new_tokens} tokens per request.",
                param="max_tokens",
            )
        vocab = self.engine.layout.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"prompt token ids must be in [0, {vocab}).", param=param)
        try:
            check_fits(len(ids), max_tokens, self.max_positions)
        except FoundryError as exc:
            raise APIError(400, exc.message, param=param, code="context_length_exceeded") from exc

    def check_sampling(
        self, request: CompletionRequest | ChatCompletionRequest, max_tokens: int
    ) -> None:
        vocab = self.engine.layout.vocab_size
        bad = [t for t, _ in request.bias_pairs() if not 0 <= t < vocab]
        if bad:
            raise APIError(
                400,
                f"logit_bias names token id {bad[0]}, outside this model's vocabulary "
                f"[0, {vocab}).",
                param="logit_bias",
            )
        if request.min_tokens > max_tokens:
            raise APIError(
                400,
                f"min_tokens ({request.min_tokens}) is more than max_tokens ({max_tokens}).",
                param="min_tokens",
            )

    @staticmethod
    def sampling(
        request: CompletionRequest | ChatCompletionRequest, seed: int | None
    ) -> SamplingParams:
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            seed=seed,
            logit_bias=request.bias_pairs(),
            repetition_penalty=request.repetition_penalty,
            min_tokens=request.min_tokens,
            ignore_eos=request.ignore_eos,
        )

    def submit(
        self,
        prompts: list[list[int]],
        request: CompletionRequest | ChatCompletionRequest,
        max_tokens: list[int],
    ) -> asyncio.Queue[StreamEvent]:
        """Queue each prompt's ``request.n`` sequences; prompt ``p`` generates at most
        ``max_tokens[p]`` tokens (each prompt's own budget, checked against its own length)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent] = asyncio.Queue()
        tickets = []
        for p, ids in enumerate(prompts):
            for j in range(request.n):
                sampling = self.sampling(
                    request, None if request.seed is None else request.seed + j
                )
                seq = SequenceState(
                    ids,
                    max_tokens[p],
                    sampling,
                    frozenset(self.defaults.eos_token_ids),
                    logprobs=request.logprobs_count(),
                    prompt_logprobs=isinstance(request, CompletionRequest)
                    and request.echo
                    and request.logprobs is not None,
                )
                stream = TextStream(self.tokenizer, request.stop_list())
                tickets.append(Ticket(p * request.n + j, seq, stream, loop, events))
        try:
            self.scheduler.submit(tickets)
        except QueueFullError as exc:
            raise APIError(
                429,
                "the server's request queue is full. Retry after a short wait.",
                type_="rate_limit_error",
                code="queue_full",
            ) from exc
        except ShuttingDownError as exc:
            raise APIError(503, "the server is shutting down.", type_="server_error") from exc
        self._tickets_of[id(events)] = tickets
        return events

    def cancel(self, events: asyncio.Queue[StreamEvent]) -> None:
        """Forget a request's sequences, stopping any still running (client went away)."""
        for ticket in self._tickets_of.pop(id(events), []):
            ticket.seq.cancel()


def create_app(service: InferenceService) -> FastAPI:
    """The FastAPI application serving ``service``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="foundry-infer",
        version=__version__,
        description="OpenAI-compatible completions and chat for a Foundry or Hugging Face model.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, route_of=route_template)
    auth = Depends(auth_dependency(service.settings.api_key))
    install_utility_routes(app, service, auth)

    @app.get("/v1/models", tags=["openai"], dependencies=[auth])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service)]}

    @app.get("/v1/models/{model_id}", tags=["openai"], dependencies=[auth])
    async def model(model_id: str) -> dict[str, Any]:
        _check_model(service, model_id)
        return _model_card(service)

    @app.post("/v1/completions", tags=["openai"], dependencies=[auth], response_model=None)
    async def completions(body: CompletionRequest) -> JSONResponse | StreamingResponse:
        _check_model(service, body.model)
        prompts = await run_in_threadpool(_encode_prompts, service, body)
        texts = [p if isinstance(p, str) else None for p in body.prompts()]
        if body.echo:  # a prompt of token ids is echoed as its text
            texts = [
                t if t is not None else service.tokenizer.decode(ids)
                for t, ids in zip(texts, prompts, strict=True)
            ]
        return await answer(service, body, prompts, texts)

    @app.post("/v1/chat/completions", tags=["openai"], dependencies=[auth], response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        _check_model(service, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = await run_in_threadpool(render_chat, service.tokenizer, messages)
        except FoundryError as exc:
            raise APIError(400, exc.message, param="messages") from exc
        return await answer(service, body, [ids], [None])

    return app


def _model_card(service: InferenceService) -> dict[str, Any]:
    return {
        "id": service.settings.model_name,
        "object": "model",
        "created": service.created,
        "owned_by": "foundry",
    }


def _check_model(service: InferenceService, name: str) -> None:
    if name != service.settings.model_name:
        raise APIError(
            404,
            f"model {name!r} does not exist on this server; it serves "
            f"{service.settings.model_name!r} (see GET /v1/models).",
            param="model",
            code="model_not_found",
        )


def _encode_prompts(service: InferenceService, body: CompletionRequest) -> list[list[int]]:
    encoded = []
    for prompt in body.prompts():
        if isinstance(prompt, str):
            encoded.append(list(service.tokenizer(prompt).input_ids))
        else:
            encoded.append(list(prompt))
    return encoded
