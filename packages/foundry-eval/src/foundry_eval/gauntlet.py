"""Gauntlet aggregation: random-baseline subtraction, rescaling, category and core averages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from foundry_eval.config import GauntletConfig

__all__ = ["GauntletResult", "compute_gauntlet"]

_PRIMARY = {
    "language_modeling": "acc",
    "generation_task_with_answers": "exact_match",
    "code_evaluation": "pass@1",
}


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
            metric = bench.metric or _PRIMARY.get(kind, gauntlet.mc_metric)
            if metric not in metrics:
                metric = next(iter(metrics))
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
