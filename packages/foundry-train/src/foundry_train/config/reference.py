"""Markdown reference of every config key, generated from the pydantic schema."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from foundry_train.config.loading import _model_classes
from foundry_train.config.root import TrainConfig

__all__ = ["config_reference"]


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for noise in ("typing.", "foundry_train.config.sections.", "foundry_train.config.root."):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{value!r}`"


def _section(cls: type[BaseModel], prefix: str, out: list[str], seen: set[str]) -> None:
    title = prefix or "top level"
    out += [f"## `{title}`", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
    out += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        out.append(
            f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | "
            f"{field.description or ''} |"
        )
        for sub in _model_classes(field.annotation):
            is_dict = typing.get_origin(field.annotation) is dict or "dict[" in repr(
                field.annotation
            )
            nested.append((sub, f"{key}.<name>" if is_dict else key))
    out.append("")
    for sub, key in nested:
        if key not in seen:
            seen.add(key)
            _section(sub, key, out, seen)


def config_reference() -> str:
    """The whole reference as Markdown (docs/config-reference.md)."""
    out = [
        "# foundry-train config reference",
        "",
        "Generated from the pydantic schema by `foundry-train config-reference`; do not edit.",
        "Durations are composer time strings: `100ba` (batches), `1ep` (epochs), `2000tok`, `0.1dur`.",
        "",
    ]
    _section(TrainConfig, "", out, set())
    return "\n".join(out).rstrip() + "\n"
