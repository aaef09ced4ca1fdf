"""Per-example predictions and task metrics for every task type."""

from __future__ import annotations

import re
import string
from collections import defaultdict
from typing import Any

import numpy as np

from foundry_eval.prompts import LoglikelihoodQuestion
from foundry_eval.scoring import ContinuationScore

__all__ = [
    "aggregate",
    "metric_names",
    "generation_record",
    "loglikelihood_record",
    "normalize_answer",
    "pass_at_k",
]

_PUNCT = set(string.punctuation + "‘’´`")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (TriviaQA's normalisation)."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split()).strip()


def _argmax(values: list[float]) -> int:
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def loglikelihood_record(
    task_type: str, question: LoglikelihoodQuestion, scores: list[ContinuationScore]
) -> dict[str, Any]:
    """One example's predictions: ``acc`` (summed log-likelihood), ``acc_norm`` (per character,
    as lm-eval), ``acc_foundry`` (lowest mean per-token loss, as llm-foundry), greedy match for LM."""
    rec: dict[str, Any] = {"index": question.index, "gold": question.gold}
    if question.category is not None:
        rec["category"] = question.category
    if task_type == "language_modeling":
        s = scores[0]
        rec.update(logprob=s.logprob, correct={"acc": s.greedy})
        return rec
    lls = [s.logprob for s in scores]
    pred = _argmax(lls)
    pred_foundry = int(np.argmin(np.asarray([s.mean_loss for s in scores])))
    rec["logprobs"] = lls
    rec["pred"] = {"acc": pred, "acc_foundry": pred_foundry}
    if task_type == "multiple_choice":
        lengths = [float(len(t)) for t in question.choice_texts]
        rec["pred"]["acc_norm"] = _argmax([ll / n for ll, n in zip(lls, lengths, strict=True)])
    rec["correct"] = {k: v == question.gold for k, v in rec["pred"].items()}
    return rec


def generation_record(
    index: int,
    outputs: list[str],
    answers: list[str],
    *,
    cot_delimiter: str,
    stop_strings: list[str] | None,
    normalize: bool,
    category: str | None,
) -> dict[str, Any]:
    """Exact match: the cleaned generation starts with one of the (cleaned) answers or aliases."""
    text = outputs[0]
    if stop_strings:
        text = re.split("|".join(re.escape(s) for s in stop_strings), text)[0]
    if cot_delimiter:
        text = text.split(cot_delimiter)[-1]
    if normalize:
        cleaned, golds = normalize_answer(text), {normalize_answer(a) for a in answers}
    else:
        cleaned, golds = text.strip(), {a.strip() for a in answers}
    rec: dict[str, Any] = {
        "index": index,
        "generation": outputs[0],
        "answer": text,
        "correct": {"exact_match": any(cleaned.startswith(g) for g in golds)},
    }
    if category is not None:
        rec["category"] = category
    return rec


def metric_names(task_type: str, ks: list[int] | None = None) -> list[str]:
    """The metrics a task of ``task_type`` reports (``ks``: a code task's pass@k values)."""
    if task_type == "language_modeling":
        return ["acc"]
    if task_type == "multiple_choice":
        return ["acc", "acc_foundry", "acc_norm"]
    if task_type == "schema":
        return ["acc", "acc_foundry"]
    if task_type == "generation_task_with_answers":
        return ["exact_match"]
    return [f"pass@{k}" for k in ks or [1]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (HumanEval's estimator); needs n >= k."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _means(records: list[dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for rec in records:
        for key, ok in rec["correct"].items():
            sums[key] += float(ok)
    return {k: v / len(records) for k, v in sums.items()}


def aggregate(
    task_type: str, records: list[dict[str, Any]], ks: list[int] | None = None
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Task metrics and per-category metrics from per-example records."""
    if not records:
        return {}, {}
    if task_type == "code_evaluation":
        metrics = {}
        for k in ks or [1]:
            metrics[f"pass@{k}"] = float(
                np.mean([pass_at_k(r["num_samples"], r["num_passed"], k) for r in records])
            )
        return metrics, {}
    metrics = _means(records)
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if "category" in rec:
            by_cat[str(rec["category"])].append(rec)
    return metrics, {cat: _means(recs) for cat, recs in sorted(by_cat.items())}
