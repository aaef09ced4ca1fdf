"""Writes HF directories during and at the end of training (the export-hf code path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist
from torch import nn

from foundry_train.callbacks.monitors import every
from foundry_train.checkpointing.export import export_state_dict
from foundry_train.config import TrainConfig

__all__ = ["HFCheckpointer"]


class HFCheckpointer(Callback):
    """Every ``save_interval`` (any composer interval: ba, ep, tok, sp, dur) and at fit end:
    ``save_folder/ba{batch}``."""

    def __init__(self, cfg: TrainConfig, save_folder: str, save_interval: str) -> None:
        self.cfg = cfg
        self.folder = Path(save_folder)
        self.due = every(save_interval)
        self.last_saved = -1

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.due(state, Event.BATCH_END):
            self._save(state)

    def epoch_end(self, state: State, logger: Logger) -> None:
        if self.due(state, Event.EPOCH_END):
            self._save(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._save(state)

    def _save(self, state: State) -> None:
        batch = int(state.timestamp.batch)
        if batch == self.last_saved:
            return
        self.last_saved = batch
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        composer_model: Any = getattr(state.model, "module", state.model)
        network = cast(nn.Module, composer_model.model)
        weights: dict[str, Any]
        if dist.get_world_size() > 1:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            weights = dict(get_model_state_dict(network, options=options))
        else:
            weights = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        if dist.get_global_rank() == 0:
            weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
            with torch.no_grad():
                export_state_dict(self.cfg, weights, self.folder / f"ba{batch}", overwrite=True)
        dist.barrier()
