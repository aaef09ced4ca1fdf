"""Scoring spread over every GPU of a machine: one process per GPU, examples sharded round-robin.

No launcher is needed: ``torch.multiprocessing.spawn`` starts one worker per GPU; each loads the
model on its own GPU, scores examples ``i % world == rank`` of every task and writes its
per-example records to a temp directory; the parent merges them and computes the metrics, so the
numbers are the same as a single-process run. That holds for sampled code generations too: each
sample's randomness is keyed by the seed, the example and the sample number
(foundry_eval.generation.sample_keys), not by the batch or the rank that generates it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from foundry_eval.config import EvalConfig, TaskConfig
from foundry_eval.errors import FoundryError
from foundry_eval.evaluate import EvalOptions, _model_max_len, _pad_id, finish_task, score_task
from foundry_eval.results import TaskResult

__all__ = ["score_on_all_gpus"]


def _worker(rank: int, world: int, cfg_json: str, tasks_json: str, out_dir: str) -> None:
    try:
        _score_shard(rank, world, cfg_json, tasks_json, out_dir)
    except FoundryError as exc:  # reported by the parent as one clean error
        (Path(out_dir) / f"rank{rank}.error").write_text(str(exc))


def _score_shard(rank: int, world: int, cfg_json: str, tasks_json: str, out_dir: str) -> None:
    from foundry_eval.model_loading import load_model, load_tokenizer

    cfg = EvalConfig.model_validate_json(cfg_json)
    tasks = [TaskConfig.model_validate(t) for t in json.loads(tasks_json)]
    device = torch.device(f"cuda:{rank}")
    torch.cuda.set_device(device)
    model = load_model(cfg.model, device)
    tokenizer = load_tokenizer(cfg.model)
    opts = EvalOptions(
        batch_size=cfg.batch_size,
        max_seq_len=cfg.max_seq_len or _model_max_len(model),
        pad_id=_pad_id(tokenizer),
        device=device,
        progress=cfg.progress and rank == 0,
        share_prefix=cfg.share_prefix,
        allow_code_execution=cfg.allow_code_execution,
        limit=cfg.limit,
        seed=cfg.seed,
    )
    out: dict[str, Any] = {}
    for task in tasks:
        start = time.perf_counter()
        records = score_task(model, tokenizer, task, opts, shard=(rank, world))
        out[task.name] = {"records": records, "seconds": time.perf_counter() - start}
    tmp = Path(out_dir) / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(out))
    tmp.rename(Path(out_dir) / f"rank{rank}.json")


def score_on_all_gpus(
    cfg: EvalConfig, tasks: list[TaskConfig], world: int
) -> dict[str, TaskResult]:
    """Score ``tasks`` with ``world`` GPU processes and merge their records."""
    from torch.multiprocessing.spawn import spawn

    with tempfile.TemporaryDirectory(prefix="foundry-eval-gpus-") as out_dir:
        spawn(
            _worker,
            args=(
                world,
                cfg.model_dump_json(by_alias=True),
                json.dumps([t.model_dump() for t in tasks]),
                out_dir,
            ),
            nprocs=world,
            join=True,
        )
        errors = sorted(Path(out_dir).glob("rank*.error"))
        if errors:
            raise FoundryError(errors[0].read_text())
        parts = [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(world)]
    results = {}
    for task in tasks:
        records = [rec for part in parts for rec in part[task.name]["records"]]
        seconds = max(part[task.name]["seconds"] for part in parts)
        results[task.name] = finish_task(task, records, seconds)
    return results
