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
from .logprob_format import chat_logprobs, completion_logprobs
from .sampling import TokenLogprob
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
    room = (service.max_positions or 1 << 30) - prompt_len
    settings = service.settings
    return max(1, min(settings.default_chat_max_tokens, settings.max_new_tokens, room))


class _Reply:
    """What one request's answer needs besides its events: kind, ids, echo and logprobs."""

    def __init__(
        self,
        service: InferenceService,
        body: CompletionRequest | ChatCompletionRequest,
        prompts: list[list[int]],
        echo_texts: list[str | None],
    ) -> None:
        self.service = service
        self.body = body
        self.chat = isinstance(body, ChatCompletionRequest)
        self.kind = "chat.completion" if self.chat else "text_completion"
        self.choices = len(prompts) * body.n
        self.prompt_tokens = sum(len(p) for p in prompts) * body.n
        echo = isinstance(body, CompletionRequest) and body.echo
        self.echo = [t if echo else None for t in echo_texts]
        self.meta = {
            "id": f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": service.settings.model_name,
        }
        self.wants_logprobs = body.logprobs_count() is not None

    def prefix(self, index: int) -> str:
        return self.echo[index // self.body.n] or ""

    def logprobs(self, entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any] | None:
        if not self.wants_logprobs:
            return None
        tokenizer = self.service.tokenizer
        if self.chat:
            return chat_logprobs(tokenizer, entries)
        return completion_logprobs(tokenizer, entries, offset)

    def choice(
        self,
        index: int,
        text: str,
        reason: str | None,
        entries: list[TokenLogprob],
        delta: bool,
        offset: int = 0,
    ) -> dict[str, Any]:
        """One choice; ``offset``: where ``entries``' first token starts in the choice's whole
        text (a streamed chunk's `text_offset` continues from the chunks before it)."""
        logprobs = self.logprobs(entries, offset)
        if not self.chat:
            return {"index": index, "text": text, "finish_reason": reason, "logprobs": logprobs}
        key = "delta" if delta else "message"
        content: dict[str, Any] = {} if delta else {"role": "assistant", "content": text}
        if delta and text:
            content["content"] = text
        return {"index": index, key: content, "finish_reason": reason, "logprobs": logprobs}

    def usage(self, completion_tokens: int) -> dict[str, int]:
        self.service.metrics.count_tokens(self.prompt_tokens, completion_tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }


async def answer(
    service: InferenceService,
    body: CompletionRequest | ChatCompletionRequest,
    prompts: list[list[int]],
    echo_texts: list[str | None],
) -> JSONResponse | StreamingResponse:
    reply = _Reply(service, body, prompts, echo_texts)
    param = "messages" if reply.chat else "prompt"
    budgets = [_max_tokens(service, body, len(ids)) for ids in prompts]
    for ids, budget in zip(prompts, budgets, strict=True):
        service.check_prompt(ids, budget, param)
    service.check_sampling(body, min(budgets))
    events = service.submit(prompts, body, budgets)
    if body.stream:
        return StreamingResponse(_stream_chunks(reply, events), media_type="text/event-stream")
    texts = [""] * reply.choices
    reasons: list[str | None] = [None] * reply.choices
    entries: list[list[TokenLogprob]] = [[] for _ in range(reply.choices)]
    completion_tokens = 0
    try:
        async for event in _drain(events, reply.choices):
            texts[event.index] += event.text
            entries[event.index] += [*event.prompt_logprobs, *event.logprobs]
            if event.finish_reason is not None:
                reasons[event.index] = event.finish_reason
                completion_tokens += event.completion_tokens
    finally:
        service.cancel(events)
    out = [
        reply.choice(i, reply.prefix(i) + text, reason, entries[i], delta=False)
        for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
    ]
    usage = reply.usage(completion_tokens)
    return JSONResponse({**reply.meta, "object": reply.kind, "choices": out, "usage": usage})


async def _stream_chunks(reply: _Reply, events: asyncio.Queue[StreamEvent]) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if reply.chat else "text_completion"

    def chunk(choice: dict[str, Any]) -> bytes:
        return _sse({**reply.meta, "object": obj, "choices": [choice]})

    completion_tokens = 0
    offsets = [0] * reply.choices  # each choice's text length so far, for `text_offset`
    try:
        for index in range(reply.choices):
            if reply.chat:
                first = reply.choice(index, "", None, [], delta=True)
                yield chunk({**first, "delta": {"role": "assistant", "content": ""}})
            elif reply.prefix(index):
                yield chunk(reply.choice(index, reply.prefix(index), None, [], delta=True))
        async for event in _drain(events, reply.choices):
            completion_tokens += event.completion_tokens
            entries = [*event.prompt_logprobs, *event.logprobs]
            if event.text or event.finish_reason is not None or entries:
                i = event.index
                choice = reply.choice(
                    i, event.text, event.finish_reason, entries, delta=True, offset=offsets[i]
                )
                if not reply.chat and choice["logprobs"] is not None:
                    offsets[i] += sum(len(t) for t in choice["logprobs"]["tokens"])
                yield chunk(choice)
        usage = reply.usage(completion_tokens)
        if reply.body.stream_options is not None and reply.body.stream_options.include_usage:
            yield _sse({**reply.meta, "object": obj, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    except APIError as exc:
        yield _sse(
            {"error": {"message": exc.message, "type": exc.type, "param": None, "code": exc.code}}
        )
    finally:
        reply.service.cancel(events)
