"""Export to architectures transformers already knows: its MPT (ALiBi) or Llama (RoPE).

`export_hf` writes a directory that `AutoModelForCausalLM.from_pretrained(dir)` loads without
`trust_remote_code`. `to_native_state_dict` does the mapping on a bare state dict, for callers
(the trainer) that export from a checkpoint without rebuilding the model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import save_torch_state_dict
from transformers import GenerationConfig, PretrainedConfig

from foundry_models.config import MPTConfig
from foundry_models.errors import ExportError

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
    return {"mpt": _mpt_blockers(config), "llama": _llama_blockers(config)}


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


def _common_blockers(config: MPTConfig) -> list[str]:
    a = config.attn_options
    out: list[str] = []
    if a.qk_ln:
        out.append("attn_config.qk_ln=True (no QK-norm)")
    if a.sliding_window_size is not None:
        out.append(f"attn_config.sliding_window_size={a.sliding_window_size} (no sliding window)")
    if config.logit_scale is not None and config.tie_word_embeddings:
        out.append(
            f"logit_scale={config.logit_scale!r} with tied embeddings (no logit scale; with "
            "untied embeddings it is folded into lm_head)"
        )
    return out


def _mpt_blockers(config: MPTConfig) -> list[str]:
    a, f = config.attn_options, config.ffn_options
    out: list[str] = []
    if not a.alibi:
        out.append("attn_config.alibi=False (transformers' MPT always applies ALiBi)")
    elif a.alibi_bias_max != 8:
        out.append(
            f"attn_config.alibi_bias_max={a.alibi_bias_max} (transformers' MPT always uses 8)"
        )
    if config.norm_type not in ("layernorm", "low_precision_layernorm"):
        out.append(f"norm_type={config.norm_type!r} (needs LayerNorm)")
    if f.ffn_type != "mptmlp":
        out.append(f"ffn_config.ffn_type={f.ffn_type!r} (needs the GELU MLP 'mptmlp')")
    elif f.ffn_hidden_size != 4 * config.d_model:
        out.append(
            f"FFN hidden size {f.ffn_hidden_size} (transformers' MPT fixes it at 4 * d_model)"
        )
    if not config.no_bias:
        out.append("no_bias=False (transformers' MPT has no biases)")
    if a.kv_n_heads != config.n_heads:
        out.append(f"attn_config.kv_n_heads={a.kv_n_heads} (no grouped-query attention)")
    return out + _common_blockers(config)


def _llama_blockers(config: MPTConfig) -> list[str]:
    a, f = config.attn_options, config.ffn_options
    out: list[str] = []
    if not a.rope:
        out.append("attn_config.rope=False (Llama uses rotary embeddings)")
    if config.norm_type != "rmsnorm":
        out.append(f"norm_type={config.norm_type!r} (needs 'rmsnorm')")
    if f.ffn_type != "mptglu":
        out.append(f"ffn_config.ffn_type={f.ffn_type!r} (needs SwiGLU 'mptglu')")
    if a.clip_qkv is not None:
        out.append(f"attn_config.clip_qkv={a.clip_qkv} (no QKV clipping)")
    return out + _common_blockers(config)


# ---------------------------------------------------------------------- configs
def _special_tokens(config: PretrainedConfig) -> dict[str, Any]:
    return {
        key: getattr(config, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")
    }


def _mpt_native_config(config: MPTConfig) -> PretrainedConfig:
    from transformers import MptConfig  # imported on use: it pulls in image/video utilities

    a = config.attn_options
    attn = {
        "attn_type": "multihead_attention",
        "attn_pdrop": a.attn_pdrop or 0,
        "attn_impl": "torch",
        "clip_qkv": a.clip_qkv,
        "softmax_scale": a.softmax_scale,
        "prefix_lm": False,
        "qk_ln": False,
        "attn_uses_sequence_id": False,
        "alibi": True,
        "alibi_bias_max": int(a.alibi_bias_max),
    }
    return MptConfig(
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        expansion_ratio=4,
        max_seq_len=config.max_seq_len,
        vocab_size=config.vocab_size,
        resid_pdrop=config.resid_pdrop,
        emb_pdrop=config.emb_pdrop,
        layer_norm_epsilon=config.norm_eps,
        learned_pos_emb=False,
        attn_config=attn,
        no_bias=True,
        logit_scale=None,
        norm_type="low_precision_layernorm",
        use_cache=True,
        tie_word_embeddings=config.tie_word_embeddings,
        architectures=["MptForCausalLM"],
        **_special_tokens(config),
    )


def _llama_rope_scaling(config: MPTConfig) -> tuple[dict[str, Any] | None, int]:
    """transformers' rope_scaling dict and the max_position_embeddings that goes with it."""
    scaling = config.attn_options.rope_scaling
    if scaling is None:
        return None, config.max_seq_len
    kind = scaling["type"]
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(scaling["factor"])}, config.max_seq_len
    if kind == "dynamic":
        # transformers grows the base past max_position_embeddings, our original length
        original = int(scaling["original_max_seq_len"])
        return {"rope_type": "dynamic", "factor": float(scaling["factor"])}, original
    return {
        "rope_type": "llama3",
        "factor": float(scaling["factor"]),
        "low_freq_factor": float(scaling["low_freq_factor"]),
        "high_freq_factor": float(scaling["high_freq_factor"]),
        "original_max_position_embeddings": int(scaling["original_max_seq_len"]),
    }, config.max_seq_len


def _llama_native_config(config: MPTConfig) -> PretrainedConfig:
    from transformers import LlamaConfig  # imported on use: it pulls in image/video utilities

    a = config.attn_options
    rope_scaling, max_positions = _llama_rope_scaling(config)
    rope: dict[str, Any] = {"rope_type": "default"} if rope_scaling is None else dict(rope_scaling)
    rope["rope_theta"] = float(a.rope_theta)
    kwargs: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_options.ffn_hidden_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": a.kv_n_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": not config.no_bias,
        "mlp_bias": not config.no_bias,
        "attention_dropout": a.attn_pdrop,
        "use_cache": True,
        "architectures": ["LlamaForCausalLM"],
        **_special_tokens(config),
    }
    if "rope_parameters" in getattr(LlamaConfig, "__dataclass_fields__", {}):
        kwargs["rope_parameters"] = rope  # transformers >= 5
    else:
        kwargs["rope_theta"] = rope.pop("rope_theta")
        kwargs["rope_scaling"] = None if rope_scaling is None else rope
    return LlamaConfig(**kwargs)


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
    if arch == "mpt":
        native_config: PretrainedConfig = _mpt_native_config(config)
        weights = _mpt_weights(config, state_dict)
    else:
        native_config = _llama_native_config(config)
        weights = _llama_weights(config, state_dict)
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


def _mpt_weights(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers' MPT uses MPT's own parameter names, which are ours.
    return {
        k: v for k, v in sd.items() if not (config.tie_word_embeddings and k == "lm_head.weight")
    }


def _llama_weights(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    d, kv_dim = config.d_model, config.attn_options.kv_n_heads * config.head_dim
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"]}
    out["model.norm.weight"] = sd["transformer.norm_f.weight"]
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    q_scale = _llama_query_scale(config)
    for i in range(config.n_layers):
        src, dst = f"transformer.blocks.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = sd[src + "norm_1.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "norm_2.weight"]
        for kind in ("weight", "bias"):
            if src + f"attn.Wqkv.{kind}" not in sd:
                continue
            # clone: safetensors refuses slices that share one storage
            fused = sd[src + f"attn.Wqkv.{kind}"]
            q, k, v = (t.clone() for t in torch.split(fused, [d, kv_dim, kv_dim]))
            out[dst + f"self_attn.q_proj.{kind}"] = q * q_scale if q_scale != 1.0 else q
            out[dst + f"self_attn.k_proj.{kind}"] = k
            out[dst + f"self_attn.v_proj.{kind}"] = v
            out[dst + f"self_attn.o_proj.{kind}"] = sd[src + f"attn.out_proj.{kind}"]
            for proj in ("gate_proj", "up_proj", "down_proj"):
                out[dst + f"mlp.{proj}.{kind}"] = sd[src + f"ffn.{proj}.{kind}"]
    return out


def _llama_query_scale(config: MPTConfig) -> float:
    """Llama scales scores by head_dim**-0.5; a custom softmax_scale is folded into q_proj."""
    scale = config.attn_options.softmax_scale
    if scale is None:
        return 1.0
    return scale * math.sqrt(config.head_dim)


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
    ids = _special_tokens(config)
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
