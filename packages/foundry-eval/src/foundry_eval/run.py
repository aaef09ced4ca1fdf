"""Running a whole eval from an EvalConfig: load, pick GPUs, score, aggregate, report."""

from __future__ import annotations

from pathlib import Path

import torch

from foundry_eval.config import EvalConfig, TaskConfig
from foundry_eval.errors import FoundryError
from foundry_eval.evaluate import evaluate, gauntlet_for, missing_result
from foundry_eval.gauntlet import check_gauntlet_metrics
from foundry_eval.model_loading import (
    check_model_sources,
    load_model,
    load_tokenizer,
    resolve_device,
)
from foundry_eval.results import EvalResults, TaskResult, refuse_existing
from foundry_eval.task_data import default_cache_dir, ensure_task_files
from foundry_eval.tasks import load_gauntlet, load_tasks, select_tasks

__all__ = ["run_eval"]


def _gpu_count(cfg: EvalConfig) -> int:
    if cfg.model.device_map or not torch.cuda.is_available():
        return 1
    if cfg.device not in ("auto", "cuda"):
        return 1
    available = torch.cuda.device_count()
    return max(1, min(cfg.num_gpus or available, available))


def _data_root(cfg: EvalConfig) -> str:
    """The configured data root, or the download cache when none is configured."""
    if cfg.data_root is None:
        return str(default_cache_dir())
    if "://" not in cfg.data_root and not Path(cfg.data_root).is_dir():
        raise FoundryError(
            f"data root {cfg.data_root} is not a directory. Pass --data-root with the folder "
            "holding the task files (e.g. world_knowledge/arc_easy.jsonl), or leave it out to "
            "download them (foundry-eval fetch-tasks)."
        )
    return cfg.data_root


def _split_runnable(
    cfg: EvalConfig, tasks: list[TaskConfig], results: EvalResults
) -> list[TaskConfig]:
    """The tasks to score; the others get a 'missing' result saying why."""
    runnable: list[TaskConfig] = []
    for t in tasks:
        if t.icl_task_type == "code_evaluation" and not cfg.allow_code_execution:
            if cfg.task_names and (t.label in cfg.task_names or t.name in cfg.task_names):
                raise FoundryError(
                    f"task {t.name} executes model-generated code. Add --allow-code-execution to run "
                    "it in the sandbox (no network, CPU/memory/time limits)."
                )
            results.tasks[t.name] = missing_result(t, "skipped: needs --allow-code-execution")
            continue
        if cfg.data_root is None:
            ensure_task_files([t], _data_root(cfg), progress=cfg.progress)
        if not t.is_available():
            results.tasks[t.name] = missing_result(t, f"file not found: {t.data_path}")
        else:
            runnable.append(t)
    return runnable


def _score(cfg: EvalConfig, runnable: list[TaskConfig]) -> dict[str, TaskResult]:
    """Results of ``runnable``: one process per GPU, or one model on one device (or sharded)."""
    world = _gpu_count(cfg)
    if world > 1:
        from foundry_eval.parallel import score_on_all_gpus

        return score_on_all_gpus(cfg, runnable, world)
    device = resolve_device(cfg.device)
    model = load_model(cfg.model, device)
    tokenizer = load_tokenizer(cfg.model)
    scored = evaluate(
        model,
        tokenizer,
        runnable,
        batch_size=cfg.batch_size,
        device=None if cfg.model.device_map else device,
        progress=cfg.progress,
        max_seq_len=cfg.max_seq_len,
        share_prefix=cfg.share_prefix,
        allow_code_execution=cfg.allow_code_execution,
        seed=cfg.seed,
    )
    return scored.tasks


def run_eval(cfg: EvalConfig) -> EvalResults:
    """Evaluate the configured model on the configured tasks (and gauntlet).

    Existing output files are refused (unless ``output.overwrite``) before any work; with no
    ``data_root`` the task files are downloaded into the cache first (see foundry_eval.task_data).
    """
    out = cfg.output
    refuse_existing([out.json_path, out.markdown, out.png], out.overwrite)
    check_model_sources(cfg.model)
    root = _data_root(cfg)
    tasks = select_tasks(load_tasks(cfg.tasks, root), cfg.task_names, cfg.num_fewshot)
    if cfg.limit is not None:
        tasks = [t.model_copy(update={"limit": cfg.limit}) for t in tasks]
    if not tasks:
        raise FoundryError(
            "the config selects no task to run (every task expanded to nothing: check "
            "`num_fewshot`, which must list at least one few-shot count, and `task_names`)."
        )
    results = EvalResults(model=cfg.model.path)
    runnable = _split_runnable(cfg, tasks, results)
    if not runnable:
        raise FoundryError(
            "none of the selected tasks has a data file under "
            f"{root}. Check --data-root (expected e.g. {tasks[0].data_path})."
        )
    gauntlet = load_gauntlet(cfg.gauntlet) if cfg.gauntlet else None
    if gauntlet is not None:
        check_gauntlet_metrics(gauntlet, runnable)
    results.tasks.update(_score(cfg, runnable))
    order = [t.name for t in tasks]
    results.tasks = {n: results.tasks[n] for n in order}
    if gauntlet is not None:
        results.gauntlet = gauntlet_for(results, gauntlet)
    return results
