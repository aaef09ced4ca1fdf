"""``foundry-data convert-finetuning``: prompt/response and chat records -> tokenized turns.

Each record becomes one sample of turns (prompt tokens, response tokens), the layout described in
:mod:`foundry_data.finetuning_format`:

- ``{"prompt": ..., "response": ...}``: one turn. The prompt is tokenized with the tokenizer's
  special tokens (a BOS where the tokenizer adds one), the response without, and EOS is appended.
- ``{"messages": [{"role": ..., "content": ...}, ...]}``: rendered with the tokenizer's chat template;
  every assistant message is a response and everything rendered before it (since the previous
  response) is its prompt. The rendered pieces join back into exactly the rendering of the
  whole conversation.

A sample longer than ``--max-seq-len`` is truncated (default) or dropped; both are counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from foundry_data.conversion_run import ConversionRun
from foundry_data.errors import FoundryError
from foundry_data.finetuning_format import FINETUNING_COLUMNS, Turn, encode_turns
from foundry_data.manifest import DatasetManifest, FinetuningInfo, SourceInfo
from foundry_data.mds_options import DEFAULT_HASHES
from foundry_data.pretraining import ConversionReport
from foundry_data.progress import human_bytes, human_count
from foundry_data.records import unit_records
from foundry_data.resume import TOKENIZER_SUFFIXES, hash_files
from foundry_data.tokenizer_loading import LoadedTokenizer, load_tokenizer

__all__ = ["FinetuningOptions", "FinetuningReport", "convert_finetuning", "record_turns"]


@dataclass(frozen=True)
class FinetuningOptions:
    source: str
    out: str
    tokenizer: str
    max_seq_len: int
    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: str = "messages"
    overlong: Literal["truncate", "drop"] = "truncate"
    chat_template: str | None = None  # path of a Jinja template file
    compression: str | None = "zstd"
    hashes: list[str] = field(default_factory=lambda: list(DEFAULT_HASHES))
    shard_size: int = 1 << 26
    overwrite: bool = False
    local: str | None = None
    reader: Literal["auto", "datasets"] = "auto"
    subset: str | None = None
    split: str = "train"
    progress: bool = True
    resume: bool = True  # continue a killed identical run's work folder, if there is one


@dataclass(frozen=True)
class FinetuningReport(ConversionReport):
    def summary(self) -> str:
        m = self.manifest
        info = m.finetuning
        assert info is not None
        return (
            f"converted {m.num_documents:,} records ({info.num_prompt_response_records:,} "
            f"prompt/response, {info.num_chat_records:,} chat; {human_bytes(self.num_bytes)}) into "
            f"{m.num_samples:,} samples ({human_count(m.num_tokens)} tokens, max {m.seq_len}); "
            f"{info.num_truncated:,} truncated, {info.num_dropped:,} dropped as too long, "
            f"{info.num_empty:,} left out as empty; in {self.seconds:.1f} s"
            f"{self.resumed_note()} ({human_count(self.tokens_per_second())} tokens/s) -> {self.out}"
        )


class _Tokenizer:
    def __init__(self, tok: LoadedTokenizer, chat_template: str | None) -> None:
        self.tok = tok
        self.template = chat_template
        self.eos = tok.eos_token_id

    def prompt(self, text: str) -> list[int]:
        return list(self.tok.hf(text, add_special_tokens=True)["input_ids"])

    def plain(self, text: str) -> list[int]:
        return self.tok.encode_plain(text) if text else []

    def render(
        self, messages: Sequence[dict[str, Any]], generation_prompt: bool, where: str
    ) -> str:
        from jinja2 import TemplateError

        try:
            rendered = self.tok.hf.apply_chat_template(
                list(messages),
                tokenize=False,
                add_generation_prompt=generation_prompt,
                chat_template=self.template,
            )
        except TemplateError as exc:  # a syntax error, or the template's raise_exception()
            raise FoundryError(
                f"{where}: the chat template failed on this conversation: {exc}. Fix the "
                "conversation, or the template (--chat-template FILE, else the tokenizer's)."
            ) from None
        assert isinstance(rendered, str)
        return rendered


def _text(record: dict[str, Any], column: str, where: str) -> str:
    value = record[column]
    if not isinstance(value, str):
        raise FoundryError(
            f"{where}: column {column!r} holds {type(value).__name__}, not text. Fix the record."
        )
    return value


def _messages(record: dict[str, Any], column: str, where: str) -> list[dict[str, Any]]:
    messages = record[column]
    if not isinstance(messages, list) or not messages:
        raise FoundryError(
            f"{where}: {column!r} must be a non-empty list of {{'role': ..., 'content': ...}} "
            "messages."
        )
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise FoundryError(
                f"{where}: message {i + 1} is not {{'role': str, 'content': str}} ({message!r:.80})."
            )
    if messages[-1]["role"] != "assistant":
        raise FoundryError(
            f"{where}: the last message comes from {messages[-1]['role']!r}; a fine-tuning "
            "conversation must end with an 'assistant' message (the response to learn)."
        )
    return messages


def _chat_turns(tokenizer: _Tokenizer, messages: list[dict[str, Any]], where: str) -> list[Turn]:
    turns: list[Turn] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.render(messages[:i], generation_prompt=True, where=where)
        full = tokenizer.render(messages[: i + 1], generation_prompt=False, where=where)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise FoundryError(
                f"{where}: the chat template does not render this conversation as a growing text "
                "(a later rendering does not start with an earlier one), so prompts and responses "
                "cannot be told apart. Use a template that appends each message, via "
                "--chat-template FILE."
            )
        turns.append(
            Turn(
                prompt=tokenizer.plain(prefix[len(done) :]),
                response=tokenizer.plain(full[len(prefix) :]),
            )
        )
        done = full
    return turns


def record_turns(
    tokenizer: _Tokenizer, record: dict[str, Any], options: FinetuningOptions, where: str
) -> tuple[Literal["chat", "prompt_response"], list[Turn]]:
    """Tokenized turns of one record (before length limits)."""
    if options.messages_column in record and record[options.messages_column] is not None:
        if tokenizer.template is None and not tokenizer.tok.hf.chat_template:
            raise FoundryError(
                f"{where}: a chat record, but tokenizer {tokenizer.tok.name!r} has no chat "
                "template. Pass one with --chat-template FILE (a Jinja template), or use a "
                "tokenizer that has one (`foundry-data train-tokenizer` adds ChatML)."
            )
        messages = _messages(record, options.messages_column, where)
        return "chat", _chat_turns(tokenizer, messages, where)
    if options.prompt_column in record and options.response_column in record:
        prompt = _text(record, options.prompt_column, where)
        response = _text(record, options.response_column, where)
        return "prompt_response", [Turn(tokenizer.prompt(prompt), tokenizer.plain(response))]
    columns = ", ".join(repr(c) for c in record) or "(none)"
    raise FoundryError(
        f"{where}: the record has neither a {options.messages_column!r} column nor "
        f"{options.prompt_column!r} and {options.response_column!r} columns; its columns are "
        f"{columns}. Name yours with --messages-column, or --prompt-column and "
        "--response-column."
    )


def _with_eos(turns: list[Turn], eos: int | None) -> list[Turn]:
    last = turns[-1]
    if eos is None or (last.response and last.response[-1] == eos):
        return turns
    return [*turns[:-1], Turn(last.prompt, [*last.response, eos])]


def _truncate(turns: list[Turn], limit: int) -> list[Turn]:
    """The first ``limit`` tokens of the turns, dropping turns left without a response."""
    kept: list[Turn] = []
    budget = limit
    for turn in turns:
        prompt = turn.prompt[:budget]
        budget -= len(prompt)
        response = turn.response[:budget]
        budget -= len(response)
        if response:
            kept.append(Turn(prompt, response))
        if budget <= 0:
            break
    return kept


@dataclass
class _Counts:
    chat: int = 0
    prompt_response: int = 0
    truncated: int = 0
    dropped: int = 0
    empty: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    response_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fit(
    turns: list[Turn], options: FinetuningOptions, counts: _Counts, eos: int | None
) -> list[Turn] | None:
    if not any(turn.response for turn in turns):
        counts.empty += 1
        return None
    turns = _with_eos(turns, eos)
    length = sum(len(t.prompt) + len(t.response) for t in turns)
    if length <= options.max_seq_len:
        return turns
    if options.overlong == "drop":
        counts.dropped += 1
        return None
    turns = _truncate(turns, options.max_seq_len)
    if not turns:  # the first prompt alone fills --max-seq-len: nothing of a response is left
        counts.dropped += 1
        return None
    counts.truncated += 1
    return turns


def convert_finetuning(options: FinetuningOptions) -> FinetuningReport:
    """Run a fine-tuning conversion. Raises FoundryError on bad input."""
    from foundry_data import __version__

    if options.max_seq_len < 2:
        raise FoundryError(f"--max-seq-len must be at least 2 tokens, not {options.max_seq_len}.")
    with ConversionRun(options, desc="convert-finetuning") as run:
        tok = load_tokenizer(options.tokenizer)
        tokenizer = _Tokenizer(tok, _read_template(options.chat_template))
        writer, progress = run.start(
            FINETUNING_COLUMNS, identity=_tokenizer_identity(options, tok, tokenizer.template)
        )
        counts = _Counts(**run.resumed_state) if run.resumed_state is not None else _Counts()
        for unit, num_bytes in run.units(text_column=None):
            run.unit_started(replace(counts))
            records = unit_records(unit)
            tokens = 0
            for where, record in records:
                kind, turns = record_turns(tokenizer, record, options, where)
                setattr(counts, kind, getattr(counts, kind) + 1)
                fitted = _fit(turns, options, counts, tok.eos_token_id)
                if fitted is None:
                    continue
                writer.write(encode_turns(fitted))
                counts.samples += 1
                counts.prompt_tokens += sum(len(t.prompt) for t in fitted)
                counts.response_tokens += sum(len(t.response) for t in fitted)
                tokens += sum(len(t.prompt) + len(t.response) for t in fitted)
            progress.update(documents=len(records), tokens=tokens, num_bytes=num_bytes)
        if progress.documents == 0:
            raise FoundryError(f"source {options.source!r} holds no records.")
        if counts.samples == 0:
            advice = (
                "Raise --max-seq-len (with --overlong truncate, a record whose first prompt "
                "alone fills it keeps no response and is dropped)"
                if options.overlong == "truncate"
                else "Raise --max-seq-len or use --overlong truncate"
            )
            raise FoundryError(
                f"no record of {options.source!r} fits: {counts.dropped} too long for "
                f"--max-seq-len {options.max_seq_len}, {counts.empty} empty. {advice}."
            )
        manifest = _manifest(
            options,
            tok,
            source_info=run.source_info(),
            counts=counts,
            num_documents=progress.documents,
            version=__version__,
        )
        writer.finish(lambda: manifest)
    return FinetuningReport.of_run(run, options.out, manifest)


def _tokenizer_identity(
    options: FinetuningOptions, tok: LoadedTokenizer, template: str | None
) -> dict[str, Any]:
    """What of the tokenizer and chat template decides the output."""
    return {
        "tokenizer": {
            "files": hash_files(Path(options.tokenizer).expanduser(), TOKENIZER_SUFFIXES),
            "backend": _sha256(tok.backend_json()),
            "name": tok.name,
            "ids": [tok.vocab_size, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id],
            "chat_template": _sha256(str(tok.hf.chat_template or "")),
        },
        "chat_template": _sha256(template) if template is not None else None,
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise FoundryError(f"cannot read --chat-template {path}: {exc.strerror}.") from None


def _manifest(
    options: FinetuningOptions,
    tok: LoadedTokenizer,
    *,
    source_info: SourceInfo,
    counts: _Counts,
    num_documents: int,
    version: str,
) -> DatasetManifest:
    return DatasetManifest(
        kind="finetuning",
        tokenizer=tok.name,
        vocab_size=tok.vocab_size,
        seq_len=options.max_seq_len,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        source=source_info,
        num_samples=counts.samples,
        num_tokens=counts.prompt_tokens + counts.response_tokens,
        num_documents=num_documents,
        columns=FINETUNING_COLUMNS,
        compression=options.compression,
        hashes=options.hashes,
        finetuning=FinetuningInfo(
            max_seq_len=options.max_seq_len,
            overlong=options.overlong,
            num_truncated=counts.truncated,
            num_dropped=counts.dropped,
            num_empty=counts.empty,
            num_prompt_tokens=counts.prompt_tokens,
            num_response_tokens=counts.response_tokens,
            num_chat_records=counts.chat,
            num_prompt_response_records=counts.prompt_response,
        ),
        foundry_data_version=version,
    )
