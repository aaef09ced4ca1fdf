"""Eval results and their reports: terminal table, JSON, Markdown and an optional PNG chart."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from foundry_eval.errors import FoundryError
from foundry_eval.gauntlet import GauntletResult

__all__ = ["EvalResults", "TaskResult", "refuse_existing", "text_table", "write_atomic"]


class _Axes(Protocol):
    """The matplotlib Axes methods the PNG chart uses."""

    def barh(self, y: list[str], width: list[float]) -> object: ...
    def set_xlim(self, left: float, right: float) -> object: ...
    def set_xlabel(self, xlabel: str) -> object: ...
    def invert_yaxis(self) -> None: ...


class _Figure(Protocol):
    """The matplotlib Figure methods the PNG chart uses."""

    def tight_layout(self) -> None: ...
    def savefig(self, fname: Path, *, dpi: int) -> None: ...


@dataclass
class TaskResult:
    name: str
    label: str
    num_fewshot: int
    task_type: str
    metrics: dict[str, float] = field(default_factory=dict[str, float])
    categories: dict[str, dict[str, float]] = field(default_factory=dict[str, dict[str, float]])
    num_examples: int = 0
    seconds: float = 0.0
    missing: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


@dataclass
class EvalResults:
    """Results of one eval run. ``to_dict()`` gives ``{task_name: {metric: value}}`` (+ gauntlet)."""

    tasks: dict[str, TaskResult] = field(default_factory=dict[str, TaskResult])
    gauntlet: GauntletResult | None = None
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            n: dict(t.metrics) for n, t in self.tasks.items() if t.missing is None
        }
        if self.gauntlet is not None:
            out["gauntlet"] = self.gauntlet.to_dict()
        return out

    def to_json_dict(self, log_samples: bool = False) -> dict[str, Any]:
        tasks: dict[str, dict[str, Any]] = {}
        for n, t in self.tasks.items():
            entry: dict[str, Any] = {
                "label": t.label,
                "num_fewshot": t.num_fewshot,
                "task_type": t.task_type,
                "metrics": t.metrics,
                "num_examples": t.num_examples,
                "seconds": round(t.seconds, 3),
            }
            if t.categories:
                entry["categories"] = t.categories
            if t.missing:
                entry["missing"] = t.missing
            if log_samples:
                entry["samples"] = t.examples
            tasks[n] = entry
        out: dict[str, Any] = {"model": self.model, "tasks": tasks}
        if self.gauntlet is not None:
            out["gauntlet"] = {
                "averages": self.gauntlet.averages,
                "categories": self.gauntlet.categories,
                "benchmark_scores": self.gauntlet.benchmark_scores,
                "missing": self.gauntlet.missing,
                "partial": self.gauntlet.partial,
            }
        return out

    # -- rendering -------------------------------------------------------------------------
    def _rows(self) -> list[list[str]]:
        rows: list[list[str]] = []
        for n, t in self.tasks.items():
            if t.missing:
                rows.append([n, t.task_type, "-", "missing: " + t.missing])
                continue
            metrics = "  ".join(f"{k}={v:.4f}" for k, v in t.metrics.items())
            rows.append([n, t.task_type, str(t.num_examples), metrics])
        return rows

    def _gauntlet_rows(self) -> list[list[str]]:
        """One row per average and category; one computed from only some benchmarks is labelled
        partial (with what it lacks), one with no result at all is n/a."""
        if self.gauntlet is None:
            return []
        g = self.gauntlet
        rows: list[list[str]] = []
        for name, v in {**g.averages, **g.categories}.items():
            if name in g.averages:  # the categories lacking some benchmark
                missing = [c for c in g.average_parts.get(name, []) if c in g.missing]
                what = "incomplete"
            else:
                missing, what = g.missing.get(name, []), "without results"
            note = ""
            if missing:
                more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
                note = f"{len(missing)} {what}: " + ", ".join(missing[:3]) + more
            score = "n/a" if v is None else f"{v:.4f}"
            if name in g.partial:
                score = f"{score} (partial)"
            rows.append([name, score, note])
        return rows

    def to_table(self) -> str:
        header = ["task", "type", "n", "metrics"]
        lines = text_table(header, self._rows())
        g = self._gauntlet_rows()
        if g:
            lines += ["", *text_table(["gauntlet", "score", "note"], g)]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [
            f"# Eval results: {self.model}",
            "",
            *_md_table(["task", "type", "n", "metrics"], self._rows()),
        ]
        g = self._gauntlet_rows()
        if g:
            out += ["", "## Gauntlet", "", *_md_table(["name", "score", "note"], g)]
        return "\n".join(out) + "\n"

    def write(
        self,
        *,
        json_path: str | None = None,
        markdown: str | None = None,
        png: str | None = None,
        log_samples: bool = False,
        overwrite: bool = False,
    ) -> list[Path]:
        """Write the requested reports atomically; refuses existing files unless ``overwrite``."""
        refuse_existing([json_path, markdown, png], overwrite)
        written: list[Path] = []
        if json_path:
            text = json.dumps(self.to_json_dict(log_samples), indent=2, default=_jsonable)
            written.append(write_atomic(Path(json_path), text.encode()))
        if markdown:
            written.append(write_atomic(Path(markdown), self.to_markdown().encode()))
        if png:
            written.append(self._write_png(Path(png)))
        return written

    def _write_png(self, path: Path) -> Path:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise FoundryError(
                "a PNG chart needs matplotlib. Install it with pip install 'foundry-eval[plot]'."
            ) from None
        names: list[str] = []
        values: list[float] = []
        for n, t in self.tasks.items():
            if t.missing is None and t.metrics:
                names.append(n)
                values.append(next(iter(t.metrics.values())))
        figure, axes = plt.subplots(figsize=(8, 0.35 * len(names) + 1.5))
        # matplotlib leaves its **kwargs unannotated; these views type the calls made here.
        fig, ax = cast(_Figure, figure), cast(_Axes, axes)
        ax.barh(names, values)
        ax.set_xlim(0, 1)
        ax.set_xlabel("score (first metric of each task)")
        ax.invert_yaxis()
        fig.tight_layout()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100)
        plt.close(figure)
        os.replace(tmp, path)
        return path


def refuse_existing(paths: list[str | None], overwrite: bool) -> None:
    """Raise FoundryError if one of ``paths`` exists (unless ``overwrite``); None entries are skipped."""
    for p in paths:
        if p and Path(p).exists() and not overwrite:
            raise FoundryError(f"{p} already exists. Pass --overwrite or choose another path.")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, set):
        return sorted(cast("set[Any]", obj))
    return str(obj)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write to ``<path>.tmp-<pid>`` and rename into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [
        fmt.format(*header),
        fmt.format(*["-" * w for w in widths]),
        *(fmt.format(*r) for r in rows),
    ]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in esc),
    ]
