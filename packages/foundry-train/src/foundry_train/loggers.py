"""Optional experiment-tracking loggers (TensorBoard, MLflow, W&B) with clear errors."""

from __future__ import annotations

import importlib.util

from composer.loggers import LoggerDestination

from foundry_train.config.root import LoggersConfig
from foundry_train.errors import FoundryError

__all__ = ["build_tracking_loggers"]

_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _require(name: str) -> None:
    if importlib.util.find_spec(_PACKAGES[name]) is None:
        raise FoundryError(
            f"loggers.{name} is configured but the '{_PACKAGES[name]}' package is not installed. "
            f"Install it (`pip install {_PACKAGES[name]}`) or remove loggers.{name}."
        )


def build_tracking_loggers(cfg: LoggersConfig) -> list[LoggerDestination]:
    """The configured tracking loggers; each configured one must be installed."""
    out: list[LoggerDestination] = []
    if cfg.tensorboard is not None:
        _require("tensorboard")
        from composer.loggers import TensorboardLogger

        out.append(TensorboardLogger(**cfg.tensorboard))  # type: ignore[arg-type]
    if cfg.mlflow is not None:
        _require("mlflow")
        from composer.loggers import MLFlowLogger

        out.append(MLFlowLogger(**cfg.mlflow))  # type: ignore[arg-type]
    if cfg.wandb is not None:
        _require("wandb")
        from composer.loggers import WandBLogger

        out.append(WandBLogger(**cfg.wandb))  # type: ignore[arg-type]
    return out
