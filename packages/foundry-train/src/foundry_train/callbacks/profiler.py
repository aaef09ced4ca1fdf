"""``callbacks.profiler``: torch.profiler over a few training batches, and where the time went.

From batch ``start_batch`` (counted from the start of this process's training, so compilation
and warm-up are behind it) for ``batches`` batches, each rank records its CPU ops and, on a GPU,
its kernels. Then it writes ``summary-rankN.txt`` (and ``.json``) in the profile folder: the wall
time per batch, the kernel time per batch and its share of the wall, that time by kind (matrix
products, attention, optimizer, communication, copies and casts, inductor's fused kernels,
other) and the ``top`` kernels by time. Without a GPU the same summary is made of the CPU ops'
self time. ``trace: true`` also writes the Chrome trace (``trace-rankN.json``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from torch.profiler import ProfilerActivity, profile

from foundry_train.config.root import ProfilerConfig

__all__ = ["StepProfiler", "kind_of"]

log = logging.getLogger(__name__)

# (kind, lower-case name fragments), the first match wins
_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("communication", ("nccl", "all_gather", "reduce_scatter", "allreduce", "gloo")),
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    (
        "matmul",
        (
            "gemm",
            "nvjet",
            "cutlass",
            "xmma",
            "cublas",
            "aten::mm",
            "aten::addmm",
            "aten::bmm",
            "aten::matmul",
            "aten::linear",
        ),
    ),  # fmt: skip
    ("inductor (fused)", ("triton_",)),
    ("copy and cast", ("memcpy", "memset", "copy", "aten::to", "cast")),
)


def kind_of(name: str) -> str:
    """The kind a kernel or op name belongs to (see the module docstring)."""
    low = name.lower()
    return next((kind for kind, keys in _KINDS if any(k in low for k in keys)), "other")


class StepProfiler(Callback):
    """Profiles ``cfg.batches`` batches from ``cfg.start_batch``; see the module docstring."""

    def __init__(self, cfg: ProfilerConfig, folder: Path) -> None:
        self.cfg = cfg
        self.folder = folder
        self.seen = 0  # batches started in this process
        self.prof: profile | None = None
        self.walls: list[float] = []
        self._t0 = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def batch_start(self, state: State, logger: Logger) -> None:
        self.seen += 1
        if self.seen == self.cfg.start_batch and self.prof is None:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._sync()
            self.prof = profile(activities=activities)
            self.prof.start()
        if self.prof is not None:
            self._sync()
            self._t0 = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.prof is None:
            return
        self._sync()
        self.walls.append(time.perf_counter() - self._t0)
        if len(self.walls) == self.cfg.batches:
            self._finish()

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.prof is not None and self.walls:  # the run ended inside the window
            self._finish()
        elif self.seen < self.cfg.start_batch:
            log.warning(
                "profiler: this run trained %d batches, fewer than callbacks.profiler.start_batch"
                " (%d): nothing was profiled; lower start_batch or train longer",
                self.seen,
                self.cfg.start_batch,
            )

    def _finish(self) -> None:
        prof, self.prof = self.prof, None
        assert prof is not None
        prof.stop()
        rank = dist.get_global_rank()
        summary = summarise(prof, self.walls, self.cfg.top, self.cfg.start_batch)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write(self.folder / f"summary-rank{rank}.json", json.dumps(summary, indent=1))
        _write(self.folder / f"summary-rank{rank}.txt", render(summary))
        if self.cfg.trace:
            tmp = self.folder / f".trace-rank{rank}.json.tmp"
            prof.export_chrome_trace(str(tmp))
            os.replace(tmp, self.folder / f"trace-rank{rank}.json")
        log.info("profiler: wrote %s", self.folder / f"summary-rank{rank}.txt")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# record_function ranges that the profiler also reports on the GPU's timeline (composer's and
# torch's optimizer step, the profiler's own step): spans around kernels, not kernels
_ANNOTATIONS = ("Optimizer.step#", "Optimizer.zero_grad#", "ProfilerStep#")


def kernel_events(events: Any) -> list[Any]:
    """The GPU kernels (and copies) among a profile's events, without the user annotations that
    appear on the GPU timeline as ranges spanning other kernels (counting those counted the
    optimizer step's whole span as optimizer time on an H100)."""
    return [
        e
        for e in events
        if e.device_type.name == "CUDA"
        and not getattr(e, "is_user_annotation", False)
        and not e.name.startswith(_ANNOTATIONS)
    ]


def summarise(prof: profile, walls: list[float], top: int, start: int) -> dict[str, Any]:
    """Per-batch wall and kernel (or CPU self) time, by kind and by name, in milliseconds."""
    on_gpu = torch.cuda.is_available()
    times: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    if on_gpu:
        for e in kernel_events(prof.events()):
            times[e.name] += e.device_time / 1e3
            counts[e.name] += 1
    else:
        for avg in prof.key_averages():
            times[avg.key] += avg.self_cpu_time_total / 1e3
            counts[avg.key] += avg.count
    n = len(walls)
    total = sum(times.values()) / n
    kinds: dict[str, float] = defaultdict(float)
    for name, ms in times.items():
        kinds[kind_of(name)] += ms / n
    ranked = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    return {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "measure": "GPU kernel time" if on_gpu else "CPU self time",
        "batches": [start, start + n - 1],
        "wall_ms_per_batch": sum(walls) * 1e3 / n,
        "walls_ms": [w * 1e3 for w in walls],
        "time_ms_per_batch": total,
        "by_kind_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "top": [
            {"name": k, "ms_per_batch": v / n, "calls": round(counts[k] / n, 2)} for k, v in ranked
        ],
    }


def render(s: dict[str, Any]) -> str:
    """The summary as text."""
    wall, total = s["wall_ms_per_batch"], s["time_ms_per_batch"]
    lines = [
        f"foundry-train profile on {s['device']}: batches {s['batches'][0]}-{s['batches'][1]}",
        f"wall time per batch: {wall:.2f} ms (each: "
        + ", ".join(f"{w:.2f}" for w in s["walls_ms"]) + ")",
        f"{s['measure']} per batch: {total:.2f} ms ({100 * total / wall:.1f}% of the wall time)",
        "",
        "by kind (ms per batch, share of the measured time):",
    ]  # fmt: skip
    for kind, ms in s["by_kind_ms"].items():
        lines.append(f"  {kind:<18} {ms:10.2f}  {100 * ms / max(total, 1e-9):5.1f}%")
    lines += ["", f"top {len(s['top'])} (ms per batch, calls per batch, name):"]
    for row in s["top"]:
        lines.append(f"  {row['ms_per_batch']:10.3f}  {row['calls']:8.2f}  {row['name'][:140]}")
    return "\n".join(lines) + "\n"
