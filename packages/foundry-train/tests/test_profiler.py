"""`callbacks.profiler`: a real training run profiles the batches asked for and summarises them."""

from __future__ import annotations

import json
from pathlib import Path

from foundry_train.callbacks.profiler import kernel_events, kind_of


def _train(h: object, tmp_path: Path, cfg: dict) -> str:
    """Train ``cfg`` through the CLI; its stderr."""
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    proc = h.run_cli([str(path)])  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_a_run_profiles_its_batches_and_says_where_the_time_went(
    assets: dict[str, Path], tmp_path: Path, h: object
) -> None:
    save = tmp_path / "run"
    cfg = h.base_config(  # type: ignore[attr-defined]
        assets, save, max_duration="4ba", save_interval="4ba"
    )
    cfg["callbacks"] = {"profiler": {"start_batch": 2, "batches": 2, "top": 5}, "plot": False}
    stderr = _train(h, tmp_path, cfg)
    assert "profiler: wrote" in stderr
    summary = json.loads((save / "profile" / "summary-rank0.json").read_text())
    assert summary["batches"] == [2, 3] and len(summary["walls_ms"]) == 2
    assert summary["measure"] == "CPU self time" and summary["device"] == "cpu"
    assert summary["by_kind_ms"]["matmul"] > 0 and summary["by_kind_ms"]["optimizer"] > 0
    assert summary["time_ms_per_batch"] > 0
    assert len(summary["top"]) == 5 and all(row["ms_per_batch"] > 0 for row in summary["top"])
    text = (save / "profile" / "summary-rank0.txt").read_text()
    assert "batches 2-3" in text and "by kind" in text and "matmul" in text
    assert not list((save / "profile").glob(".*.tmp"))


def test_a_run_shorter_than_start_batch_says_nothing_was_profiled(
    assets: dict[str, Path], tmp_path: Path, h: object
) -> None:
    save = tmp_path / "run"
    cfg = h.base_config(  # type: ignore[attr-defined]
        assets, save, max_duration="2ba", save_interval="2ba"
    )
    cfg["callbacks"] = {"profiler": {"start_batch": 5}, "plot": False}
    stderr = _train(h, tmp_path, cfg)
    assert "nothing was profiled" in stderr
    assert not (save / "profile").exists()


def test_kernel_names_fall_into_kinds() -> None:
    assert kind_of("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert kind_of("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert kind_of("flash_fwd_kernel") == "attention"
    assert kind_of("void at::native::(anonymous)::multi_tensor_apply_kernel<FusedAdam>") == (
        "optimizer"
    )
    assert kind_of("ncclDevKernel_AllGather_RING_LL") == "communication"
    assert kind_of("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "inductor (fused)"
    assert kind_of("Memcpy DtoD (Device -> Device)") == "copy and cast"
    assert kind_of("aten::addmm") == "matmul" and kind_of("something_else") == "other"


def test_gpu_user_annotations_are_not_kernels() -> None:
    """On an H100 the optimizer step's record_function range showed up on the GPU timeline and
    was summed as 1,483 ms of "optimizer kernels" in a 1,485 ms batch; such ranges are left out."""
    from types import SimpleNamespace

    def event(name: str, device: str, annotation: bool = False) -> SimpleNamespace:
        kind = SimpleNamespace(name=device)
        return SimpleNamespace(name=name, device_type=kind, is_user_annotation=annotation)

    events = [
        event("Optimizer.step#DecoupledAdamW.step", "CUDA"),  # as torch 2.11 reported it
        event("my_range", "CUDA", annotation=True),
        event("ProfilerStep#3", "CUDA"),
        event("aten::mm", "CPU"),
        event("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "CUDA"),
        event("void multi_tensor_apply_kernel<adam>", "CUDA"),
    ]
    kept = [e.name for e in kernel_events(events)]
    assert kept == [
        "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT",
        "void multi_tensor_apply_kernel<adam>",
    ]
