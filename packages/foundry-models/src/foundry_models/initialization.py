"""Weight initialisation schemes (llm-foundry's names), applied module by module.

Every write goes through a `torch.nn.init` function with the final scale folded in (no in-place
rescaling afterwards), so transformers' loader, which guards those functions, never touches
weights it has just loaded from a checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from foundry_models.config import MPTConfig
from foundry_models.norms import RMSNorm
from foundry_models.options import InitOptions

__all__ = ["init_module_"]


def init_module_(module: nn.Module, config: MPTConfig) -> None:
    """Initialise the parameters owned directly by `module` (not its children)."""
    opts = config.init_options
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            divisor = 1.0
            if opts.init_div_is_residual and getattr(module, "_is_residual", False):
                divisor = math.sqrt(2 * config.n_layers)
            _init_matrix(module.weight, opts, config.d_model, divisor)
            bias = getattr(module, "bias", None)  # None when built with bias=False
            if bias is not None:
                nn.init.zeros_(bias)
        elif isinstance(module, nn.Embedding):
            if opts.emb_init_std is not None:
                nn.init.normal_(module.weight, mean=0.0, std=opts.emb_init_std)
            else:
                _init_matrix(module.weight, opts, config.d_model, 1.0)
        elif isinstance(module, nn.LayerNorm | RMSNorm):
            weight = getattr(module, "weight", None)  # None without elementwise affine
            if weight is not None:
                nn.init.ones_(weight)
            bias = getattr(module, "bias", None)
            if bias is not None:
                nn.init.zeros_(bias)


def _init_matrix(weight: torch.Tensor, opts: InitOptions, d_model: int, divisor: float) -> None:
    name = opts.name
    if name == "normal_":
        nn.init.normal_(weight, mean=0.0, std=opts.init_std / divisor)
        return
    if name == "small_init_":
        nn.init.normal_(weight, mean=0.0, std=math.sqrt(2 / (5 * d_model)) / divisor)
        return
    fan_out, fan_in = weight.shape[0], weight.shape[1]
    if name in ("kaiming_normal_", "kaiming_uniform_"):
        gain = nn.init.calculate_gain(opts.init_nonlinearity, 0)
        fan = fan_in if opts.fan_mode == "fan_in" else fan_out
        std = gain / math.sqrt(fan) / divisor
    else:  # xavier_*
        std = math.sqrt(2.0 / (fan_in + fan_out)) / divisor
    if name.endswith("uniform_"):
        bound = math.sqrt(3.0) * std
        nn.init.uniform_(weight, -bound, bound)
    else:
        nn.init.normal_(weight, mean=0.0, std=std)
