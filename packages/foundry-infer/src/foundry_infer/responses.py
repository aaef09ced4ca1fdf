"""Turning a request's stream of events into an OpenAI-style answer: one JSON body or SSE chunks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, StreamingResponse

from .api_schema import ChatCompletionRequest, CompletionRequest
from .http_guards import APIError
from .scheduler import StreamEvent

if TYPE_CHECKING:
    from .server import InferenceService

__all__ = ["answer"]


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


def _max_tokens(
    service: InferenceService, body: CompletionRequest | ChatCompletionRequest, prompt_len: int
) -> int:
    asked = body.max_tokens if isinstance(body, CompletionRequest) else body.token_budget()
    if asked is not None:
        return asked
    room = (service.engine.layout.max_positions or 1 << 30) - prompt_len
    return max(1, min(service.settings.default_chat_max_tokens, room))


async def answer(
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
    service.check_sampling(body, min(budgets))
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
