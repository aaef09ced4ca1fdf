"""Reading a YAML config, dotted overrides, and validation with all errors at once."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from foundry_train.config.root import TrainConfig
from foundry_train.errors import ConfigError, FoundryError

__all__ = ["load_yaml", "apply_overrides", "parse_config", "load_config", "dump_config"]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``."""
    p = Path(path)
    if not p.is_file():
        raise FoundryError(f"config file '{p}' does not exist. Give the path of a training YAML.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise FoundryError(f"'{p}' is not valid YAML ({exc}). Fix the syntax and retry.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FoundryError(f"'{p}' must hold a mapping of config keys, not {type(data).__name__}.")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of ``data``."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise FoundryError(
                f"override '{item}' is not of the form dotted.key=value "
                "(for example optimizer.lr=3e-4)."
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


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


def parse_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a config mapping; raises ConfigError listing every problem."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_format_error(e) for e in exc.errors()]
        raise ConfigError(problems, source) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a training YAML."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return parse_config(data, source=str(path))


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML (saved next to checkpoints and exports)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
