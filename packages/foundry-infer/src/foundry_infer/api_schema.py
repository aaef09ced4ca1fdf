"""Request bodies of the OpenAI-compatible routes (the subset Foundry serves), as pydantic models.

Fields a client commonly sends but that we do not implement are accepted only at their neutral
value (penalties 0, no tools, ``response_format`` text) and refused with a 400 naming the field
otherwise, so a request is never silently answered differently from what it asked for. The vLLM
extensions ``min_tokens``, ``ignore_eos``, ``repetition_penalty`` and ``top_k`` are honoured.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "StreamOptions"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Extension: keep the k most likely tokens (0: off).")
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) to a bias in [-100, 100] added to its logit."
    )
    repetition_penalty: float = Field(
        1.0, gt=0.0, le=10.0, description="Extension: CTRL-style repetition penalty (1: off)."
    )
    min_tokens: int = Field(
        0, ge=0, description="Extension: no end-of-sequence token before this many tokens."
    )
    ignore_eos: bool = Field(False, description="Extension: keep going past end-of-sequence.")
    response_format: dict[str, Any] | None = Field(None, description="Only {'type': 'text'}.")
    tools: list[Any] | None = Field(None, description="Not supported; must be unset or empty.")
    tool_choice: Any = Field(None, description="Not supported; must be unset or 'none'.")
    functions: list[Any] | None = Field(None, description="Not supported; must be unset.")
    function_call: Any = Field(None, description="Not supported; must be unset.")
    guided_json: Any = Field(None, description="Not supported; must be unset.")
    guided_regex: Any = Field(None, description="Not supported; must be unset.")
    guided_choice: Any = Field(None, description="Not supported; must be unset.")
    guided_grammar: Any = Field(None, description="Not supported; must be unset.")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported by this server; send 0 or leave unset")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if len(value) > 1024:
            raise ValueError("at most 1024 entries")
        for key, bias in value.items():
            digits = key.strip()
            if not (digits.isascii() and digits.isdigit()):  # "²".isdigit() is True
                raise ValueError(f"keys must be token ids (as strings), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"biases must be in [-100, 100], got {bias} for token {key}")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError(
                "structured output is not supported by this server; send {'type': 'text'} or "
                "leave it unset"
            )
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calling is not supported by this server; leave it unset")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none"):
            raise ValueError("tool calling is not supported by this server; leave it unset")
        return value

    @field_validator(
        "function_call", "guided_json", "guided_regex", "guided_choice", "guided_grammar"
    )
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported by this server; leave it unset")
        return value

    def bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Log-probabilities of each token and of the k most likely (0..20); with "
        "echo, of the prompt's tokens too.",
    )
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: object) -> object:
        if isinstance(value, list) and not value:
            raise ValueError("prompt list is empty")
        return value

    def logprobs_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s) as a list of texts or token-id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens
