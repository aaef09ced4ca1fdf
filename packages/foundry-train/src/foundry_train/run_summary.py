"""The one line ``foundry-train`` prints when a run ends: loss, tokens, time, where things are."""

from __future__ import annotations

from pathlib import Path

from composer import Trainer

from foundry_train.callbacks.monitors import LOSS_KEY
from foundry_train.checkpointing.resume import find_latest_checkpoint
from foundry_train.config import TrainConfig

__all__ = ["run_summary"]


def _final_loss(trainer: Trainer) -> float | None:
    losses = trainer.state.total_loss_dict or {}
    loss = losses.get(LOSS_KEY)
    return None if loss is None else float(loss)


def _checkpoints(cfg: TrainConfig) -> str:
    if not cfg.save_folder:
        return "no checkpoints (save_folder is not set)"
    if "://" in cfg.save_folder:
        return f"checkpoints in {cfg.save_folder}"
    latest = find_latest_checkpoint(cfg.save_folder)
    where = f"checkpoints in {cfg.save_folder}"
    return f"{where} (latest {latest})" if latest is not None else f"{where} (none complete)"


def _hf_export(cfg: TrainConfig, checkpoints_saved: bool) -> str:
    hc = cfg.callbacks.hf_checkpointer
    if hc is not None:
        folders = sorted(
            (p for p in Path(hc.save_folder).glob("ba*") if p.name[2:].isdigit()),
            key=lambda p: int(p.name[2:]),
        )
        return f"HF export in {folders[-1] if folders else hc.save_folder}"
    if checkpoints_saved and cfg.save_folder and "://" not in cfg.save_folder:
        latest = Path(cfg.save_folder) / "latest-rank0.pt"
        return f"no HF export (make one: `foundry-train export-hf {latest} OUT`)"
    return "no HF export (set callbacks.hf_checkpointer)"


def run_summary(cfg: TrainConfig, trainer: Trainer, seconds: float) -> str:
    """``foundry-train: <run> done at batch N in 12.3 s: final loss ..., tokens; where``."""
    ts = trainer.state.timestamp
    loss = _final_loss(trainer)
    loss_text = "no loss logged" if loss is None else f"final loss {loss:.4f}"
    checkpoints = _checkpoints(cfg)
    return (
        f"foundry-train: {cfg.run_name or trainer.state.run_name} done at batch {int(ts.batch)} "
        f"in {seconds:.1f} s: {loss_text}, {int(ts.token):,} tokens; {checkpoints}; "
        f"{_hf_export(cfg, checkpoints.startswith('checkpoints'))}"
    )
