"""Reading a YAML config, dotted overrides, and validation with all errors at once."""

from __future__ import annotations

import difflib
import shlex
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from foundry_train.config.root import TrainConfig
from foundry_train.config.yaml_text import apply_overrides, read_yaml
from foundry_train.errors import ConfigError

__all__ = [
    "load_yaml",
    "apply_overrides",
    "llm_foundry_problems",
    "parse_config",
    "load_config",
    "dump_config",
]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; a repeated key is an error naming it and its lines."""
    data, duplicates = read_yaml(path)
    if duplicates:
        raise ConfigError(duplicates, str(path))
    return data


def llm_foundry_problems(data: dict[str, Any], path: str | Path) -> list[str]:
    """A problem when ``data`` is an llm-foundry YAML (``variables:`` or ``${...}``), which
    foundry-train reads only through ``foundry-train migrate``."""
    signs = ["a top-level 'variables:' section"] if "variables" in data else []
    where = _interpolated_key(data)
    if where is not None:
        signs.append(f"'${{...}}' interpolation (at {where})")
    if not signs:
        return []
    out = Path(path).with_name(f"{Path(path).stem}-foundry.yaml")
    return [
        f"this is an llm-foundry YAML ({' and '.join(signs)}), which foundry-train does not "
        "read directly. Convert it first (migrate resolves the variables), then train from the "
        f"new file: `foundry-train migrate {shlex.quote(str(path))} {shlex.quote(str(out))}`."
    ]


def _interpolated_key(node: Any, where: str = "") -> str | None:
    """The dotted key of the first string holding ``${``, if any."""
    if isinstance(node, dict):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return where or "<root>" if isinstance(node, str) and "${" in node else None
    for key, value in items:
        found = _interpolated_key(value, f"{where}.{key}" if where else key)
        if found is not None:
            return found
    return None


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel classes inside an annotation (through Optional, Union, dict values, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return [c for a in args for c in _model_classes(a)]
    if origin is dict and len(args) == 2:
        return [c for c in _model_classes(args[1])]
    return []


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section a validation location points into."""
    classes: list[type[BaseModel]] = [TrainConfig]
    for part in loc:
        nxt: list[type[BaseModel]] = []
        for cls in classes:
            field = cls.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_model_classes(field.annotation))
        if nxt:
            classes = nxt
        # a dict key (e.g. a stream name) keeps the current classes
    return sorted({name for cls in classes for name in cls.model_fields})


def _format_error(err: Any) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))
    dotted = ".".join(str(p) for p in loc) or "<root>"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{dotted}: unknown key.{hint} Known keys here: {', '.join(known)}."
    if kind == "missing":
        return f"{dotted}: required key is missing."
    given = err.get("input")
    given_s = repr(given) if not isinstance(given, dict) else "a mapping"
    if len(given_s) > 80:
        given_s = given_s[:77] + "..."
    msg = err["msg"].removeprefix("Value error, ")
    return f"{dotted}: {msg} (given {given_s})."


def parse_config(
    data: dict[str, Any], source: str = "config", problems: list[str] | None = None
) -> TrainConfig:
    """Validate a config mapping; raises ConfigError listing every problem (``problems``
    found earlier, e.g. duplicate keys, come first)."""
    found = list(problems or [])
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        found += [_format_error(e) for e in exc.errors()]
        raise ConfigError(found, source) from None
    if found:
        raise ConfigError(found, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a training YAML; every problem is reported at once."""
    data, problems = read_yaml(path)
    foreign = llm_foundry_problems(data, path)
    if foreign:  # its keys are llm-foundry's: the schema errors would only be noise
        raise ConfigError(problems + foreign, str(path))
    data = apply_overrides(data, overrides or [])
    return parse_config(data, source=str(path), problems=problems)


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML (saved next to checkpoints and exports)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
