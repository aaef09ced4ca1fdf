"""``serve``: an OpenAI-compatible HTTP endpoint (FastAPI + uvicorn) over the batching scheduler.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with server-sent-event
streaming), ``GET /v1/models``, ``GET /health``, and FastAPI's ``/openapi.json`` and ``/docs``.
Errors are JSON in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a
bad request, 401 for a missing or wrong API key, 404 for an unknown model or route, 413 for an
oversized body, 429 when the queue is full, 503 while shutting down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_schema import ChatCompletionRequest, CompletionRequest
from .chat import render_chat
from .engines import Engine
from .errors import FoundryError
from .generation import SequenceState, TextStream, check_fits
from .model_dir import GenerationDefaults
from .sampling import SamplingParams
from .scheduler import QueueFullError, Scheduler, ShuttingDownError, StreamEvent, Ticket

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


class APIError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


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
        positions = engine.layout.max_positions
        self.max_prompt_tokens = settings.max_prompt_tokens or (
            positions - 1 if positions else 4096
        )

    def close(self) -> None:
        self.scheduler.close()

    def check_prompt(self, ids: list[int], max_tokens: int, param: str) -> None:
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
            check_fits(len(ids), max_tokens, self.engine.layout.max_positions)
        except FoundryError as exc:
            raise APIError(400, exc.message, param=param, code="context_length_exceeded") from exc

    def submit(
        self,
        prompts: list[list[int]],
        request: CompletionRequest | ChatCompletionRequest,
        max_tokens: int,
    ) -> asyncio.Queue[StreamEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent] = asyncio.Queue()
        tickets = []
        for p, ids in enumerate(prompts):
            for j in range(request.n):
                sampling = SamplingParams(
                    temperature=request.temperature,
                    top_p=request.top_p,
                    top_k=request.top_k,
                    seed=None if request.seed is None else request.seed + j,
                )
                seq = SequenceState(
                    ids, max_tokens, sampling, frozenset(self.defaults.eos_token_ids)
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


async def _drain(events: asyncio.Queue[StreamEvent], count: int) -> AsyncIterator[StreamEvent]:
    """Yield events until each of ``count`` choices has finished."""
    remaining = count
    while remaining:
        event = await events.get()
        if event.error is not None:
            raise APIError(500, "generation failed inside the server.", type_="server_error")
        if event.finish_reason is not None:
            remaining -= 1
        yield event


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def create_app(service: InferenceService) -> FastAPI:
    """The FastAPI application serving ``service``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="foundry-infer",
        version=_version(),
        description="OpenAI-compatible completions and chat for a Foundry or Hugging Face model.",
        lifespan=lifespan,
    )
    app.state.service = service
    _install_error_handlers(app)
    _install_body_limit(app, service.settings.max_body_bytes)
    auth = Depends(_auth_dependency(service.settings.api_key))

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
        return await _answer(service, body, prompts, "text_completion", texts)

    @app.post("/v1/chat/completions", tags=["openai"], dependencies=[auth], response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        _check_model(service, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = await run_in_threadpool(render_chat, service.tokenizer, messages)
        except FoundryError as exc:
            raise APIError(400, exc.message, param="messages") from exc
        return await _answer(service, body, [ids], "chat.completion", [None])

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("foundry-infer")
    except PackageNotFoundError:
        return "0"


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


def _max_tokens(
    service: InferenceService, body: CompletionRequest | ChatCompletionRequest, prompt_len: int
) -> int:
    asked = body.max_tokens if isinstance(body, CompletionRequest) else body.token_budget()
    if asked is not None:
        return asked
    room = (service.engine.layout.max_positions or 1 << 30) - prompt_len
    return max(1, min(service.settings.default_chat_max_tokens, room))


async def _answer(
    service: InferenceService,
    body: CompletionRequest | ChatCompletionRequest,
    prompts: list[list[int]],
    kind: str,
    echo_texts: list[str | None],
) -> JSONResponse | StreamingResponse:
    param = "messages" if kind == "chat.completion" else "prompt"
    budgets = [_max_tokens(service, body, len(ids)) for ids in prompts]
    for ids, budget in zip(prompts, budgets, strict=True):
        service.check_prompt(ids, budget, param)
    events = service.submit(prompts, body, max(budgets))
    meta = {
        "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": service.settings.model_name,
    }
    choices = len(prompts) * body.n
    prompt_tokens = sum(len(p) for p in prompts) * body.n
    echo = [t if isinstance(body, CompletionRequest) and body.echo else None for t in echo_texts]
    if body.stream:
        chunks = _stream_chunks(service, events, choices, kind, meta, body, prompt_tokens, echo)
        return StreamingResponse(chunks, media_type="text/event-stream")
    try:
        texts = [""] * choices
        reasons: list[str | None] = [None] * choices
        completion_tokens = 0
        async for event in _drain(events, choices):
            texts[event.index] += event.text
            if event.finish_reason is not None:
                reasons[event.index] = event.finish_reason
                completion_tokens += event.completion_tokens
    finally:
        service.cancel(events)
    out_choices = []
    for i, (text, reason) in enumerate(zip(texts, reasons, strict=True)):
        prefix = echo[i // body.n] or ""
        if kind == "chat.completion":
            out_choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                    "logprobs": None,
                }
            )
        else:
            out_choices.append(
                {"index": i, "text": prefix + text, "finish_reason": reason, "logprobs": None}
            )
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return JSONResponse({**meta, "object": kind, "choices": out_choices, "usage": usage})


async def _stream_chunks(
    service: InferenceService,
    events: asyncio.Queue[StreamEvent],
    choices: int,
    kind: str,
    meta: dict[str, Any],
    body: CompletionRequest | ChatCompletionRequest,
    prompt_tokens: int,
    echo: list[str | None],
) -> AsyncIterator[bytes]:
    chat = kind == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(index: int, text: str | None, reason: str | None, first: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": index,
                "delta": delta,
                "finish_reason": reason,
                "logprobs": None,
            }
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        return _sse({**meta, "object": obj, "choices": [choice]})

    completion_tokens = 0
    try:
        for index in range(choices):
            if chat:
                yield chunk(index, None, None, first=True)
            elif echo[index // body.n]:
                yield chunk(index, echo[index // body.n], None)
        async for event in _drain(events, choices):
            completion_tokens += event.completion_tokens
            if event.text or event.finish_reason is not None:
                yield chunk(event.index, event.text, event.finish_reason)
        if body.stream_options is not None and body.stream_options.include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield _sse({**meta, "object": obj, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    except APIError as exc:
        yield _sse(
            {"error": {"message": exc.message, "type": exc.type, "param": None, "code": exc.code}}
        )
    finally:
        service.cancel(events)


def _auth_dependency(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), api_key):
            raise APIError(
                401,
                "missing or wrong API key. Send it as 'Authorization: Bearer KEY'.",
                type_="authentication_error",
                code="invalid_api_key",
            )

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x != "body"]
            param = param or (loc[0] if loc else None)
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(problems[:10])
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(FoundryError)
    async def user_error(request: Request, exc: FoundryError) -> JSONResponse:
        return APIError(400, exc.message).response()


def _install_body_limit(app: FastAPI, limit: int) -> None:
    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return APIError(
                413,
                f"the request body is {length} bytes; this server accepts at most {limit}.",
                code="request_too_large",
            ).response()
        return await call_next(request)
