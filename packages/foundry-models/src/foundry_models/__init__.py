"""foundry-models: MPT-style causal LMs with torch, flash and Triton attention.

Importing the package registers `MPTConfig` / `MPTForCausalLM` with transformers' Auto classes
under `model_type="foundry_mpt"`.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from foundry_models.config import MPTConfig
from foundry_models.errors import (
    AttentionUnavailableError,
    ExportError,
    FoundryError,
    MPTConfigError,
    OptionProblem,
)
from foundry_models.hf_export import export_blockers, export_hf, to_native_state_dict
from foundry_models.hf_import import import_hf
from foundry_models.modeling import MPTForCausalLM, MPTModel
from foundry_models.options import MPTOptions
from foundry_models.presets import PRESETS, PUBLISHED_PARAMS, preset_config

__all__ = [
    "PRESETS",
    "PUBLISHED_PARAMS",
    "AttentionUnavailableError",
    "ExportError",
    "FoundryError",
    "MPTConfig",
    "MPTConfigError",
    "MPTForCausalLM",
    "MPTModel",
    "MPTOptions",
    "OptionProblem",
    "export_blockers",
    "export_hf",
    "import_hf",
    "preset_config",
    "to_native_state_dict",
]

__version__ = "0.1.0"


def _register() -> None:
    # transformers leaves the parameters of both `register` methods unannotated
    try:
        AutoConfig.register(MPTConfig.model_type, MPTConfig)  # pyright: ignore[reportUnknownMemberType]
        AutoModelForCausalLM.register(MPTConfig, MPTForCausalLM)  # pyright: ignore[reportUnknownMemberType]
    except ValueError:  # already registered (e.g. the module was reloaded)
        pass


_register()
