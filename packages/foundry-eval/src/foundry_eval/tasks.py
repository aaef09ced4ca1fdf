"""Loading task lists and gauntlets: shipped names, YAML files or in-memory dicts."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, cast

from foundry_eval.config import (
    GauntletConfig,
    TaskConfig,
    TaskSpec,
    parse_model,
    read_yaml,
    resolve_data_path,
)
from foundry_eval.errors import FoundryError

__all__ = ["SHIPPED_GAUNTLETS", "load_gauntlet", "load_tasks", "select_tasks", "shipped_yaml"]

SHIPPED_GAUNTLETS = {"gauntlet_v0.3": "v0.3.yaml"}


def shipped_yaml(name: str) -> dict[str, Any]:
    """The parsed YAML of a gauntlet shipped with foundry-eval (e.g. ``gauntlet_v0.3``)."""
    if name not in SHIPPED_GAUNTLETS:
        raise FoundryError(
            f"unknown shipped gauntlet '{name}'. Choose one of {sorted(SHIPPED_GAUNTLETS)} "
            "or pass a path to a YAML file."
        )
    text = (
        importlib.resources.files("foundry_eval")
        .joinpath("gauntlets", SHIPPED_GAUNTLETS[name])
        .read_text(encoding="utf-8")
    )
    import yaml

    return yaml.safe_load(text)


def _as_dict(source: str | Path | dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(source, list):
        return {"icl_tasks": source}
    if isinstance(source, dict):
        return source
    text = str(source)
    if text in SHIPPED_GAUNTLETS:
        return shipped_yaml(text)
    data = read_yaml(text)
    if not isinstance(data, dict):
        raise FoundryError(f"{text} must hold a mapping with an 'icl_tasks' list.")
    return cast("dict[str, Any]", data)


def load_tasks(
    yaml_path_or_dict: str | Path | dict[str, Any] | list[dict[str, Any]],
    data_root: str | Path,
) -> list[TaskConfig]:
    """Read ``icl_tasks`` (llm-foundry's schema) and expand each few-shot setting into a TaskConfig.

    ``yaml_path_or_dict`` is a YAML path, a shipped name (``gauntlet_v0.3``), a dict holding
    ``icl_tasks`` or the list itself. Data paths are resolved against ``data_root``.
    """
    data = _as_dict(yaml_path_or_dict)
    entries = data.get("icl_tasks")
    if not isinstance(entries, list) or not entries:
        raise FoundryError(
            "the task config has no 'icl_tasks' list. Give a list of tasks, each with label, "
            "dataset_uri, icl_task_type and num_fewshot."
        )
    tasks: list[TaskConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(cast("list[Any]", entries)):
        spec = parse_model(TaskSpec, entry, "task config", prefix=f"icl_tasks[{i}]")
        fields = spec.model_dump(exclude={"num_fewshot", "batch_size", "num_beams"})
        fields.pop("post_processing_funcs", None)
        for shots in spec.num_fewshot:
            if shots < 0:
                raise FoundryError(f"icl_tasks[{i}].num_fewshot: {shots} is negative. Use >= 0.")
            task = TaskConfig(
                **fields,
                num_fewshot=shots,
                data_path=resolve_data_path(spec.dataset_uri, data_root),
            )
            if task.name in seen:
                raise FoundryError(f"task '{task.name}' is listed twice. Remove the duplicate.")
            seen.add(task.name)
            tasks.append(task)
    return tasks


def select_tasks(
    tasks: list[TaskConfig], names: list[str] | None, num_fewshot: int | None = None
) -> list[TaskConfig]:
    """Keep the tasks whose label (or ``label/N-shot`` name) is in ``names``.

    With ``num_fewshot`` set, each kept label is evaluated once at that few-shot count.
    """
    if names:
        known = {t.label for t in tasks} | {t.name for t in tasks}
        unknown = [n for n in names if n not in known]
        if unknown:
            import difflib

            hints: list[str] = []
            for n in unknown:
                close = difflib.get_close_matches(n, sorted(known), n=1)
                hints.append(f"'{n}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise FoundryError(
                f"unknown task {', '.join(hints)}. Known tasks: {', '.join(sorted({t.label for t in tasks}))}."
            )
        tasks = [t for t in tasks if t.label in names or t.name in names]
    if num_fewshot is not None:
        by_label: dict[str, TaskConfig] = {}
        for t in tasks:
            by_label.setdefault(t.label, t.model_copy(update={"num_fewshot": num_fewshot}))
        tasks = list(by_label.values())
    return tasks


def load_gauntlet(source: str | Path | dict[str, Any]) -> GauntletConfig:
    """Read ``eval_gauntlet`` from a shipped name, YAML path or dict."""
    data = _as_dict(source)
    body = data.get("eval_gauntlet", data)
    return parse_model(GauntletConfig, body, "gauntlet config", prefix="eval_gauntlet")
