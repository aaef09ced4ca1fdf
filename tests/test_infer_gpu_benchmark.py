"""benchmarks/infer_gpu.py's CPU smoke run: tiny models, every section, a JSON line each."""

from __future__ import annotations

import importlib.util
import json
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
    argv += ["--server-tokens", "4", "--server-requests", "1", "--sections"]
    argv += ["batch1,batch-sizes,agreement,server"]
    assert module.main(argv) == 0
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    sections = {row["section"] for row in rows}
    assert {"batch1-mpt", "batch1-llama", "bench-mpt", "agreement-mpt", "server"} <= sections
    agreement = [r["top1_agreement"] for r in rows if r["section"].startswith("agreement")]
    assert agreement == [1.0, 1.0]  # fp32 on CPU: the slot engine is the eager path's twin
    server = next(r for r in rows if r["section"] == "server")
    assert server["status_5xx"] == 0 and server["backend"] == "torch-static-cpu"
    assert "| server | ratio |" in (tmp_path / "out" / "results.md").read_text()
