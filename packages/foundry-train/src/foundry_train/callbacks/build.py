"""Building the callbacks a run's config turns on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from composer.callbacks import LRMonitor, MemoryMonitor, SpeedMonitor
from composer.core import Callback

from foundry_train.callbacks.monitors import LossPlot, LossSpikeGuard
from foundry_train.config import TrainConfig

__all__ = ["build_callbacks"]


def build_callbacks(cfg: TrainConfig, metrics_path: Path | None) -> list[Callback]:
    """The callbacks ``cfg.callbacks`` (and ``icl_eval``) turn on, in a fixed order."""
    cb = cfg.callbacks
    out: list[Callback] = []
    if cb.speed_monitor is not None:
        peak = cb.speed_monitor.peak_tflops * 1e12
        out.append(SpeedMonitor(window_size=cb.speed_monitor.window_size, gpu_flops_available=peak))
    if cb.lr_monitor:
        out.append(LRMonitor())
    if cb.memory_monitor and torch.cuda.is_available():
        out.append(MemoryMonitor())
    if cb.loss_spike is not None:
        out.append(LossSpikeGuard(cb.loss_spike))
    if cb.hf_checkpointer is not None:
        from foundry_train.callbacks.hf_checkpointer import HFCheckpointer

        hc = cb.hf_checkpointer
        out.append(HFCheckpointer(cfg, hc.save_folder, hc.save_interval))
    if cfg.icl_eval is not None:
        from foundry_train.callbacks.icl import ICLEvalCallback

        out.append(ICLEvalCallback(cfg))
    if cb.profiler is not None:
        from foundry_train.callbacks.profiler import StepProfiler

        out.append(StepProfiler(cb.profiler, _profile_folder(cfg)))
    if cb.plot and metrics_path is not None and cfg.save_folder:
        # in save_folder, or beside the metrics file when the checkpoints go to an object store
        # (a local path cannot name an s3:// folder: the end of the run failed writing there)
        folder = metrics_path.parent if "://" in cfg.save_folder else Path(cfg.save_folder)
        out.append(LossPlot(metrics_path, folder / "loss_throughput.png", model=_model_label(cfg)))
    return out


def _model_label(cfg: TrainConfig) -> str:
    """The model as a plot title names it: ``MPT debug`` or a Hugging Face model's name."""
    mc = cfg.model
    if mc.name == "mpt" and not mc.pretrained_model_name_or_path:
        return f"MPT {mc.preset or 'debug'}"
    where = str(mc.pretrained_model_name_or_path or mc.name)
    return where if "/" in where and not Path(where).exists() else Path(where).name


def _profile_folder(cfg: TrainConfig) -> Path:
    """Where the profiler writes: ``save_folder/profile``, or a temporary folder when the save
    folder is an object store or unset (the log names it)."""
    folder = cfg.save_folder
    if folder and "://" not in folder:
        return Path(folder) / "profile"
    return Path(tempfile.mkdtemp(prefix="foundry-train-profile-"))
