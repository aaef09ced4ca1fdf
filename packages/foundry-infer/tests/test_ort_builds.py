"""The two ONNX Runtime builds are alternative extras: `[cpu]` (onnxruntime), `[gpu]` (onnxruntime-gpu)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from foundry_infer.errors import FoundryError
from foundry_infer.ort_api import import_onnxruntime

ROOT = Path(__file__).resolve().parents[3]


def test_no_onnx_runtime_is_a_clear_error_naming_both_extras(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(FoundryError) as err:
        import_onnxruntime()
    message = str(err.value)
    assert "foundry-infer[cpu]" in message and "foundry-infer[gpu]" in message
    assert "--backend torch" in message


def test_the_builds_are_conflicting_extras_and_neither_is_required() -> None:
    project = tomllib.loads((ROOT / "packages/foundry-infer/pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"])
    assert "onnxruntime" not in required  # else `[gpu]` would install both builds
    assert project["optional-dependencies"]["cpu"] == ["onnxruntime>=1.20"]
    gpu = project["optional-dependencies"]["gpu"]
    assert [r for r in gpu if r.startswith("onnxruntime")] == ["onnxruntime-gpu>=1.20"]
    assert [r.split(">=")[0] for r in gpu] == ["onnxruntime-gpu", "triton"]  # and the kernels'
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert [
        {"package": "foundry-infer", "extra": "cpu"},
        {"package": "foundry-infer", "extra": "gpu"},
    ] in workspace["conflicts"]


def test_the_lock_resolves_each_extra_to_one_build() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    infer = next(p for p in lock["package"] if p["name"] == "foundry-infer")
    assert not any(d["name"].startswith("onnxruntime") for d in infer.get("dependencies", []))
    extras = {k: {d["name"] for d in v} for k, v in infer["optional-dependencies"].items()}
    builds = {k: {n for n in names if n.startswith("onnxruntime")} for k, names in extras.items()}
    assert builds == {"cpu": {"onnxruntime"}, "gpu": {"onnxruntime-gpu"}}
    assert extras["gpu"] == {"onnxruntime-gpu", "triton"}
