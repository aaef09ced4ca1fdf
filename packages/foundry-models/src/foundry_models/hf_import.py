"""Import transformers MPT (incl. mosaicml/mpt-* layout) and Llama checkpoints as `MPTForCausalLM`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

from foundry_models import hf_llama, hf_mpt
from foundry_models.config import MPTConfig
from foundry_models.errors import ExportError, FoundryError
from foundry_models.hf_export import FOUNDRY_CONFIG_NAME
from foundry_models.modeling import MPTForCausalLM

__all__ = ["config_from_native", "from_native_state_dict", "import_hf"]


def import_hf(path_or_model: Any, *, dtype: torch.dtype = torch.float32) -> MPTForCausalLM:
    """Load a transformers MPT or Llama model (a directory or an in-memory model) for fine-tuning.

    Directories are read directly (config.json plus safetensors or .bin weights, sharded or
    not), so llm-foundry MPT checkpoints with options transformers' MPT ignores (GQA, biases,
    RoPE, SwiGLU) import too. A foundry export (with foundry_model_config.json) comes back with
    its original config. Raises `ExportError` listing what cannot be represented.
    """
    if _is_path(path_or_model):
        path = Path(path_or_model)
        raw = _read_config_json(path)
        if raw.get("model_type") == MPTConfig.model_type:
            # transformers leaves from_pretrained's *args and **kwargs unannotated
            return MPTForCausalLM.from_pretrained(path, dtype=dtype)  # pyright: ignore[reportUnknownMemberType]
        config = config_from_native(raw)
        weights = from_native_state_dict(config, _read_weights(path), raw)
        source = path / FOUNDRY_CONFIG_NAME
        if source.exists():
            # transformers leaves from_dict's **kwargs unannotated
            saved = MPTConfig.from_dict(json.loads(source.read_text()))  # pyright: ignore[reportUnknownMemberType]
            config, weights = _restore_source_config(
                saved, config, weights, llama=raw.get("model_type") == "llama"
            )
    else:
        raw = path_or_model.config.to_dict()
        config = config_from_native(raw)
        weights = from_native_state_dict(config, path_or_model.state_dict(), raw)
    return _build(config, weights, dtype)


def _is_path(value: object) -> TypeGuard[str | os.PathLike[str]]:
    """A directory path (as opposed to a loaded model)."""
    return isinstance(value, str | os.PathLike)


def _build(
    config: MPTConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype
) -> MPTForCausalLM:
    with torch.device("meta"):
        model = MPTForCausalLM(config)
    model.to_empty(device="cpu")
    torch.nn.Module.to(model, dtype)
    # torch builds the result as an untyped namedtuple of two key lists
    keys = model.load_state_dict(weights, strict=False)
    missing, unexpected = cast("tuple[list[str], list[str]]", keys)
    if missing or unexpected:
        raise ExportError(
            f"the checkpoint's weights do not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}. Is the checkpoint complete?"
        )
    return model


def _restore_source_config(
    saved: MPTConfig, derived: MPTConfig, weights: dict[str, torch.Tensor], *, llama: bool
) -> tuple[MPTConfig, dict[str, torch.Tensor]]:
    """Prefer the exported source config when its shape agrees with the native one.

    Export folds an untied logit scale into lm_head, and for a Llama directory a custom
    softmax_scale into the query rows of q_proj; both are unfolded here, since the restored
    config applies them again.
    """
    for key in ("d_model", "n_heads", "n_layers", "vocab_size", "tie_word_embeddings"):
        if getattr(saved, key) != getattr(derived, key):
            return derived, weights
    scale = saved.resolved_logit_scale
    if scale is not None and "lm_head.weight" in weights:
        weights = {**weights, "lm_head.weight": weights["lm_head.weight"] / scale}
    q_scale = hf_llama.query_scale(saved) if llama else 1.0
    if q_scale != 1.0:
        weights = dict(weights)
        for key in [k for k in weights if k.endswith(("attn.Wqkv.weight", "attn.Wqkv.bias"))]:
            unfolded = weights[key].clone()
            unfolded[: saved.d_model] /= q_scale
            weights[key] = unfolded
    return saved, weights


# ---------------------------------------------------------------------- config
def config_from_native(raw: dict[str, Any]) -> MPTConfig:
    """An `MPTConfig` equivalent to a transformers MPT or Llama config dict."""
    model_type = raw.get("model_type")
    if model_type == "mpt":
        return hf_mpt.config_from_native(raw)
    if model_type == "llama":
        return hf_llama.config_from_native(raw)
    raise ExportError(
        f"cannot import model_type={model_type!r}: import_hf reads transformers MPT ('mpt') and "
        "Llama ('llama') checkpoints, and foundry exports."
    )


# ---------------------------------------------------------------------- weights
def from_native_state_dict(
    config: MPTConfig, state_dict: dict[str, torch.Tensor], raw: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename (and for Llama fuse q/k/v) native weights into `MPTForCausalLM` names."""
    if raw.get("model_type") == "mpt":
        weights = hf_mpt.weights_from_native(state_dict)
    else:
        weights = hf_llama.weights_from_native(config, state_dict)
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return weights


# ---------------------------------------------------------------------- files
def _read_config_json(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        raise FoundryError(
            f"{path} has no config.json. Pass a transformers model directory (config.json plus "
            "weights) or a loaded model."
        )
    return json.loads(file.read_text())


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(f))
        return out
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        out = {}
        for f in bins:
            out.update(torch.load(f, map_location="cpu", weights_only=True))
        return out
    raise FoundryError(
        f"{path} has no *.safetensors or pytorch_model*.bin weight files. Point import_hf at "
        "a complete checkpoint directory."
    )
