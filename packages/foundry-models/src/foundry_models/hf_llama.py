"""transformers' Llama architecture (RoPE + RMSNorm + SwiGLU, GQA) <-> foundry MPT.

Export: `export_blockers`, `native_config`, `weights_to_native` (the fused Wqkv split into
q/k/v_proj). Import: `config_from_native`, `weights_from_native` (q/k/v fused back).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PretrainedConfig

from foundry_models.config import MPTConfig
from foundry_models.errors import ExportError
from foundry_models.hf_native import common_blockers, special_tokens, token_ids

__all__ = [
    "config_from_native",
    "export_blockers",
    "native_config",
    "weights_from_native",
    "weights_to_native",
]


# ---------------------------------------------------------------------- export
def export_blockers(config: MPTConfig) -> list[str]:
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
    return out + common_blockers(config)


def _rope_scaling_to_native(config: MPTConfig) -> tuple[dict[str, Any] | None, int]:
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


def native_config(config: MPTConfig) -> PretrainedConfig:
    from transformers import LlamaConfig  # imported on use: it pulls in image/video utilities

    a = config.attn_options
    rope_scaling, max_positions = _rope_scaling_to_native(config)
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
        **special_tokens(config),
    }
    if "rope_parameters" in getattr(LlamaConfig, "__dataclass_fields__", {}):
        kwargs["rope_parameters"] = rope  # transformers >= 5
    else:
        kwargs["rope_theta"] = rope.pop("rope_theta")
        kwargs["rope_scaling"] = None if rope_scaling is None else rope
    return LlamaConfig(**kwargs)


def weights_to_native(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    d, kv_dim = config.d_model, config.attn_options.kv_n_heads * config.head_dim
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"]}
    out["model.norm.weight"] = sd["transformer.norm_f.weight"]
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    q_scale = query_scale(config)
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


def query_scale(config: MPTConfig) -> float:
    """Llama scales scores by head_dim**-0.5; a custom softmax_scale is folded into q_proj."""
    scale = config.attn_options.softmax_scale
    if scale is None:
        return 1.0
    return scale * math.sqrt(config.head_dim)


# ---------------------------------------------------------------------- import
def config_from_native(raw: dict[str, Any]) -> MPTConfig:
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    blockers: list[str] = []
    if raw.get("hidden_act", "silu") != "silu":
        blockers.append(f"hidden_act={raw['hidden_act']!r} (needs 'silu')")
    if raw.get("head_dim") not in (None, hidden // heads):
        blockers.append(f"head_dim={raw['head_dim']} (needs hidden_size / num_attention_heads)")
    if bool(raw.get("attention_bias", False)) != bool(raw.get("mlp_bias", False)):
        blockers.append("attention_bias != mlp_bias (foundry MPT has one no_bias switch)")
    rope_theta, scaling = _rope_from_native(raw, blockers)
    if blockers:
        raise ExportError("this Llama checkpoint uses options foundry MPT does not have.", blockers)
    max_len = raw.get("max_position_embeddings", 2048)
    if scaling is not None and scaling["type"] == "dynamic":
        # transformers' max_position_embeddings is the length before scaling here; the model is
        # meant to run to factor times it (it was refused past the original length)
        scaling["original_max_seq_len"] = max_len
        max_len = int(max_len * float(scaling["factor"]))
    return MPTConfig(
        d_model=hidden,
        n_heads=heads,
        n_layers=raw["num_hidden_layers"],
        max_seq_len=max_len,
        vocab_size=raw["vocab_size"],
        no_bias=not raw.get("attention_bias", False),
        norm_type="rmsnorm",
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attn_config={
            "attn_pdrop": float(raw.get("attention_dropout", 0.0) or 0.0),
            "kv_n_heads": raw.get("num_key_value_heads") or heads,
            "alibi": False,
            "rope": True,
            "rope_theta": rope_theta,
            "rope_scaling": scaling,
        },
        ffn_config={"ffn_type": "mptglu", "ffn_hidden_size": raw["intermediate_size"]},
        **token_ids(raw),
    )


def _rope_from_native(
    raw: dict[str, Any], blockers: list[str]
) -> tuple[float, dict[str, Any] | None]:
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        blockers.append("rope partial_rotary_factor != 1")
    if kind == "linear":
        return theta, {"type": "linear", "factor": float(params["factor"])}
    if kind == "dynamic":
        return theta, {"type": "dynamic", "factor": float(params["factor"])}
    if kind == "llama3":
        return theta, {
            "type": "llama3",
            "factor": float(params["factor"]),
            "low_freq_factor": float(params["low_freq_factor"]),
            "high_freq_factor": float(params["high_freq_factor"]),
            "original_max_seq_len": int(params["original_max_position_embeddings"]),
        }
    blockers.append(f"rope_type={kind!r} (supported: default, linear, dynamic, llama3)")
    return theta, None


def weights_from_native(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"transformer.wte.weight": sd["model.embed_tokens.weight"]}
    out["transformer.norm_f.weight"] = sd["model.norm.weight"]
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(config.n_layers):
        src, dst = f"model.layers.{i}.", f"transformer.blocks.{i}."
        out[dst + "norm_1.weight"] = sd[src + "input_layernorm.weight"]
        out[dst + "norm_2.weight"] = sd[src + "post_attention_layernorm.weight"]
        kinds = ("weight",) if config.no_bias else ("weight", "bias")
        for kind in kinds:
            out[dst + f"attn.Wqkv.{kind}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0
            )
            out[dst + f"attn.out_proj.{kind}"] = sd[src + f"self_attn.o_proj.{kind}"]
            for proj in ("gate_proj", "up_proj", "down_proj"):
                out[dst + f"ffn.{proj}.{kind}"] = sd[src + f"mlp.{proj}.{kind}"]
    return out
