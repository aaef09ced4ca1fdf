"""`MPTOptions`: the typed options of an MPT model, checked when they are built.

The fields are the schema. The layout on disk (config.json, a training YAML's
`model.config_overrides`) is llm-foundry's: top-level shape options, `norm_type` / `norm_eps`, and
three nested mappings `attn_config`, `ffn_config` and `init_config`. `MPTOptions.from_dict` reads
that layout (unknown keys, wrong types and bad values are reported together, each under its dotted
key, with what was expected and what was given) and `to_dict` writes it back.

    opts = MPTOptions.from_dict({"d_model": 256, "n_heads": 4, "attn_config": {"rope": True}})
    opts.attn.attn_impl   # "auto"
    MPTOptions.from_dict({"d_model": 65, "attn_config": {"attn_impl": "flsh"}})
    # MPTConfigError: d_model: expected a multiple of n_heads (16), got 65 (e.g. n_heads=13);
    #   attn_config.attn_impl: expected one of 'auto', 'torch', 'flash', 'triton', got 'flsh'
    #   (did you mean 'flash'?)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from foundry_models.attention import AttnImpl
from foundry_models.errors import MPTConfigError, OptionProblem
from foundry_models.option_checks import check_options, unknown_key_problems

__all__ = [
    "AttentionOptions",
    "FFNOptions",
    "InitOptions",
    "MPTOptions",
    "NormOptions",
]


@dataclass(frozen=True)
class AttentionOptions:
    """`attn_config`: attention implementation, position scheme, heads, window."""

    attn_impl: AttnImpl = "auto"
    attn_pdrop: float = 0.0
    softmax_scale: float | None = None
    qk_ln: bool = False
    clip_qkv: float | None = None
    kv_n_heads: int | None = None  # None: n_heads (multi-head); fewer: GQA, 1: MQA
    alibi: bool = True
    alibi_bias_max: float = 8
    rope: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    sliding_window_size: int | None = None  # None or -1: full attention
    attn_uses_sequence_id: bool = False


@dataclass(frozen=True)
class FFNOptions:
    """`ffn_config`: "mptmlp" (GELU MLP) or "mptglu" (SwiGLU), and its hidden size."""

    ffn_type: str = "mptmlp"
    ffn_hidden_size: int | None = None  # None: expansion_ratio * d_model


@dataclass(frozen=True)
class NormOptions:
    """`norm_type` and `norm_eps` (top-level keys on disk)."""

    norm_type: str = "low_precision_layernorm"
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class InitOptions:
    """`init_config`: how weights are initialised."""

    name: str = "kaiming_normal_"
    init_std: float = 0.02
    emb_init_std: float | None = None
    init_div_is_residual: bool = True
    fan_mode: str = "fan_in"
    init_nonlinearity: str = "relu"


SECTIONS: dict[str, type[Any]] = {
    "attn_config": AttentionOptions,
    "ffn_config": FFNOptions,
    "init_config": InitOptions,
}
_NORM_KEYS = ("norm_type", "norm_eps")


@dataclass(frozen=True)
class MPTOptions:
    """Every option of an MPT model, typed; invalid values raise `MPTConfigError` on construction.

    `attn`, `ffn`, `norm` and `init` are the sub-options (on disk: `attn_config`, `ffn_config`,
    top-level `norm_type`/`norm_eps`, `init_config`). The properties give values resolved against
    the shape: `head_dim`, `kv_heads`, `ffn_hidden`, `window`, `logit_multiplier`.
    """

    d_model: int = 2048
    n_heads: int = 16
    n_layers: int = 24
    expansion_ratio: float = 4
    max_seq_len: int = 2048
    vocab_size: int = 50368
    resid_pdrop: float = 0.0
    emb_pdrop: float = 0.0
    no_bias: bool = True
    logit_scale: float | str | None = None  # a number or "inv_sqrt_d_model"
    tie_word_embeddings: bool = True
    use_cache: bool = True
    loss_chunk_size: int | None = None
    attn: AttentionOptions = field(default_factory=AttentionOptions)
    ffn: FFNOptions = field(default_factory=FFNOptions)
    norm: NormOptions = field(default_factory=NormOptions)
    init: InitOptions = field(default_factory=InitOptions)

    def __post_init__(self) -> None:
        flat = self.to_dict()
        problems = check_options(flat)
        if problems:
            raise MPTConfigError.from_problems(problems)
        if flat["attn_config"]["rope_scaling"] != self.attn.rope_scaling:
            # defaults of the scaling type filled in, original_max_seq_len pinned
            attn = dataclasses.replace(self.attn, rope_scaling=flat["attn_config"]["rope_scaling"])
            object.__setattr__(self, "attn", attn)

    # ------------------------------------------------------------------ the on-disk layout
    @classmethod
    def from_dict(cls, data: object, base: MPTOptions | None = None) -> MPTOptions:
        """Options from llm-foundry's layout, laid over `base` (default: the defaults).

        A nested section given as a mapping updates only the keys it names. Every problem
        (unknown key with a did-you-mean, wrong type, bad value) is reported in one
        `MPTConfigError`, whose `problems` list each one with its dotted key.
        """
        if not isinstance(data, dict):
            raise MPTConfigError.from_problems(
                [OptionProblem("", "a mapping of MPT option names to values", data)]
            )
        given: dict[str, Any] = {str(k): v for k, v in data.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        merged = (base or cls()).to_dict()
        problems = unknown_key_problems(given, merged)
        for key, value in given.items():
            if key in SECTIONS:
                if isinstance(value, dict):  # else reported above
                    merged[key] = {**merged[key], **value}
            elif key in merged:
                merged[key] = value
        problems += check_options(merged)
        if problems:
            raise MPTConfigError.from_problems(problems)
        return cls._build(merged)

    @classmethod
    def _build(cls, flat: dict[str, Any]) -> MPTOptions:
        """Options from an already-checked flat mapping."""
        top = {k: v for k, v in flat.items() if k not in SECTIONS and k not in _NORM_KEYS}
        return cls(
            **top,
            attn=AttentionOptions(**flat["attn_config"]),
            ffn=FFNOptions(**flat["ffn_config"]),
            norm=NormOptions(**{k: flat[k] for k in _NORM_KEYS}),
            init=InitOptions(**flat["init_config"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """llm-foundry's layout: top-level options, norm keys, and the three nested sections."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("attn", "ffn", "norm", "init"):
                continue
            out[f.name] = getattr(self, f.name)
        out.update(dataclasses.asdict(self.norm))
        out["attn_config"] = dataclasses.asdict(self.attn)
        out["ffn_config"] = dataclasses.asdict(self.ffn)
        out["init_config"] = dataclasses.asdict(self.init)
        return out

    def replace(self, **changes: Any) -> MPTOptions:
        """A copy with `changes` applied in the on-disk layout (sections merged key by key)."""
        return MPTOptions.from_dict(changes, base=self)

    # ------------------------------------------------------------------ resolved values
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.attn.kv_n_heads or self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.ffn.ffn_hidden_size or round(self.expansion_ratio * self.d_model)

    @property
    def window(self) -> int | None:
        """The sliding window in tokens (query i sees keys j with i - j <= window), or None."""
        w = self.attn.sliding_window_size
        return None if w is None or w == -1 else w

    @property
    def logit_multiplier(self) -> float | None:
        if self.logit_scale is None:
            return None
        if self.logit_scale == "inv_sqrt_d_model":
            return 1.0 / math.sqrt(self.d_model)
        return float(self.logit_scale)
