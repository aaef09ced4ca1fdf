"""`MPTConfig`: the transformers face of `MPTOptions` (config.json, `from_pretrained`, Auto classes).

The layout follows llm-foundry's MPT config (users' YAML files carry over): top-level shape options
plus three nested dicts, `attn_config`, `ffn_config` and `init_config`. The nested dicts are stored
(and serialised to config.json) with every key filled in. The typed options are
`config.options` (an `MPTOptions`); `config.attn_options`, `ffn_options` and `init_options` are
its sub-options with values resolved against the shape (`kv_n_heads` filled in, a -1 window as
None, the FFN hidden size computed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

from foundry_models.attention import ATTN_IMPLS
from foundry_models.errors import MPTConfigError
from foundry_models.option_checks import FFN_TYPES, INIT_SCHEMES, NORM_TYPES, ROPE_SCALING_TYPES
from foundry_models.options import (
    AttentionOptions,
    FFNOptions,
    InitOptions,
    MPTOptions,
)

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

# config attributes that are options: setting one later is checked (and merged, for sections)
_PLAIN_FLAGS = frozenset({"tie_word_embeddings", "use_cache"})
_OPTION_KEYS = frozenset(MPTOptions().to_dict()) - _PLAIN_FLAGS
_STATE = ("_foundry_validated", "_foundry_options")


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

    The options are held as an `MPTOptions` (`config.options`), whose checks run here: invalid
    values and combinations raise `MPTConfigError` (every problem, with its dotted key), not at
    the first forward. `MPTConfig.from_options(opts)` builds a config from options.
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
        given: dict[str, Any] = {
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": n_layers,
            "expansion_ratio": expansion_ratio,
            "max_seq_len": max_seq_len,
            "vocab_size": vocab_size,
            "resid_pdrop": resid_pdrop,
            "emb_pdrop": emb_pdrop,
            "no_bias": no_bias,
            "logit_scale": logit_scale,
            "norm_type": norm_type,
            "norm_eps": norm_eps,
            "tie_word_embeddings": tie_word_embeddings,
            "use_cache": use_cache,
            "loss_chunk_size": loss_chunk_size,
        }
        sections = {
            "attn_config": attn_config,
            "ffn_config": ffn_config,
            "init_config": init_config,
        }
        given.update({k: v for k, v in sections.items() if v is not None})
        self._store(MPTOptions.from_dict(given))
        kwargs["tie_word_embeddings"] = tie_word_embeddings
        super().__init__(**kwargs)
        self.__dict__["_foundry_validated"] = True

    @classmethod
    def from_options(cls, options: MPTOptions, **kwargs: Any) -> MPTConfig:
        """The config of `options` (`kwargs`: other `PretrainedConfig` fields, e.g. token ids)."""
        return cls(**options.to_dict(), **kwargs)

    def set_options(self, options: MPTOptions) -> None:
        """Replace every MPT option at once (other `PretrainedConfig` fields are kept)."""
        self._store(options)
        # _store leaves this flag to PretrainedConfig.__init__; after it, set it here
        self._config_setattr("tie_word_embeddings", options.tie_word_embeddings)

    @property
    def options(self) -> MPTOptions:
        """The typed options of this config."""
        return self.__dict__["_foundry_options"]

    def _store(self, options: MPTOptions) -> None:
        """Hold `options` and mirror them as the config's attributes (the config.json layout)."""
        self.__dict__["_foundry_options"] = options
        for key, value in options.to_dict().items():
            if key != "tie_word_embeddings":
                self._config_setattr(key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        key = self.attribute_map.get(key, key)
        validated = self.__dict__.get("_foundry_validated")
        if key in _PLAIN_FLAGS and validated and isinstance(value, bool):
            # set by transformers too (generate, tying): kept in step with the options
            self.__dict__["_foundry_options"] = dataclasses.replace(self.options, **{key: value})
        if key not in _OPTION_KEYS or not validated:
            self._config_setattr(key, value)
            return
        # checked before anything changes: an invalid value leaves the config as it was
        self._store(MPTOptions.from_dict({key: value}, base=self.options))

    def _config_setattr(self, key: str, value: Any) -> None:
        """`PretrainedConfig.__setattr__` (it resolves `attribute_map` aliases)."""
        # transformers leaves the parameters of PretrainedConfig.__setattr__ unannotated
        super().__setattr__(key, value)  # pyright: ignore[reportUnknownMemberType]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in _STATE:
            out.pop(key, None)
        return out

    # ------------------------------------------------------------------ typed views
    @property
    def head_dim(self) -> int:
        return self.options.head_dim

    @property
    def attn_options(self) -> AttentionOptions:
        """Attention options with `kv_n_heads` filled in and a -1 window as None."""
        o = self.options
        return dataclasses.replace(o.attn, kv_n_heads=o.kv_heads, sliding_window_size=o.window)

    @property
    def ffn_options(self) -> FFNOptions:
        """FFN options with `ffn_hidden_size` resolved (from `expansion_ratio` when unset)."""
        return dataclasses.replace(self.options.ffn, ffn_hidden_size=self.options.ffn_hidden)

    @property
    def init_options(self) -> InitOptions:
        return self.options.init

    @property
    def resolved_logit_scale(self) -> float | None:
        return self.options.logit_multiplier
