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

__all__ = ["chat_loop", "fit_history", "render_chat"]


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


def fit_history(
    tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int, max_positions: int | None
) -> tuple[list[int], int]:
    """Render ``messages``, first dropping the oldest turns until the reply has room.

    The system message and the newest user message are never dropped; a user message goes
    together with the reply that followed it. ``messages`` is shortened in place. Returns the
    prompt's token ids and how many messages were dropped.
    """
    first = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    while True:
        ids = render_chat(tokenizer, messages)
        if max_positions is None or len(ids) + max_new_tokens <= max_positions:
            return ids, dropped
        if len(messages) - first <= 1:
            raise FoundryError(
                f"this message is too long: with the system prompt it takes {len(ids)} tokens, "
                f"which leaves no room for a {max_new_tokens}-token reply in the model's "
                f"{max_positions} positions. Send a shorter message or lower --max-new-tokens."
            )
        del messages[first]
        dropped += 1
        if len(messages) - first > 1 and messages[first]["role"] == "assistant":
            del messages[first]
            dropped += 1


def stream_reply(
    engine: Engine,
    tokenizer: Any,
    prompt_ids: list[int],
    sampling: SamplingParams,
    max_new_tokens: int,
    defaults: GenerationDefaults,
    write: Callable[[str], None],
) -> tuple[str, int]:
    """Generate and write the reply piece by piece; return its text and how many tokens were
    generated (an end-of-sequence token included)."""
    check_fits(len(prompt_ids), max_new_tokens, engine.layout.max_positions)
    seq = SequenceState(prompt_ids, max_new_tokens, sampling, frozenset(defaults.eos_token_ids))
    stream = TextStream(tokenizer)
    for token in generate_tokens(engine, seq):
        write(stream.push(token))
    write(stream.finish())
    return stream.text, len(seq.generated)


def chat_loop(
    engine: Engine,
    tokenizer: Any,
    defaults: GenerationDefaults,
    sampling: SamplingParams,
    max_new_tokens: int,
    system: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Read user turns from ``stdin`` until EOF or ``/exit``; stream each reply to ``stdout``.

    When the conversation outgrows the model's context, the oldest turns are dropped (the system
    message is kept) with a note on ``stderr``.
    """
    source = stdin or sys.stdin
    out = stdout or sys.stdout
    notes = stderr or sys.stderr
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    render_chat(tokenizer, messages + [{"role": "user", "content": "hi"}])  # fail early
    interactive = source.isatty()
    # Piped: each turn is marked, so a transcript shows where a reply starts and ends.
    user_mark, reply_mark = ("", "") if interactive else ("user> ", "assistant> ")

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
        positions = engine.layout.max_positions
        try:
            ids, dropped = fit_history(tokenizer, messages, max_new_tokens, positions)
        except FoundryError as exc:
            messages.pop()
            print(f"error: {exc.message}", file=notes, flush=True)
            continue
        if dropped:
            print(
                f"[dropped the {dropped} oldest message(s) to fit the model's {positions} "
                "positions; the system message is kept]",
                file=notes,
                flush=True,
            )
        if not interactive:
            write(f"{user_mark}{line.rstrip(chr(10))}\n{reply_mark}")
        reply, _ = stream_reply(engine, tokenizer, ids, sampling, max_new_tokens, defaults, write)
        write("\n" if interactive else "\n\n")
        messages.append({"role": "assistant", "content": reply})
