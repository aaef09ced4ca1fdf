"""GPU scoring: one process per GPU and a model sharded over GPUs give the single-device results."""

from __future__ import annotations

import pytest
import torch
from foundry_eval.config import EvalConfig
from foundry_eval.run import run_eval

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _cfg(model_dir, data_root, **kw) -> EvalConfig:
    return EvalConfig.model_validate(
        {
            "model": {"path": str(model_dir), "dtype": "float32", **kw.pop("model", {})},
            "data_root": str(data_root),
            "task_names": ["piqa", "arc_easy", "winograd", "lambada_openai"],
            "limit": 40,
            "gauntlet": None,
            "progress": False,
            **kw,
        }
    )


def _preds(results):
    return {
        name: [(r["index"], r.get("pred"), r["correct"]) for r in t.examples]
        for name, t in results.tasks.items()
    }


def test_one_gpu_matches_cpu(tiny_model_dir, data_root):
    cpu = run_eval(_cfg(tiny_model_dir, data_root, device="cpu"))
    threads = torch.get_num_threads()
    gpu = run_eval(_cfg(tiny_model_dir, data_root, device="cuda:0"))
    assert _preds(gpu) == _preds(cpu)
    assert torch.get_num_threads() == threads  # the one-thread cap of GPU scoring is undone


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more GPUs")
def test_all_gpus_match_one_gpu(tiny_model_dir, data_root):
    one = run_eval(_cfg(tiny_model_dir, data_root, device="cuda", num_gpus=1))
    every = run_eval(_cfg(tiny_model_dir, data_root, device="auto"))
    assert _preds(every) == _preds(one)
    assert all(t.num_examples == 40 for t in every.tasks.values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more GPUs")
def test_sharded_model_matches_one_gpu(tiny_model_dir, data_root):
    pytest.importorskip("accelerate")
    one = run_eval(_cfg(tiny_model_dir, data_root, device="cuda", num_gpus=1))
    sharded = run_eval(_cfg(tiny_model_dir, data_root, model={"device_map": "balanced"}))
    assert _preds(sharded) == _preds(one)
