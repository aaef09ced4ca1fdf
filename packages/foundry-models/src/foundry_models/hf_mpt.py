"""transformers' MPT architecture (`model_type="mpt"`, ALiBi + LayerNorm + GELU) <-> foundry MPT.

Export: `export_blockers`, `native_config`, `weights_to_native`. Import: `config_from_native`,
`weights_from_native`. transformers' MPT uses MPT's own parameter names, which are ours.
"""

from __future__ import annotations

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


# import: llm-foundry's norm_type names -> ours (its low-precision and triton RMSNorms are RMSNorms)
_NORMS = {
    "layernorm": "layernorm",
    "low_precision_layernorm": "low_precision_layernorm",
    "rmsnorm": "rmsnorm",
    "low_precision_rmsnorm": "rmsnorm",
    "triton_rmsnorm": "rmsnorm",
}


def _norm_type(raw: dict[str, Any], blockers: list[str]) -> str:
    """Our norm_type for llm-foundry's; an unknown one goes to ``blockers``."""
    source = raw.get("norm_type", "low_precision_layernorm")
    norm = _NORMS.get(source)
    if norm is None:
        blockers.append(f"norm_type={source!r} (known: {', '.join(sorted(_NORMS))})")
        return "layernorm"
    return norm


# ---------------------------------------------------------------------- export
def export_blockers(config: MPTConfig) -> list[str]:
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
    return out + common_blockers(config)


def native_config(config: MPTConfig) -> PretrainedConfig:
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
        **special_tokens(config),
    )


def weights_to_native(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers' MPT uses MPT's own parameter names, which are ours.
    return {
        k: v for k, v in sd.items() if not (config.tie_word_embeddings and k == "lm_head.weight")
    }


# ---------------------------------------------------------------------- import
def config_from_native(raw: dict[str, Any]) -> MPTConfig:
    attn: dict[str, Any] = dict(raw.get("attn_config") or {})
    ffn: dict[str, Any] = dict(raw.get("ffn_config") or {})
    blockers: list[str] = []
    if attn.get("prefix_lm"):
        blockers.append("attn_config.prefix_lm=True")
    if attn.get("attn_type", "multihead_attention") == "multiquery_attention":
        attn["kv_n_heads"] = 1
    blockers += _ffn_blockers(ffn)
    hf_rope: dict[str, Any] = attn.get("rope_hf_config") or {}
    dail_rope: dict[str, Any] = attn.get("rope_dail_config") or {}
    if attn.get("rope") and attn.get("rope_impl", "dail") == "hf":
        if hf_rope.get("type", "no_scaling") not in ("no_scaling", "linear", "dynamic"):
            blockers.append(f"attn_config.rope_hf_config.type={hf_rope.get('type')!r}")
        elif hf_rope.get("type", "no_scaling") != "no_scaling":
            attn["rope_scaling"] = {"type": hf_rope["type"], "factor": hf_rope["factor"]}
    elif attn.get("rope") and dail_rope.get("type", "original") != "original":
        blockers.append("attn_config.rope_dail_config.type (only 'original' rotary)")
    norm = _norm_type(raw, blockers)
    if blockers:
        raise ExportError("this MPT checkpoint uses options foundry MPT does not have.", blockers)
    attn_config = {
        "attn_pdrop": float(attn.get("attn_pdrop", 0.0)),
        "softmax_scale": attn.get("softmax_scale"),
        "qk_ln": bool(attn.get("qk_ln", False)),
        "clip_qkv": attn.get("clip_qkv"),
        "kv_n_heads": attn.get("kv_n_heads"),
        "alibi": bool(attn.get("alibi", True)),
        "alibi_bias_max": attn.get("alibi_bias_max", 8),
        "rope": bool(attn.get("rope", False)),
        "rope_theta": float(attn.get("rope_theta", 10000.0)),
        "rope_scaling": attn.get("rope_scaling"),
        "sliding_window_size": _window(attn.get("sliding_window_size")),
        "attn_uses_sequence_id": bool(attn.get("attn_uses_sequence_id", False)),
    }
    if attn_config["alibi"] and attn_config["rope"]:
        attn_config["rope"] = False
    return MPTConfig(
        d_model=raw["d_model"],
        n_heads=raw["n_heads"],
        n_layers=raw["n_layers"],
        expansion_ratio=raw.get("expansion_ratio", 4),
        max_seq_len=raw.get("max_seq_len", 2048),
        vocab_size=raw["vocab_size"],
        resid_pdrop=float(raw.get("resid_pdrop", 0.0)),
        emb_pdrop=float(raw.get("emb_pdrop", 0.0)),
        no_bias=bool(raw.get("no_bias", True)),
        logit_scale=raw.get("logit_scale"),
        norm_type=norm,
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        attn_config=attn_config,
        ffn_config={
            "ffn_type": ffn.get("ffn_type", "mptmlp"),
            "ffn_hidden_size": ffn.get("ffn_hidden_size"),
        },
        **token_ids(raw),
    )


def _ffn_blockers(ffn: dict[str, Any]) -> list[str]:
    """llm-foundry's FFN options that foundry MPT reproduces exactly, else the blockers.

    llm-foundry's default activation is exact GELU for both FFN types, so its `mptglu` without
    `ffn_act_fn` is GeGLU; foundry's `mptglu` is SwiGLU (ffn_act_fn silu).
    """
    ffn_type = ffn.get("ffn_type", "mptmlp")
    act = dict(ffn.get("ffn_act_fn") or {"name": "gelu", "approximate": "none"})
    name, approximate = act.get("name"), act.get("approximate", "none")
    if ffn_type == "mptmlp" and (name, approximate) == ("gelu", "none"):
        return []
    if ffn_type == "mptglu" and name == "silu":
        return []
    return [
        f"ffn_config.ffn_type={ffn_type!r} with ffn_act_fn={act} (supported: mptmlp + "
        "exact gelu, mptglu + silu)"
    ]


def _window(value: Any) -> int | None:
    return None if value is None or value == -1 else int(value)


def weights_from_native(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' MPT names are ours; learned position embeddings are refused."""
    if any(k.startswith("transformer.wpe.") for k in state_dict):
        raise ExportError(
            "this MPT checkpoint has learned position embeddings (transformer.wpe).",
            ["learned_pos_emb=True"],
        )
    return dict(state_dict)
