"""Resolving omegaconf-style ``${path.to.key}`` interpolation in llm-foundry YAMLs."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["resolve_interpolations"]

_REF = re.compile(r"\$\{([^${}]+)\}")
_MISSING = object()


def _lookup(root: dict[str, Any], path: str) -> Any:
    node: Any = root
    for part in path.strip().split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _resolve_value(value: Any, root: dict[str, Any], unresolved: set[str], depth: int) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_value(v, root, unresolved, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_value(v, root, unresolved, depth) for v in value]
    if not isinstance(value, str) or "${" not in value or depth > 20:
        return value
    whole = _REF.fullmatch(value.strip())
    if whole:  # a whole-value reference keeps the referenced type
        target = _lookup(root, whole.group(1))
        if target is _MISSING or ":" in whole.group(1):
            unresolved.add(whole.group(1))
            return value
        return _resolve_value(target, root, unresolved, depth + 1)

    def substitute(m: re.Match[str]) -> str:
        target = _lookup(root, m.group(1))
        if target is _MISSING or isinstance(target, dict | list):
            unresolved.add(m.group(1))
            return m.group(0)
        return str(_resolve_value(target, root, unresolved, depth + 1))

    return _REF.sub(substitute, value)


def resolve_interpolations(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``doc`` with every resolvable ``${...}`` replaced; also the references left unresolved."""
    unresolved: set[str] = set()
    out = _resolve_value(doc, doc, unresolved, 0)
    return out, sorted(unresolved)
