"""foundry-train: YAML-driven training of MPT and Hugging Face causal LMs on composer.

Public surface: the config schema (:class:`TrainConfig`, :func:`load_config`), :func:`train`,
:func:`export_checkpoint`, :func:`migrate_file`, :func:`scan_checkpoint`,
:func:`find_latest_checkpoint`, :class:`DecoupledLionW` and :func:`shipped_yamls_dir`.
Heavy modules (composer, torch) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_train.config import TrainConfig, load_config, parse_config
from foundry_train.errors import CheckpointSecurityError, ConfigError, DataError, FoundryError

if TYPE_CHECKING:
    from foundry_train.checkpointing.export import export_checkpoint
    from foundry_train.checkpointing.resume import find_latest_checkpoint
    from foundry_train.checkpointing.safety import scan_checkpoint
    from foundry_train.config.migrate import migrate_config, migrate_file
    from foundry_train.optim import DecoupledLionW
    from foundry_train.trainer import build_trainer, train

__version__ = "0.1.0"

_LAZY = {
    "train": "foundry_train.trainer",
    "build_trainer": "foundry_train.trainer",
    "export_checkpoint": "foundry_train.checkpointing.export",
    "migrate_file": "foundry_train.config.migrate",
    "migrate_config": "foundry_train.config.migrate",
    "scan_checkpoint": "foundry_train.checkpointing.safety",
    "find_latest_checkpoint": "foundry_train.checkpointing.resume",
    "DecoupledLionW": "foundry_train.optim",
}

__all__ = [
    "TrainConfig",
    "load_config",
    "parse_config",
    "FoundryError",
    "ConfigError",
    "CheckpointSecurityError",
    "DataError",
    "shipped_yamls_dir",
    "train",
    "build_trainer",
    "export_checkpoint",
    "migrate_file",
    "migrate_config",
    "scan_checkpoint",
    "find_latest_checkpoint",
    "DecoupledLionW",
]


def shipped_yamls_dir() -> Path:
    """Directory of the YAML configs shipped with the package."""
    return Path(__file__).resolve().parent / "yamls"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'foundry_train' has no attribute {name!r}")
