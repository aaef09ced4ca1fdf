"""Training config: schema, loading, overrides and validation."""

from foundry_train.config.loading import (
    apply_overrides,
    dump_config,
    load_config,
    load_yaml,
    parse_config,
)
from foundry_train.config.root import TrainConfig
from foundry_train.config.sections import LoaderConfig, ModelConfig

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "LoaderConfig",
    "load_config",
    "load_yaml",
    "apply_overrides",
    "parse_config",
    "dump_config",
]
