"""Turning a training checkpoint (full or sharded) or a live model into an HF directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from foundry_train.checkpointing.safety import load_dcp_metadata, scan_checkpoint
from foundry_train.config import TrainConfig, dump_config, load_config
from foundry_train.errors import FoundryError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CONFIG_NAME",
    "find_run_config",
    "read_model_state_dict",
    "merge_lora",
    "export_state_dict",
    "export_checkpoint",
]

CONFIG_NAME = "foundry_train_config.yaml"
_MODEL_PREFIX = "model."  # FoundryComposerModel.model


def find_run_config(checkpoint: Path) -> Path:
    """The resolved config saved beside a checkpoint (in its folder or the folder above)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent, checkpoint):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise FoundryError(
        f"no {CONFIG_NAME} beside checkpoint '{checkpoint}'. Pass the training YAML with --config."
    )


def _strip(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read_full(path: Path) -> dict[str, torch.Tensor]:
    scan_checkpoint(path)  # nothing is unpickled before this passes
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    model_state = ckpt["state"]["model"]
    return _strip(model_state, _MODEL_PREFIX)


def _read_sharded(directory: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import (
        load,  # pyright: ignore[reportUnknownVariableType]  # stub: bare os.PathLike
    )

    scan_checkpoint(directory)
    meta = load_dcp_metadata(directory)
    prefix = "state.model." + _MODEL_PREFIX
    state: dict[str, Any] = {}
    for fqn, item in meta.state_dict_metadata.items():
        if fqn.startswith(prefix) and isinstance(item, TensorStorageMetadata):
            state[fqn] = torch.empty(item.size, dtype=item.properties.dtype)
    if not state:
        raise FoundryError(f"sharded checkpoint '{directory}' holds no model weights.")
    load(state, storage_reader=FileSystemReader(str(directory)), no_dist=True)
    return _strip(state, prefix)


def read_model_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a composer checkpoint: a ``.pt`` file or a sharded directory."""
    p = Path(checkpoint)
    if p.is_symlink():
        p = p.resolve()
    if p.is_dir():
        return _read_sharded(p)
    if p.is_file():
        return _read_full(p)
    raise FoundryError(f"checkpoint '{checkpoint}' does not exist.")


def merge_lora(cfg: TrainConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's weights with the trained LoRA adapters folded in.

    peft does the folding (`merge_and_unload`) on the model rebuilt from ``cfg``, so every
    adapter kind it trains merges as it computes: linear layers, transformers' transposed
    `Conv1D` (GPT-2) and embeddings. (Summing B @ A into ``*.weight`` by hand dropped embedding
    adapters and added a transposed update to GPT-2's layers.)
    """
    from foundry_train.model import build_network

    network = build_network(cfg.model, cfg.max_seq_len)
    keys = network.load_state_dict(state, strict=False)
    missing, unexpected = cast("tuple[list[str], list[str]]", keys)
    if missing or unexpected:
        raise FoundryError(
            "the checkpoint's weights do not fit the LoRA model of this config: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}. Pass the training "
            "YAML of this checkpoint with --config."
        )
    merge: Any = getattr(network, "merge_and_unload")  # peft's PeftModel  # noqa: B009
    merged = cast("torch.nn.Module", merge())
    return {k: v.detach() for k, v in merged.state_dict().items()}


def _native_model(cfg: TrainConfig, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    from foundry_train.model import resolve_model_config

    # transformers leaves from_config's **kwargs unannotated (Unknown), and
    # AutoModelForCausalLM returns Unknown.
    hf_config = resolve_model_config(cfg.model, cfg.max_seq_len)
    if cfg.model.name == "mpt":
        import foundry_models

        assert isinstance(hf_config, foundry_models.MPTConfig)
        mpt_cfg = hf_config
        try:
            hf_config, state = foundry_models.to_native_state_dict(mpt_cfg, state)
        except foundry_models.ExportError as exc:
            raise FoundryError(f"this MPT cannot be exported to a native HF model: {exc}") from None
    model = cast(
        "PreTrainedModel",
        AutoModelForCausalLM.from_config(hf_config),  # pyright: ignore[reportUnknownMemberType]
    )
    # torch's load_state_dict has no return annotation; it returns (missing, unexpected) names.
    incompatible = model.load_state_dict(state, strict=False)
    missing, unexpected = cast("tuple[list[str], list[str]]", incompatible)
    tied: set[str] = (
        {"lm_head.weight"} if getattr(hf_config, "tie_word_embeddings", False) else set()
    )
    if set(missing) - tied or unexpected:
        raise FoundryError(
            f"checkpoint weights do not match the model of the config: missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}. "
            "Pass the training YAML of this checkpoint with --config."
        )
    if tied:
        model.tie_weights()
    return model


def export_state_dict(
    cfg: TrainConfig, state: dict[str, torch.Tensor], out_dir: str | Path, overwrite: bool = False
) -> Path:
    """Write an HF directory (config, safetensors, tokenizer, resolved config) atomically."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FoundryError(f"'{out}' already exists. Choose another directory or pass --overwrite.")
    if cfg.model.lora is not None:
        state = merge_lora(cfg, state)
    model = _native_model(cfg, state)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # transformers types save_directory as a bare os.PathLike and leaves **kwargs unannotated.
    model.save_pretrained(tmp)  # pyright: ignore[reportUnknownMemberType]
    _save_tokenizer(cfg, tmp)
    (tmp / CONFIG_NAME).write_text(dump_config(cfg))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _save_tokenizer(cfg: TrainConfig, out: Path) -> None:
    from foundry_train.data.tokenizer import load_tokenizer

    tok = cast("PreTrainedTokenizerBase", load_tokenizer(cfg.tokenizer))
    tok.save_pretrained(out)  # pyright: ignore[reportUnknownMemberType]  # bare PathLike, **kwargs


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config_path: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """``foundry-train export-hf``: a full or sharded composer checkpoint to an HF directory."""
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FoundryError(f"checkpoint '{ckpt}' does not exist. Give a .pt file or a sharded dir.")
    cfg = load_config(config_path or find_run_config(ckpt.resolve()))
    state = read_model_state_dict(ckpt)
    return export_state_dict(cfg, state, out_dir, overwrite=overwrite)
