"""Chat: rendering a conversation with the tokenizer's chat template, and the interactive loop."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from .engines import Engine
from .errors import FoundryError
from .generation import SequenceState, TextStream, check_fits, generate_tokens
from .model_dir import GenerationDefaults
from .sampling import SamplingParams

__all__ = ["chat_loop", "render_chat"]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise FoundryError(
            "the model's tokenizer has no chat template. Set one (tokenizer.chat_template = ...; "
            "tokenizer.save_pretrained(dir)) or use plain completion (generate, /v1/completions)."
        )
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja raises its own errors for templates that reject input
        raise FoundryError(f"the chat template rejected the conversation: {exc}.") from exc
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def stream_reply(
    engine: Engine,
    tokenizer: Any,
    prompt_ids: list[int],
    sampling: SamplingParams,
    max_new_tokens: int,
    defaults: GenerationDefaults,
    write: Callable[[str], None],
) -> str:
    """Generate and write the reply piece by piece; return its full text."""
    check_fits(len(prompt_ids), max_new_tokens, engine.layout.max_positions)
    seq = SequenceState(prompt_ids, max_new_tokens, sampling, frozenset(defaults.eos_token_ids))
    stream = TextStream(tokenizer)
    for token in generate_tokens(engine, seq):
        write(stream.push(token))
    write(stream.finish())
    return stream.text


def chat_loop(
    engine: Engine,
    tokenizer: Any,
    defaults: GenerationDefaults,
    sampling: SamplingParams,
    max_new_tokens: int,
    system: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Read user turns from ``stdin`` until EOF or ``/exit``; stream each reply to ``stdout``."""
    source = stdin or sys.stdin
    out = stdout or sys.stdout
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    render_chat(tokenizer, messages + [{"role": "user", "content": "hi"}])  # fail early
    interactive = source.isatty()

    def write(piece: str) -> None:
        out.write(piece)
        out.flush()

    while True:
        if interactive:
            write("> ")
        line = source.readline()
        if not line or line.strip() in {"/exit", "/quit"}:
            break
        if line.strip() == "/reset":
            messages = messages[:1] if system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        ids = render_chat(tokenizer, messages)
        reply = stream_reply(engine, tokenizer, ids, sampling, max_new_tokens, defaults, write)
        write("\n")
        messages.append({"role": "assistant", "content": reply})
