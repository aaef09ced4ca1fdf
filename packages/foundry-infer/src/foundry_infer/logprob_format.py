"""Token log-probabilities in OpenAI's two shapes: legacy completions and chat."""

from __future__ import annotations

from typing import Any

from .sampling import TokenLogprob

__all__ = ["chat_logprobs", "completion_logprobs"]


def _text(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token])


def completion_logprobs(
    tokenizer: Any, entries: list[TokenLogprob], offset: int = 0
) -> dict[str, Any]:
    """``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` of ``/v1/completions``."""
    tokens, offsets, tops = [], [], []
    for entry in entries:
        text = _text(tokenizer, entry.token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if entry.logprob is None:
            tops.append(None)
        else:
            tops.append({_text(tokenizer, t): lp for t, lp in entry.top})
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer: Any, entries: list[TokenLogprob]) -> dict[str, Any]:
    """``{"content": [{"token", "logprob", "bytes", "top_logprobs"}, ...]}`` of chat."""

    def item(token: int, logprob: float) -> dict[str, Any]:
        text = _text(tokenizer, token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = []
    for entry in entries:
        assert entry.logprob is not None  # generated tokens always have one
        top = [item(t, lp) for t, lp in entry.top]
        content.append({**item(entry.token, entry.logprob), "top_logprobs": top})
    return {"content": content}
