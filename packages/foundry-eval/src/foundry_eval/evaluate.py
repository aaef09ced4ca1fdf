"""The Python API: ``evaluate(model, tokenizer, tasks)`` scores any HF-like causal LM in memory."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from foundry_eval.config import GauntletConfig, TaskConfig
from foundry_eval.data import read_task_rows
from foundry_eval.errors import FoundryError
from foundry_eval.gauntlet import GauntletResult, check_gauntlet_metrics, compute_gauntlet
from foundry_eval.generation import generate_texts
from foundry_eval.metrics import aggregate, generation_record, loglikelihood_record
from foundry_eval.prompts import (
    GenerationRequest,
    Tokenizer,
    build_generation_requests,
    build_loglikelihood_questions,
)
from foundry_eval.results import EvalResults, TaskResult
from foundry_eval.sandbox import run_python_tests
from foundry_eval.scoring import ScoreGroup, input_device, score_groups

__all__ = ["EvalOptions", "evaluate", "finish_task", "score_task"]

_LOGLIKELIHOOD_TYPES = ("language_modeling", "multiple_choice", "schema")


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 16
    max_seq_len: int = 2048
    pad_id: int = 0
    device: torch.device | None = None
    progress: bool = True
    share_prefix: bool = True
    allow_code_execution: bool = False
    limit: int | None = None
    seed: int = 1234


def _model_max_len(model: Any) -> int:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _pad_id(tokenizer: Tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def _progress(
    total: int, desc: str, enabled: bool
) -> tuple[Callable[[int], object], Callable[[], None]]:
    bar = tqdm(
        total=total, desc=desc, unit="ex", disable=not enabled, leave=False, dynamic_ncols=True
    )
    return bar.update, bar.close


def _shard(count: int, shard: tuple[int, int] | None) -> list[int]:
    if shard is None:
        return list(range(count))
    rank, world = shard
    return [i for i in range(count) if i % world == rank]


def score_task(
    model: Any,
    tokenizer: Tokenizer,
    task: TaskConfig,
    opts: EvalOptions,
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Per-example records of one task (for this shard of examples when ``shard`` is given)."""
    rows = read_task_rows(task.data_path, task.icl_task_type)
    limit = min(x for x in (task.limit, opts.limit, len(rows)) if x is not None)
    wanted = _shard(limit, shard)
    if task.icl_task_type in _LOGLIKELIHOOD_TYPES:
        return _score_loglikelihood(model, tokenizer, task, rows, limit, wanted, opts)
    return _score_generation(model, tokenizer, task, rows, limit, wanted, opts)


def _score_loglikelihood(
    model: Any,
    tokenizer: Tokenizer,
    task: TaskConfig,
    rows: list[dict[str, Any]],
    limit: int,
    wanted: list[int],
    opts: EvalOptions,
) -> list[dict[str, Any]]:
    questions = build_loglikelihood_questions(task, rows, tokenizer, limit)
    questions = [questions[i] for i in wanted]
    groups: list[ScoreGroup] = []
    spans: list[tuple[int, int]] = []
    for q in questions:
        start = len(groups)
        if len(q.contexts) == 1:
            groups.append(ScoreGroup(q.contexts[0], q.continuations))
        else:
            groups.append(_common_prefix_group(q.contexts, q.continuations[0]))
        spans.append((start, len(groups)))
    update, close = _progress(len(groups), task.name, opts.progress)
    try:
        scored = score_groups(
            model,
            groups,
            batch_size=opts.batch_size,
            max_seq_len=opts.max_seq_len,
            pad_id=opts.pad_id,
            device=opts.device,
            share_prefix=opts.share_prefix,
            on_progress=update,
        )
    finally:
        close()
    records: list[dict[str, Any]] = []
    for q, (a, b) in zip(questions, spans, strict=True):  # spans: one group per question
        flat = [s for g in scored[a:b] for s in g]
        records.append(loglikelihood_record(task.icl_task_type, q, flat))
    return records


def _common_prefix_group(contexts: list[list[int]], continuation: list[int]) -> ScoreGroup:
    """Schema options as one group: their longest common token prefix, then each option's tail.

    The scored tokens (the shared continuation) always stay in the tails.
    """
    seqs = [c + continuation for c in contexts]
    n = 0
    shortest = min(len(c) for c in contexts)
    while n < shortest and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return ScoreGroup(seqs[0][:n], [s[n:] for s in seqs], [len(continuation)] * len(seqs))


def _score_generation(
    model: Any,
    tokenizer: Tokenizer,
    task: TaskConfig,
    rows: list[dict[str, Any]],
    limit: int,
    wanted: list[int],
    opts: EvalOptions,
) -> list[dict[str, Any]]:
    code = task.icl_task_type == "code_evaluation"
    if code and not opts.allow_code_execution:
        raise FoundryError(
            f"task {task.name} runs model-generated code. Pass --allow-code-execution "
            "(allow_code_execution: true) to run it in the sandbox, or drop the task."
        )
    if tokenizer.eos_token_id is None:
        raise FoundryError(
            f"task {task.name} generates text and needs a tokenizer with an EOS token. "
            "Set eos_token in the tokenizer config."
        )
    requests, max_new = build_generation_requests(task, rows, tokenizer, limit)
    requests = [requests[i] for i in wanted]
    update, close = _progress(len(requests), task.name, opts.progress)
    try:
        outputs = generate_texts(
            model,
            tokenizer,
            requests,
            batch_size=opts.batch_size,
            max_new_tokens=max_new,
            max_seq_len=opts.max_seq_len,
            pad_id=opts.pad_id,
            device=opts.device or input_device(model, None),
            stop_strings=task.early_stopping_criteria,
            num_samples=task.generations_per_sample if code else 1,
            temperature=task.temperature if code else 0.0,
            seed=opts.seed,
            on_progress=update,
        )
    finally:
        close()
    if code:
        return _run_code(requests, outputs)
    return [
        generation_record(
            r.index,
            out,
            r.answers,
            cot_delimiter=task.cot_delimiter,
            stop_strings=task.early_stopping_criteria,
            normalize=task.do_normalization,
            category=r.category,
        )
        for r, out in zip(requests, outputs, strict=True)
    ]


def _passes(job: tuple[int, str, dict[str, Any]]) -> bool:
    """Whether one program passes every test case of its row (rows without tests fail)."""
    _, code, row = job
    inputs: list[str] = list(row.get("test_inputs") or [])
    outputs: list[str] = list(row.get("test_outputs") or [])
    return bool(inputs) and all(run_python_tests(code, str(row["entry_point"]), inputs, outputs))


def _run_code(requests: list[GenerationRequest], outputs: list[list[str]]) -> list[dict[str, Any]]:
    """Execute each generation against the row's test cases in the sandbox (4 at a time)."""
    jobs: list[tuple[int, str, dict[str, Any]]] = []
    for r, samples in zip(requests, outputs, strict=True):
        row = r.row
        if row.get("language", "python") != "python":
            raise FoundryError(
                f"code task row {r.index} is in {row.get('language')!r}; foundry-eval executes "
                "python only. Use the python HumanEval files."
            )
        for s in samples:
            body = re.split(r"\n[A-Za-z0-9#`]", s)[0]  # keep the function body only
            jobs.append((r.index, str(row["prompt"]) + body, row))
    with ThreadPoolExecutor(max_workers=4) as pool:
        passed = list(pool.map(_passes, jobs))
    records: dict[int, dict[str, Any]] = {}
    for (idx, code, _), ok in zip(jobs, passed, strict=True):
        rec = records.setdefault(
            idx, {"index": idx, "num_samples": 0, "num_passed": 0, "programs": []}
        )
        rec["num_samples"] += 1
        rec["num_passed"] += int(ok)
        rec["programs"].append(code)
    return [records[r.index] for r in requests]


def finish_task(task: TaskConfig, records: list[dict[str, Any]], seconds: float) -> TaskResult:
    """Aggregate per-example records (from one or many processes) into a TaskResult."""
    records = sorted(records, key=lambda r: r["index"])
    metrics, cats = aggregate(task.icl_task_type, records, task.pass_at_k)
    return TaskResult(
        name=task.name,
        label=task.label,
        num_fewshot=task.num_fewshot,
        task_type=task.icl_task_type,
        metrics=metrics,
        categories=cats,
        num_examples=len(records),
        seconds=seconds,
        examples=records,
    )


def missing_result(task: TaskConfig, why: str) -> TaskResult:
    return TaskResult(task.name, task.label, task.num_fewshot, task.icl_task_type, missing=why)


def evaluate(
    model: Any,
    tokenizer: Tokenizer,
    tasks: list[TaskConfig],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
    gauntlet: GauntletConfig | None = None,
    max_seq_len: int | None = None,
    share_prefix: bool = True,
    allow_code_execution: bool = False,
    limit: int | None = None,
    seed: int = 1234,
) -> EvalResults:
    """Score ``model`` on ``tasks`` and return the results (plus gauntlet averages when given).

    ``model`` is anything that behaves like a Hugging Face causal LM: ``model(input_ids=...,
    attention_mask=...)`` returns an object with ``.logits``; ``generate`` is needed for
    generation and code tasks. ``device`` is where inputs go (default: the model's first
    parameter's device). Tasks whose data file is missing are reported as missing, and so are
    code tasks unless ``allow_code_execution`` is set.
    """
    if not tasks:
        raise FoundryError("no tasks to evaluate. Name at least one task.")
    if gauntlet is not None:
        check_gauntlet_metrics(gauntlet, tasks)
    opts = EvalOptions(
        batch_size=batch_size,
        max_seq_len=max_seq_len or _model_max_len(model),
        pad_id=_pad_id(tokenizer),
        device=torch.device(device) if device is not None else None,
        progress=progress,
        share_prefix=share_prefix,
        allow_code_execution=allow_code_execution,
        limit=limit,
        seed=seed,
    )
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    results = EvalResults(model=type(model).__name__)
    try:
        for task in tasks:
            if not task.is_available():
                results.tasks[task.name] = missing_result(task, f"file not found: {task.data_path}")
                continue
            if task.icl_task_type == "code_evaluation" and not allow_code_execution:
                why = "skipped: runs generated code; pass allow_code_execution=True"
                results.tasks[task.name] = missing_result(task, why)
                continue
            start = time.perf_counter()
            records = score_task(model, tokenizer, task, opts)
            results.tasks[task.name] = finish_task(task, records, time.perf_counter() - start)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if gauntlet is not None:
        results.gauntlet = gauntlet_for(results, gauntlet)
    return results


def gauntlet_for(results: EvalResults, gauntlet: GauntletConfig) -> GauntletResult:
    """Gauntlet aggregation over the tasks of ``results`` that were scored."""
    done = {n: t for n, t in results.tasks.items() if t.missing is None}
    return compute_gauntlet(
        gauntlet,
        {n: t.metrics for n, t in done.items()},
        {n: t.task_type for n, t in done.items()},
        {n: t.num_examples for n, t in done.items()},
    )
