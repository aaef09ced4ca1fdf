"""YAML text to a mapping: duplicate keys are errors, and dotted ``key=value`` overrides.

foundry-train has the same rules in its own code (packages may not import each other); both
run the shared table tests/support/override_cases.yaml:

- a value is parsed as YAML: ``k=3`` is an int, ``k=`` is null (like ``k:`` in a file),
  ``k=''`` the empty string; text that is not YAML (``k=[1,``) is an error;
- a missing or null section on the path becomes a mapping; any other value there is an error
  (override that key itself);
- empty key parts (``a..b``, ``.a``) and a missing ``=`` are errors;
- the given mapping is never changed: the result is a copy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from foundry_eval.errors import FoundryError

__all__ = ["apply_overrides", "read_yaml"]

_MERGE = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that records repeated keys (plain YAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:  # an unhashable key: the constructor below reports it
            continue
        if first != line:
            loader.duplicates.append(
                f"duplicate key '{key}' on line {line} (first on line {first}); YAML would keep "
                "only the last value, so remove one of them."
            )
    return SafeConstructor.construct_mapping(loader, node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``; a missing file, bad syntax or a repeated key is an error."""
    p = Path(path)
    if not p.is_file():
        raise FoundryError(f"config file {p} does not exist. Check the path.")
    loader = _UniqueKeyLoader(p.read_text(encoding="utf-8"))
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise FoundryError(f"{p} is not valid YAML ({exc}). Fix the syntax and retry.") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise FoundryError(f"{p}: " + "; ".join(loader.duplicates))
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``a.b.c=value`` override applied (rules: module docstring)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise FoundryError(
                f"override '{item}' is not of the form dotted.key=value "
                "(for example optimizer.lr=3e-4)."
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise FoundryError(
                f"override '{item}': '{raw}' is not a YAML value; quote it, e.g. {key}='{raw}'."
            ) from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                where = ".".join(parts[: depth + 1])
                raise FoundryError(
                    f"override '{item}': '{where}' is not a mapping (it holds "
                    f"{type(node[part]).__name__} {node[part]!r}); override '{where}' itself."
                )
            node = node[part]
        node[parts[-1]] = value
    return out
