"""`MPTConfig`: the configuration of an MPT-style decoder, validated when it is built.

The layout follows llm-foundry's MPT config (users' YAML files carry over): top-level shape options
plus three nested dicts, `attn_config`, `ffn_config` and `init_config`. The nested dicts are stored
(and serialised to config.json) with every key filled in; typed, frozen views of them are
available as `config.attn_options`, `config.ffn_options` and `config.init_options`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from transformers import PretrainedConfig

from foundry_models.attention import ATTN_IMPLS, AttnImpl
from foundry_models.errors import MPTConfigError

__all__ = [
    "ATTN_IMPLS",
    "FFN_TYPES",
    "INIT_SCHEMES",
    "NORM_TYPES",
    "ROPE_SCALING_TYPES",
    "AttentionOptions",
    "FFNOptions",
    "InitOptions",
    "MPTConfig",
]

NORM_TYPES = ("layernorm", "low_precision_layernorm", "rmsnorm")
FFN_TYPES = ("mptmlp", "mptglu")
INIT_SCHEMES = (
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "small_init_",
    "xavier_normal_",
    "xavier_uniform_",
)
ROPE_SCALING_TYPES = ("linear", "dynamic", "llama3")

ATTN_DEFAULTS: dict[str, Any] = {
    "attn_impl": "auto",
    "attn_pdrop": 0.0,
    "softmax_scale": None,
    "qk_ln": False,
    "clip_qkv": None,
    "kv_n_heads": None,
    "alibi": True,
    "alibi_bias_max": 8,
    "rope": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "sliding_window_size": None,
    "attn_uses_sequence_id": False,
}
FFN_DEFAULTS: dict[str, Any] = {"ffn_type": "mptmlp", "ffn_hidden_size": None}
INIT_DEFAULTS: dict[str, Any] = {
    "name": "kaiming_normal_",
    "init_std": 0.02,
    "emb_init_std": None,
    "init_div_is_residual": True,
    "fan_mode": "fan_in",
    "init_nonlinearity": "relu",
}
_ROPE_SCALING_KEYS: dict[str, dict[str, Any]] = {
    # key -> default (None: required)
    "linear": {"factor": None},
    "dynamic": {"factor": None, "original_max_seq_len": None},
    "llama3": {
        "factor": None,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_seq_len": None,
    },
}
_KEY_HINTS = {
    ("ffn_config", "expansion_ratio"): "set expansion_ratio at the top level of the model config",
    ("attn_config", "sliding_window"): "the key is named sliding_window_size",
    ("attn_config", "n_kv_heads"): "the key is named kv_n_heads",
}


@dataclass(frozen=True)
class AttentionOptions:
    """Typed view of `attn_config`."""

    attn_impl: AttnImpl
    attn_pdrop: float
    softmax_scale: float | None
    qk_ln: bool
    clip_qkv: float | None
    kv_n_heads: int
    alibi: bool
    alibi_bias_max: int
    rope: bool
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    sliding_window_size: int | None
    attn_uses_sequence_id: bool


@dataclass(frozen=True)
class FFNOptions:
    """Typed view of `ffn_config` (with the hidden size resolved)."""

    ffn_type: str
    hidden_size: int


@dataclass(frozen=True)
class InitOptions:
    """Typed view of `init_config`."""

    name: str
    init_std: float
    emb_init_std: float | None
    init_div_is_residual: bool
    fan_mode: Literal["fan_in", "fan_out"]
    init_nonlinearity: Literal["relu", "leaky_relu", "linear"]


def _merge_section(
    section: str,
    given: object,
    defaults: dict[str, Any],
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`given` laid over `base` (default: the defaults); unknown keys are an error.

    `given` is whatever the user passed (None, or a dict of options); anything else is an error.
    """
    base = defaults if base is None else base
    if given is None:
        return dict(base)
    if not _is_dict(given):
        raise MPTConfigError(
            f"{section} must be a mapping of option names to values, got {type(given).__name__}. "
            f"Pass e.g. {section}={{...}} with keys from: {', '.join(sorted(defaults))}."
        )
    unknown = [k for k in given if k not in defaults]
    if unknown:
        parts: list[str] = []
        for key in unknown:
            hint = _KEY_HINTS.get((section, key))
            if hint is None:
                close = difflib.get_close_matches(key, list(defaults), n=1)
                hint = f"did you mean {close[0]!r}?" if close else None
            parts.append(f"{section}.{key}" + (f" ({hint})" if hint else ""))
        raise MPTConfigError(
            f"unknown option(s) {', '.join(parts)}. Valid {section} keys are: "
            f"{', '.join(sorted(defaults))}."
        )
    merged = dict(base)
    merged.update(given)
    return merged


_SECTION_DEFAULTS = {
    "attn_config": ATTN_DEFAULTS,
    "ffn_config": FFN_DEFAULTS,
    "init_config": INIT_DEFAULTS,
}
_VALIDATED = {
    "d_model",
    "n_heads",
    "n_layers",
    "expansion_ratio",
    "max_seq_len",
    "vocab_size",
    "resid_pdrop",
    "emb_pdrop",
    "logit_scale",
    "norm_type",
    "norm_eps",
    *_SECTION_DEFAULTS,
}


class MPTConfig(PretrainedConfig):
    """Configuration of an MPT-style causal language model (`model_type="foundry_mpt"`).

    Args:
        d_model: width of the residual stream.
        n_heads: number of query heads; `d_model` must be a multiple of it.
        n_layers: number of transformer blocks.
        expansion_ratio: FFN hidden size as a multiple of `d_model` (ignored when
            `ffn_config["ffn_hidden_size"]` is given).
        max_seq_len: longest sequence the model accepts; it can be raised at load time
            (`from_pretrained(path, max_seq_len=...)`) since no weight depends on it.
        vocab_size: number of embedding rows.
        resid_pdrop, emb_pdrop: dropout on residual branches and on the embeddings.
        no_bias: drop every bias (linear layers and norms), as MPT's published models do.
        logit_scale: multiply the logits by this number, or "inv_sqrt_d_model".
        norm_type: "layernorm", "low_precision_layernorm" (runs in the autocast dtype) or "rmsnorm".
        norm_eps: epsilon of the norms.
        tie_word_embeddings: share the embedding matrix with the output projection.
        loss_chunk_size: when set, the training loss (labels given, model in training mode) is
            computed by `foundry_models.loss.chunked_linear_cross_entropy` over chunks of this
            many positions, never materialising full logits (the output's `logits` is then None).
        attn_config: attn_impl ("auto" | "torch" | "flash" | "triton"; "auto", the default, picks
            flash, else triton on CUDA, else torch: `foundry_models.attention.choose_impl`), attn_pdrop, softmax_scale, qk_ln,
            clip_qkv, kv_n_heads (GQA/MQA; default n_heads), alibi, alibi_bias_max, rope,
            rope_theta, rope_scaling ({"type": "linear" | "dynamic" | "llama3", "factor": ...}),
            sliding_window_size, attn_uses_sequence_id.
        ffn_config: ffn_type ("mptmlp" = GELU MLP, "mptglu" = SwiGLU), ffn_hidden_size.
        init_config: name (kaiming_normal_, kaiming_uniform_, normal_, small_init_, xavier_normal_,
            xavier_uniform_), init_std, emb_init_std, init_div_is_residual, fan_mode,
            init_nonlinearity.

    Invalid values and combinations raise `MPTConfigError` here, not at the first forward.
    Options set later (`config.max_seq_len = 8192`, or `from_pretrained(path, max_seq_len=...)`)
    are validated again; assigning a dict to a section updates only the keys it names, so
    `from_pretrained(path, attn_config={"attn_impl": "torch"})` keeps the other attention options.
    """

    model_type = "foundry_mpt"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(
        self,
        d_model: int = 2048,
        n_heads: int = 16,
        n_layers: int = 24,
        expansion_ratio: float = 4,
        max_seq_len: int = 2048,
        vocab_size: int = 50368,
        resid_pdrop: float = 0.0,
        emb_pdrop: float = 0.0,
        no_bias: bool = True,
        logit_scale: float | str | None = None,
        norm_type: str = "low_precision_layernorm",
        norm_eps: float = 1e-5,
        tie_word_embeddings: bool = True,
        attn_config: dict[str, Any] | None = None,
        ffn_config: dict[str, Any] | None = None,
        init_config: dict[str, Any] | None = None,
        use_cache: bool = True,
        loss_chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("learned_pos_emb", False):
            raise MPTConfigError(
                "learned_pos_emb=True is not supported: foundry MPT models position tokens with "
                "ALiBi (attn_config.alibi) or RoPE (attn_config.rope). Remove learned_pos_emb."
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.expansion_ratio = expansion_ratio
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.resid_pdrop = resid_pdrop
        self.emb_pdrop = emb_pdrop
        self.no_bias = no_bias
        self.logit_scale = logit_scale
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        self.loss_chunk_size = loss_chunk_size
        self.attn_config = _merge_section("attn_config", attn_config, ATTN_DEFAULTS)
        self.ffn_config = _merge_section("ffn_config", ffn_config, FFN_DEFAULTS)
        self.init_config = _merge_section("init_config", init_config, INIT_DEFAULTS)
        self._validate()
        kwargs["tie_word_embeddings"] = tie_word_embeddings
        super().__init__(**kwargs)
        self.__dict__["_foundry_validated"] = True

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _SECTION_DEFAULTS and _is_dict(value):
            current = self.__dict__.get(key)
            value = _merge_section(key, value, _SECTION_DEFAULTS[key], base=current)
        if key not in _VALIDATED or not self.__dict__.get("_foundry_validated"):
            self._config_setattr(key, value)
            return
        previous = self.__dict__.get(key)
        self._config_setattr(key, value)
        try:
            self._validate()
        except MPTConfigError:
            self._config_setattr(key, previous)  # leave the config as it was
            raise

    def _config_setattr(self, key: str, value: Any) -> None:
        """`PretrainedConfig.__setattr__` (it resolves `attribute_map` aliases)."""
        # transformers leaves the parameters of PretrainedConfig.__setattr__ unannotated
        super().__setattr__(key, value)  # pyright: ignore[reportUnknownMemberType]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_foundry_validated", None)
        return out

    # ------------------------------------------------------------------ typed views
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def attn_options(self) -> AttentionOptions:
        a = self.attn_config
        return AttentionOptions(
            attn_impl=a["attn_impl"],
            attn_pdrop=float(a["attn_pdrop"]),
            softmax_scale=None if a["softmax_scale"] is None else float(a["softmax_scale"]),
            qk_ln=bool(a["qk_ln"]),
            clip_qkv=None if a["clip_qkv"] is None else float(a["clip_qkv"]),
            kv_n_heads=int(a["kv_n_heads"] or self.n_heads),
            alibi=bool(a["alibi"]),
            alibi_bias_max=int(a["alibi_bias_max"]),
            rope=bool(a["rope"]),
            rope_theta=float(a["rope_theta"]),
            rope_scaling=a["rope_scaling"],
            sliding_window_size=_window(a["sliding_window_size"]),
            attn_uses_sequence_id=bool(a["attn_uses_sequence_id"]),
        )

    @property
    def ffn_options(self) -> FFNOptions:
        f = self.ffn_config
        hidden = f["ffn_hidden_size"] or round(self.expansion_ratio * self.d_model)
        return FFNOptions(ffn_type=f["ffn_type"], hidden_size=int(hidden))

    @property
    def init_options(self) -> InitOptions:
        i = self.init_config
        return InitOptions(
            name=i["name"],
            init_std=float(i["init_std"]),
            emb_init_std=None if i["emb_init_std"] is None else float(i["emb_init_std"]),
            init_div_is_residual=bool(i["init_div_is_residual"]),
            fan_mode=i["fan_mode"],
            init_nonlinearity=i["init_nonlinearity"],
        )

    @property
    def resolved_logit_scale(self) -> float | None:
        if self.logit_scale is None:
            return None
        if self.logit_scale == "inv_sqrt_d_model":
            return 1.0 / math.sqrt(self.d_model)
        return float(self.logit_scale)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        problems: list[str] = []
        problems += self._shape_problems()
        problems += self._attention_problems()
        problems += self._ffn_and_norm_problems()
        problems += self._init_problems()
        if problems:
            raise MPTConfigError(
                "invalid MPTConfig: " + "; ".join(problems) + ". Fix these options and try again."
            )

    def _shape_problems(self) -> list[str]:
        out: list[str] = []
        for name in ("d_model", "n_heads", "n_layers", "max_seq_len", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                out.append(f"{name} must be a positive integer, got {value!r}")
        if not out and self.d_model % self.n_heads:
            out.append(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads}); "
                f"e.g. n_heads={_divisor_hint(self.d_model, self.n_heads)}"
            )
        chunk = getattr(self, "loss_chunk_size", None)
        if chunk is not None and (
            not isinstance(chunk, int) or isinstance(chunk, bool) or chunk <= 0
        ):
            out.append(f"loss_chunk_size must be a positive integer or None, got {chunk!r}")
        if not _is_number(self.expansion_ratio) or self.expansion_ratio <= 0:
            out.append(f"expansion_ratio must be a positive number, got {self.expansion_ratio!r}")
        for name in ("resid_pdrop", "emb_pdrop"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                out.append(f"{name} must be in [0, 1), got {value!r}")
        scale: Any = self.logit_scale
        if (
            scale is not None
            and scale != "inv_sqrt_d_model"
            and (not _is_number(scale) or scale <= 0)
        ):
            out.append(
                f"logit_scale must be a positive number or 'inv_sqrt_d_model', got {scale!r}"
            )
        return out

    def _attention_problems(self) -> list[str]:
        a = self.attn_config
        out: list[str] = []
        if a["attn_impl"] not in ATTN_IMPLS:
            out.append(f"attn_config.attn_impl must be one of {ATTN_IMPLS}, got {a['attn_impl']!r}")
        pdrop = a["attn_pdrop"]
        if not _is_number(pdrop) or not 0.0 <= pdrop < 1.0:
            out.append(f"attn_config.attn_pdrop must be in [0, 1), got {pdrop!r}")
        elif pdrop > 0 and a["attn_impl"] not in ("torch", "auto"):
            out.append(
                f"attn_config.attn_pdrop={pdrop} needs attn_impl='torch' (the {a['attn_impl']} "
                "kernels have no attention dropout); set attn_pdrop=0 or attn_impl to 'auto' or 'torch'"
            )
        kv = a["kv_n_heads"]
        if kv is not None and (not isinstance(kv, int) or kv <= 0 or self.n_heads % kv):
            out.append(
                f"attn_config.kv_n_heads ({kv!r}) must be a positive divisor of n_heads "
                f"({self.n_heads})"
            )
        if a["softmax_scale"] is not None and (
            not _is_number(a["softmax_scale"]) or a["softmax_scale"] <= 0
        ):
            out.append(f"attn_config.softmax_scale must be positive, got {a['softmax_scale']!r}")
        if a["clip_qkv"] is not None and (not _is_number(a["clip_qkv"]) or a["clip_qkv"] <= 0):
            out.append(f"attn_config.clip_qkv must be positive, got {a['clip_qkv']!r}")
        if a["alibi"] and a["rope"]:
            out.append(
                "attn_config.alibi and attn_config.rope are both true; a model uses one position "
                "scheme, so set one of them to false"
            )
        if not _is_number(a["alibi_bias_max"]) or a["alibi_bias_max"] <= 0:
            out.append(f"attn_config.alibi_bias_max must be positive, got {a['alibi_bias_max']!r}")
        if not _is_number(a["rope_theta"]) or a["rope_theta"] <= 0:
            out.append(f"attn_config.rope_theta must be positive, got {a['rope_theta']!r}")
        if a["rope"] and self.d_model % self.n_heads == 0 and self.head_dim % 2:
            out.append(f"attn_config.rope needs an even head dim, got {self.head_dim}")
        out += self._rope_scaling_problems()
        window = a["sliding_window_size"]
        if (
            window is not None
            and window != -1
            and (not isinstance(window, int) or isinstance(window, bool) or window <= 0)
        ):
            out.append(
                f"attn_config.sliding_window_size must be a positive integer (or -1/None for "
                f"full attention), got {window!r}"
            )
        return out

    def _rope_scaling_problems(self) -> list[str]:
        a = self.attn_config
        scaling = a["rope_scaling"]
        if scaling is None:
            return []
        if not a["rope"]:
            return ["attn_config.rope_scaling is set but attn_config.rope is false; enable rope"]
        if not _is_dict(scaling) or scaling.get("type") not in ROPE_SCALING_TYPES:
            return [
                f"attn_config.rope_scaling must be a mapping with 'type' in {ROPE_SCALING_TYPES}, "
                f"got {scaling!r}"
            ]
        spec = _ROPE_SCALING_KEYS[scaling["type"]]
        unknown = sorted(set(scaling) - set(spec) - {"type"})
        if unknown:
            return [
                f"attn_config.rope_scaling has unknown key(s) {unknown} for type "
                f"{scaling['type']!r}; valid keys: {sorted(spec)}"
            ]
        filled: dict[str, Any] = {"type": scaling["type"], **spec, **scaling}
        if "original_max_seq_len" in filled and filled["original_max_seq_len"] is None:
            # Pin the pre-scaling length now, so raising max_seq_len later does not move it.
            filled["original_max_seq_len"] = self.max_seq_len
        out = [
            f"attn_config.rope_scaling.{k} must be a positive number, got {v!r}"
            for k, v in filled.items()
            if k != "type" and (not _is_number(v) or v <= 0)
        ]
        if _is_number(filled["factor"]) and filled["factor"] < 1:
            out.append(f"attn_config.rope_scaling.factor must be >= 1, got {filled['factor']!r}")
        if (
            filled["type"] == "llama3"
            and not out
            and (filled["high_freq_factor"] <= filled["low_freq_factor"])
        ):
            out.append("attn_config.rope_scaling.high_freq_factor must exceed low_freq_factor")
        a["rope_scaling"] = filled
        return out

    def _ffn_and_norm_problems(self) -> list[str]:
        f = self.ffn_config
        out: list[str] = []
        if f["ffn_type"] not in FFN_TYPES:
            out.append(
                f"ffn_config.ffn_type must be one of {FFN_TYPES} ('mptmlp' = GELU MLP, "
                f"'mptglu' = SwiGLU), got {f['ffn_type']!r}"
            )
        hidden = f["ffn_hidden_size"]
        if hidden is not None and (not isinstance(hidden, int) or hidden <= 0):
            out.append(f"ffn_config.ffn_hidden_size must be a positive integer, got {hidden!r}")
        elif hidden is None and _is_number(self.expansion_ratio) and _is_int(self.d_model):
            product = self.expansion_ratio * self.d_model
            if abs(product - round(product)) > 1e-6:
                out.append(
                    f"expansion_ratio * d_model = {product} is not an integer; pick another "
                    "expansion_ratio or set ffn_config.ffn_hidden_size"
                )
        if self.norm_type not in NORM_TYPES:
            out.append(f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if not _is_number(self.norm_eps) or self.norm_eps <= 0:
            out.append(f"norm_eps must be positive, got {self.norm_eps!r}")
        return out

    def _init_problems(self) -> list[str]:
        i = self.init_config
        out: list[str] = []
        if i["name"] not in INIT_SCHEMES:
            out.append(f"init_config.name must be one of {INIT_SCHEMES}, got {i['name']!r}")
        if not _is_number(i["init_std"]) or i["init_std"] <= 0:
            out.append(f"init_config.init_std must be positive, got {i['init_std']!r}")
        if i["emb_init_std"] is not None and (
            not _is_number(i["emb_init_std"]) or i["emb_init_std"] <= 0
        ):
            out.append(f"init_config.emb_init_std must be positive, got {i['emb_init_std']!r}")
        if i["fan_mode"] not in ("fan_in", "fan_out"):
            out.append(f"init_config.fan_mode must be 'fan_in' or 'fan_out', got {i['fan_mode']!r}")
        if i["init_nonlinearity"] not in ("relu", "leaky_relu", "linear"):
            out.append(
                "init_config.init_nonlinearity must be 'relu', 'leaky_relu' or 'linear', "
                f"got {i['init_nonlinearity']!r}"
            )
        return out


def _is_dict(value: object) -> TypeGuard[dict[str, Any]]:
    """A dict of options (keys are option names, so `str`; values are checked by the caller)."""
    return isinstance(value, dict)


def _is_int(value: object) -> bool:
    """`isinstance(value, int)`, for options validated before their annotation is trusted."""
    return isinstance(value, int)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _window(value: int | None) -> int | None:
    return None if value is None or value == -1 else int(value)


def _divisor_hint(d_model: int, n_heads: int) -> int:
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    return min(divisors, key=lambda h: abs(h - n_heads))
