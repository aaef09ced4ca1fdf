"""Export to architectures transformers already knows: its MPT (ALiBi) or Llama (RoPE).

`export_hf` writes a directory that `AutoModelForCausalLM.from_pretrained(dir)` loads without
`trust_remote_code`. `to_native_state_dict` does the mapping on a bare state dict, for callers
(the trainer) that export from a checkpoint without rebuilding the model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import save_torch_state_dict
from transformers import GenerationConfig, PretrainedConfig

from foundry_models import hf_llama, hf_mpt
from foundry_models.config import MPTConfig
from foundry_models.errors import ExportError
from foundry_models.hf_native import special_tokens

__all__ = [
    "FOUNDRY_CONFIG_NAME",
    "NativeArch",
    "export_blockers",
    "export_hf",
    "native_arch",
    "to_native_state_dict",
]

NativeArch = Literal["mpt", "llama"]
FOUNDRY_CONFIG_NAME = "foundry_model_config.json"


def export_blockers(config: MPTConfig) -> dict[NativeArch, list[str]]:
    """For each native target, the options of `config` that prevent an exact export to it."""
    return {"mpt": hf_mpt.export_blockers(config), "llama": hf_llama.export_blockers(config)}


def native_arch(config: MPTConfig) -> NativeArch:
    """The native architecture `config` exports to; `ExportError` lists blockers if none fits."""
    blockers = export_blockers(config)
    arches: tuple[NativeArch, ...] = ("mpt", "llama")
    for arch in arches:
        if not blockers[arch]:
            return arch
    listed = [f"as transformers MPT: {b}" for b in blockers["mpt"]]
    listed += [f"as Llama: {b}" for b in blockers["llama"]]
    raise ExportError(
        "this model fits no architecture built into transformers, so it cannot be exported "
        "for loading without trust_remote_code. ALiBi + LayerNorm + GELU models export as MPT, "
        "RoPE + RMSNorm + SwiGLU models as Llama. Change the listed options (or keep the "
        "foundry_mpt format with model.save_pretrained).",
        listed,
    )


# ---------------------------------------------------------------------- configs


# ---------------------------------------------------------------------- weights
def to_native_state_dict(
    config: MPTConfig, state_dict: dict[str, torch.Tensor]
) -> tuple[PretrainedConfig, dict[str, torch.Tensor]]:
    """Map an `MPTForCausalLM.state_dict()` onto transformers' MPT or Llama.

    Returns the native config and a state dict of contiguous tensors with the native names
    (a tied output projection is not repeated). Raises `ExportError` when the config fits
    neither architecture or tensors are missing.
    """
    arch = native_arch(config)
    _check_keys(config, state_dict)
    mapping = hf_mpt if arch == "mpt" else hf_llama
    native_config: PretrainedConfig = mapping.native_config(config)
    weights = mapping.weights_to_native(config, state_dict)
    scale = config.resolved_logit_scale
    if scale is not None:  # untied (else a blocker): fold the scale into the head
        weights["lm_head.weight"] = weights["lm_head.weight"] * scale
    return native_config, {k: v.detach().contiguous() for k, v in weights.items()}


def _expected_keys(config: MPTConfig) -> set[str]:
    from foundry_models.modeling import MPTForCausalLM

    with torch.device("meta"):
        model = MPTForCausalLM(config)
    return set(model.state_dict())


def _check_keys(config: MPTConfig, state_dict: dict[str, torch.Tensor]) -> None:
    expected = _expected_keys(config)
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ExportError(
            "the state dict does not match the model config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}. Pass the "
            "state_dict() of an MPTForCausalLM built from this config (strip wrapper prefixes "
            "such as 'model.')."
        )


# ---------------------------------------------------------------------- directory
def export_hf(
    model: Any,
    out_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: str = "5GB",
) -> Path:
    """Write `model` (an `MPTForCausalLM`) as a native transformers MPT or Llama directory.

    The directory holds config.json, safetensors weights (sharded above `max_shard_size`),
    generation_config.json, the tokenizer files when `tokenizer` is given, and
    foundry_model_config.json (the source config, so `import_hf` restores it exactly). It is
    written to a temporary directory beside `out_dir` and renamed into place when complete.
    """
    from foundry_models.modeling import MPTForCausalLM

    if not isinstance(model, MPTForCausalLM):
        hint = (
            " For a PEFT model, merge the adapters first: model = model.merge_and_unload()."
            if hasattr(model, "merge_and_unload")
            else ""
        )
        raise ExportError(f"export_hf takes an MPTForCausalLM, got {type(model).__name__}.{hint}")
    config = model.config
    native_config, weights = to_native_state_dict(config, model.state_dict())
    if dtype is not None:
        weights = {k: v.to(dtype) for k, v in weights.items()}
    native_config.dtype = next(iter(weights.values())).dtype
    return write_native_dir(
        out_dir,
        native_config,
        weights,
        source_config=config,
        tokenizer=tokenizer,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def write_native_dir(
    out_dir: str | os.PathLike[str],
    native_config: PretrainedConfig,
    weights: dict[str, torch.Tensor],
    *,
    source_config: MPTConfig | None = None,
    tokenizer: Any = None,
    overwrite: bool = False,
    max_shard_size: str = "5GB",
) -> Path:
    """Write config, weights, generation config and tokenizer atomically into `out_dir`."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ExportError(
            f"output directory {out} already exists. Choose a new path or pass overwrite=True."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # transformers leaves save_pretrained's **kwargs unannotated (here and below)
        native_config.save_pretrained(tmp)  # pyright: ignore[reportUnknownMemberType]
        save_torch_state_dict(
            {k: v.cpu() for k, v in weights.items()}, tmp, max_shard_size=max_shard_size
        )
        generation_config = _generation_config(native_config, tokenizer)
        generation_config.save_pretrained(tmp)  # pyright: ignore[reportUnknownMemberType]
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if source_config is not None:
            (tmp / FOUNDRY_CONFIG_NAME).write_text(
                json.dumps(source_config.to_dict(), indent=2, sort_keys=True, default=str)
            )
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _generation_config(config: PretrainedConfig, tokenizer: Any) -> GenerationConfig:
    ids = special_tokens(config)
    if tokenizer is not None:
        for key in ids:
            if ids[key] is None:
                ids[key] = getattr(tokenizer, key, None)
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
