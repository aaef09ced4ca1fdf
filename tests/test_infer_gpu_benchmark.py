"""benchmarks/infer_gpu.py's CPU smoke run: tiny models, every section, a JSON line each."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "infer_gpu.py"


def test_infer_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("infer_gpu", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--device", "cpu", "--tiny", "--out-dir", str(tmp_path / "out")]
    argv += ["--work-dir", str(tmp_path / "work"), "--new-tokens", "8", "--bench-tokens", "4"]
    argv += ["--batch-sizes", "1,2", "--agree-prompts", "2", "--agree-tokens", "6"]
    argv += ["--server-tokens", "4", "--server-requests", "1", "--server-compile-decode"]
    argv += ["--sections"]
    argv += ["batch1,batch-sizes,agreement,server"]
    assert module.main(argv) == 0
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    sections = {row["section"] for row in rows}
    assert {"batch1-mpt", "batch1-llama", "bench-mpt", "agreement-mpt", "server"} <= sections
    agreement = [r for r in rows if r["section"].startswith("agreement")]
    assert len(agreement) == 2
    for row in agreement:  # fp32 on CPU: the slot engine is the eager path's twin, and the truth's
        keys = ("top1_agreement", "ours_batch1_vs_eager", "ours_vs_fp32", "eager_vs_fp32",
                "ours_vs_eager_decode", "ours_batch1_vs_eager_decode")  # fmt: skip
        for key in (*keys, "eager_batched_vs_eager"):
            assert row[key] == 1.0, (key, row)
        assert row["eager_decode_vs_fp32"] == row["agreement_where_margin_gt_ulp"] == 1.0
        assert row["eager_margin_median"] > 0 and 0 < row["positions_margin_gt_ulp"] <= 1
    for row in (r for r in rows if r["section"].startswith("batch1-")):
        # transformers auto-compiles only on cuda/xpu: the CPU row must not claim a compiled rate
        assert row["hf_static_compiled_tokens_per_s"].startswith("not compiled"), row
        assert row["hf_static_compile"].startswith("none: no compilation seen on cpu")
        assert row["ours_overlap_tokens_per_s"] > 0  # greedy steps queued one ahead
    server = next(r for r in rows if r["section"] == "server")
    assert server["status_5xx"] == 0 and server["backend"] == "torch-static-cpu"
    compiled = next(r for r in rows if r["section"] == "server-compiled")
    assert compiled["status_5xx"] == 0 and compiled["backend"] == "torch-static-cpu-compiled"
    assert "| server | ratio |" in (tmp_path / "out" / "results.md").read_text()


def test_compiled_baseline_reports_compilation_only_when_it_happened(tmp_path):
    """The static-cache baseline's proof of compilation: with an explicit CompileConfig allowed on
    a CPU (backend "eager": dynamo only, seconds) it reports the graphs; by default, none."""
    sys.path.insert(0, str(BENCH.parent))
    import infer_gpu_models as M
    from transformers import CompileConfig

    llama = M.build_models(tmp_path, True, "cpu")["llama"]
    prompt = list(range(10, 30))
    rate, how = M.compiled_static_rate(llama, "cpu", prompt, 6, "float32")
    assert isinstance(rate, str) and rate.startswith("not compiled") and how.startswith("none")
    config = CompileConfig(backend="eager", mode=None)
    config._compile_all_devices = True
    rate, how = M.compiled_static_rate(llama, "cpu", prompt, 6, "float32", compile_config=config)
    assert isinstance(rate, float) and rate > 0
    assert how.startswith("explicit (transformers CompileConfig: mode=None"), how
    assert int(re.search(r"; (\d+) dynamo graphs", how).group(1)) >= 1, how
