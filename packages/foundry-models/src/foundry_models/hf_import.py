"""Import transformers MPT (incl. mosaicml/mpt-* layout) and Llama checkpoints as `MPTForCausalLM`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

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
            config, weights = _restore_source_config(saved, config, weights)
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
    saved: MPTConfig, derived: MPTConfig, weights: dict[str, torch.Tensor]
) -> tuple[MPTConfig, dict[str, torch.Tensor]]:
    """Prefer the exported source config when its shape agrees with the native one.

    Export folds an untied logit scale into lm_head; it is unfolded here.
    """
    for key in ("d_model", "n_heads", "n_layers", "vocab_size", "tie_word_embeddings"):
        if getattr(saved, key) != getattr(derived, key):
            return derived, weights
    scale = saved.resolved_logit_scale
    if scale is not None and "lm_head.weight" in weights:
        weights = {**weights, "lm_head.weight": weights["lm_head.weight"] / scale}
    return saved, weights


# ---------------------------------------------------------------------- config
def config_from_native(raw: dict[str, Any]) -> MPTConfig:
    """An `MPTConfig` equivalent to a transformers MPT or Llama config dict."""
    model_type = raw.get("model_type")
    if model_type == "mpt":
        return _config_from_mpt(raw)
    if model_type == "llama":
        return _config_from_llama(raw)
    raise ExportError(
        f"cannot import model_type={model_type!r}: import_hf reads transformers MPT ('mpt') and "
        "Llama ('llama') checkpoints, and foundry exports."
    )


def _tokens(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}


def _config_from_mpt(raw: dict[str, Any]) -> MPTConfig:
    attn: dict[str, Any] = dict(raw.get("attn_config") or {})
    ffn: dict[str, Any] = dict(raw.get("ffn_config") or {})
    blockers: list[str] = []
    if attn.get("prefix_lm"):
        blockers.append("attn_config.prefix_lm=True")
    if attn.get("attn_type", "multihead_attention") == "multiquery_attention":
        attn["kv_n_heads"] = 1
    blockers += _mpt_ffn_blockers(ffn)
    hf_rope: dict[str, Any] = attn.get("rope_hf_config") or {}
    dail_rope: dict[str, Any] = attn.get("rope_dail_config") or {}
    if attn.get("rope") and attn.get("rope_impl", "dail") == "hf":
        if hf_rope.get("type", "no_scaling") not in ("no_scaling", "linear", "dynamic"):
            blockers.append(f"attn_config.rope_hf_config.type={hf_rope.get('type')!r}")
        elif hf_rope.get("type", "no_scaling") != "no_scaling":
            attn["rope_scaling"] = {"type": hf_rope["type"], "factor": hf_rope["factor"]}
    elif attn.get("rope") and dail_rope.get("type", "original") != "original":
        blockers.append("attn_config.rope_dail_config.type (only 'original' rotary)")
    if blockers:
        raise ExportError("this MPT checkpoint uses options foundry MPT does not have.", blockers)
    norm = raw.get("norm_type", "low_precision_layernorm")
    norm = norm if norm in ("layernorm", "low_precision_layernorm", "rmsnorm") else "layernorm"
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
        "sliding_window_size": _mpt_window(attn.get("sliding_window_size")),
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
        **_tokens(raw),
    )


def _mpt_ffn_blockers(ffn: dict[str, Any]) -> list[str]:
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


def _mpt_window(value: Any) -> int | None:
    return None if value is None or value == -1 else int(value)


def _config_from_llama(raw: dict[str, Any]) -> MPTConfig:
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    blockers: list[str] = []
    if raw.get("hidden_act", "silu") != "silu":
        blockers.append(f"hidden_act={raw['hidden_act']!r} (needs 'silu')")
    if raw.get("head_dim") not in (None, hidden // heads):
        blockers.append(f"head_dim={raw['head_dim']} (needs hidden_size / num_attention_heads)")
    if bool(raw.get("attention_bias", False)) != bool(raw.get("mlp_bias", False)):
        blockers.append("attention_bias != mlp_bias (foundry MPT has one no_bias switch)")
    rope_theta, scaling = _llama_rope(raw, blockers)
    if blockers:
        raise ExportError("this Llama checkpoint uses options foundry MPT does not have.", blockers)
    max_len = raw.get("max_position_embeddings", 2048)
    if scaling is not None and scaling["type"] == "dynamic":
        scaling["original_max_seq_len"] = max_len
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
        **_tokens(raw),
    )


def _llama_rope(raw: dict[str, Any], blockers: list[str]) -> tuple[float, dict[str, Any] | None]:
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


# ---------------------------------------------------------------------- weights
def from_native_state_dict(
    config: MPTConfig, state_dict: dict[str, torch.Tensor], raw: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename (and for Llama fuse q/k/v) native weights into `MPTForCausalLM` names."""
    if raw.get("model_type") == "mpt":
        if any(k.startswith("transformer.wpe.") for k in state_dict):
            raise ExportError(
                "this MPT checkpoint has learned position embeddings (transformer.wpe).",
                ["learned_pos_emb=True"],
            )
        weights = dict(state_dict)
    else:
        weights = _from_llama(config, state_dict)
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return weights


def _from_llama(config: MPTConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
