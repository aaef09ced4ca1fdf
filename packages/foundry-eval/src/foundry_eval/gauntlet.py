"""Gauntlet aggregation: random-baseline subtraction, rescaling, category and core averages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from foundry_eval.config import GauntletBenchmark, GauntletConfig, TaskConfig
from foundry_eval.errors import FoundryError
from foundry_eval.metrics import metric_names

__all__ = ["GauntletResult", "check_gauntlet_metrics", "compute_gauntlet"]

_PRIMARY = {
    "language_modeling": "acc",
    "generation_task_with_answers": "exact_match",
    "code_evaluation": "pass@1",
}


def _pick_metric(
    bench: GauntletBenchmark, key: str, kind: str, mc_metric: str, available: list[str]
) -> str:
    """The metric that scores benchmark ``key`` (a ``kind`` task reporting ``available``).

    An explicit ``metric`` must be one the task reports. Otherwise: pass@1 for code (its
    smallest k when pass@1 is not computed), exact match for generation, ``acc`` for language
    modelling, the gauntlet's ``mc_metric`` for multiple choice and schema tasks, except that
    schema tasks have no ``acc_norm`` (lm-eval reports ``acc`` for them) and use ``acc``.
    """
    if bench.metric is not None:
        metric = bench.metric
    elif kind == "code_evaluation":
        ks = sorted(int(m.split("@", 1)[1]) for m in available if m.startswith("pass@"))
        metric = "pass@1" if 1 in ks or not ks else f"pass@{ks[0]}"
    elif kind == "schema" and mc_metric == "acc_norm":
        metric = "acc"
    else:
        metric = _PRIMARY.get(kind, mc_metric)
    if metric not in available:
        raise FoundryError(
            f"gauntlet benchmark '{key}' is scored by '{metric}', which its {kind} task does "
            f"not report (it reports {', '.join(available)}). Set the benchmark's `metric` to "
            "one of those in the gauntlet config (or the task's pass_at_k for pass@k)."
        )
    return metric


def check_gauntlet_metrics(gauntlet: GauntletConfig, tasks: list[TaskConfig]) -> None:
    """Before any scoring: every benchmark of ``gauntlet`` that one of ``tasks`` runs names a
    metric the task will report (a typo would otherwise surface after the whole run)."""
    by_name = {t.name: t for t in tasks}
    for cat in gauntlet.categories:
        for bench in cat.benchmarks:
            key = f"{bench.name}/{bench.num_fewshot}-shot"
            task = by_name.get(key)
            if task is not None:
                available = metric_names(task.icl_task_type, task.pass_at_k)
                _pick_metric(bench, key, task.icl_task_type, gauntlet.mc_metric, available)


@dataclass
class GauntletResult:
    """Category scores and averages.

    ``partial`` names the categories and averages computed from only some of their benchmarks
    (a category with a benchmark in ``missing``; an average with a partial or empty category):
    their values are not comparable with a full run and reports label them as partial.
    """

    categories: dict[str, float | None] = field(default_factory=dict)
    averages: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    benchmark_scores: dict[str, float] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)
    average_parts: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float | None]:
        return {**self.averages, **self.categories}


def compute_gauntlet(
    gauntlet: GauntletConfig,
    task_metrics: dict[str, dict[str, float]],
    task_types: dict[str, str],
    task_sizes: dict[str, int],
) -> GauntletResult:
    """Combine task metrics (keyed ``label/N-shot``) into category scores and averages.

    A benchmark's score is its accuracy, minus its random baseline and divided by
    ``1 - baseline`` when configured. Benchmarks with no result are listed in ``missing`` and left
    out of their category's mean; a category with no result at all is None and left out of averages.
    """
    result = GauntletResult()
    for cat in gauntlet.categories:
        scores: list[float] = []
        weights: list[float] = []
        for bench in cat.benchmarks:
            key = f"{bench.name}/{bench.num_fewshot}-shot"
            metrics = task_metrics.get(key)
            if not metrics:
                result.missing.setdefault(cat.name, []).append(key)
                continue
            kind = task_types[key]
            metric = _pick_metric(bench, key, kind, gauntlet.mc_metric, list(metrics))
            score = metrics[metric]
            if gauntlet.subtract_random_baseline:
                score -= bench.random_baseline
                if gauntlet.rescale_accuracy:
                    score /= 1.0 - bench.random_baseline
            result.benchmark_scores[key] = score
            scores.append(score)
            n = task_sizes.get(key, 1)
            weights.append(
                {"EQUAL": 1.0, "SAMPLE_SZ": float(n), "LOG_SAMPLE_SZ": math.log(max(n, 2))}[
                    gauntlet.weighting
                ]
            )
        result.categories[cat.name] = (
            sum(s * w for s, w in zip(scores, weights, strict=True)) / sum(weights)
            if scores
            else None
        )
    result.partial = [c for c in result.missing if result.categories.get(c) is not None]
    for name, cats in gauntlet.averages.items():
        result.average_parts[name] = list(cats)
        vals = [result.categories[c] for c in cats if result.categories.get(c) is not None]
        result.averages[name] = sum(v for v in vals if v is not None) / len(vals) if vals else None
        incomplete = any(c in result.missing for c in cats)
        if vals and incomplete:
            result.partial.append(name)
    return result
