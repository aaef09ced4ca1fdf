"""`MPTModel` and `MPTForCausalLM`: transformers `PreTrainedModel`s for foundry MPT configs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint  # pyright: ignore[reportUnknownVariableType]
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from foundry_models.attention import alibi_slopes
from foundry_models.blocks import AttentionContext, MPTBlock
from foundry_models.config import MPTConfig
from foundry_models.errors import FoundryError
from foundry_models.initialization import init_module_
from foundry_models.loss import chunked_cross_entropy_sum, chunked_linear_cross_entropy
from foundry_models.norms import build_norm
from foundry_models.rope import rope_cos_sin, rope_inv_freq

__all__ = ["MPTForCausalLM", "MPTModel", "MPTPreTrainedModel"]

_SCORING_CHUNK = 8192  # positions a chunk when scoring without logits and no loss_chunk_size
# transformers >= 5.2x names the output's cache field `cache`; earlier versions `past_key_values`.
_CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)


class MPTPreTrainedModel(PreTrainedModel):
    config: MPTConfig
    config_class = MPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MPTBlock"]  # noqa: RUF012
    _supports_cache_class = True

    def _init_weights(self, module: nn.Module) -> None:
        init_module_(module, self.config)


class MPTModel(MPTPreTrainedModel):
    """Embedding, `n_layers` blocks and the final norm; returns hidden states."""

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)  # pyright: ignore[reportUnknownMemberType]
        self.wte: nn.Embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.emb_drop = nn.Dropout(config.emb_pdrop)
        self.blocks = nn.ModuleList(MPTBlock(config, i) for i in range(config.n_layers))
        bias = not config.no_bias
        self.norm_f = build_norm(config.norm_type, config.d_model, config.norm_eps, bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.wte = cast(nn.Embedding, value)  # transformers passes the resized embedding

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sequence_id: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        config = self.config
        x = self._embed(input_ids, inputs_embeds)
        t = x.shape[1]
        checkpointing = (
            self.training
            and torch.is_grad_enabled()
            and any(blk.gradient_checkpointing for blk in self.blocks)
        )
        if use_cache is None:
            use_cache = bool(config.use_cache) and not self.training
        cache = _as_cache(cache if cache is not None else past_key_values, use_cache)
        if checkpointing:  # a recomputed block would append to the cache twice
            use_cache, cache = False, None
        past = cache.get_seq_length() if cache is not None else 0
        _check_length(past + t, config.max_seq_len)
        ctx = self._attention_context(x, attention_mask, sequence_id, position_ids, cache, past)
        hidden_states: list[torch.Tensor] = []
        for block in self.blocks:
            if output_hidden_states:
                hidden_states.append(x)
            if checkpointing and block.gradient_checkpointing:
                fn: Callable[..., torch.Tensor] = getattr(
                    block, "_gradient_checkpointing_func", None
                ) or functools.partial(checkpoint, use_reentrant=False)
                x = fn(block.__call__, x, ctx)
            else:
                x = block(x, ctx)
        x = self.norm_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        fields: dict[str, Any] = {_CACHE_FIELD: cache if use_cache else None}
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            **fields,
        )

    def _attention_context(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        sequence_id: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        cache: Cache | None,
        past: int,
    ) -> AttentionContext:
        """What every block's attention reads: masks, packed-sequence ids, ALiBi, RoPE."""
        config = self.config
        b, t = x.shape[:2]
        ctx = AttentionContext(cache=cache)
        ctx.key_padding_mask = _key_padding_mask(attention_mask, b, past + t)
        opts = config.attn_options
        if opts.attn_uses_sequence_id and sequence_id is not None:
            if past > 0:
                raise ValueError("sequence_id cannot be combined with a KV cache")
            ctx.sequence_id = sequence_id
        if opts.alibi:
            ctx.alibi_slopes = self._alibi_slopes(x.device)
            ctx.alibi_bias_max = opts.alibi_bias_max
        if opts.rope:
            positions = _positions(position_ids, ctx.sequence_id, b, t, past, x.device)
            seq_len = past + t  # only "dynamic" scaling reads it; avoid a device sync otherwise
            dynamic = opts.rope_scaling is not None and opts.rope_scaling["type"] == "dynamic"
            if dynamic and position_ids is not None:
                seq_len = int(positions.max()) + 1
            inv_freq = rope_inv_freq(
                config.head_dim,
                opts.rope_theta,
                opts.rope_scaling,
                seq_len=seq_len,
                device=x.device,
            )
            ctx.rope_cos_sin = rope_cos_sin(positions, inv_freq, x.dtype)
        return ctx

    def _alibi_slopes(self, device: torch.device) -> torch.Tensor:
        """MPT's slopes on `device`, built once (kernels key per-tensor work on this object)."""
        key = (device, self.config.n_heads, self.config.attn_options.alibi_bias_max)
        cached = self.__dict__.get("_alibi_slopes_cache")
        if cached is None or cached[0] != key:
            cached = (key, alibi_slopes(key[1], key[2], device=device))
            self.__dict__["_alibi_slopes_cache"] = cached
        return cached[1]

    def _embed(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        return self.emb_drop(x)


class MPTForCausalLM(MPTPreTrainedModel, GenerationMixin):
    """MPT decoder with a language-modelling head (tied to `wte` unless configured otherwise).

    Build on the meta device for FSDP, then materialise and initialise explicitly::

        with torch.device("meta"):
            model = MPTForCausalLM(config)
        model.to_empty(device="cuda")
        model.init_weights_()

    or leave it on the meta device and let FSDP materialise it one wrapped unit at a time:
    composer's FSDP wrapper calls `param_init_fn` on each module it moves off the meta device,
    so no rank ever holds the whole unsharded model.
    """

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)  # pyright: ignore[reportUnknownMemberType]
        self.transformer = MPTModel(config)
        self.lm_head: nn.Linear | None = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.transformer.wte = cast(nn.Embedding, value)  # transformers passes the resized one

    def get_output_embeddings(self) -> nn.Linear | None:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sequence_id: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        cache: Cache | None = None,
        return_logits: bool = True,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for every position; with `labels` also the mean next-token loss.

        Labels are shifted inside (pass `labels=input_ids`), -100 is ignored. `sequence_id`
        (B, T) keeps packed sequences from attending to each other when
        `attn_config.attn_uses_sequence_id` is set. `return_logits=False` with `labels` computes
        only the loss, position chunk by chunk (`loss_chunk_size`, else 8192): `logits` is None
        and the (B, T, V) logits never exist, as in training with `loss_chunk_size`; this is how
        evaluation scores long sequences.
        """
        out = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            sequence_id=sequence_id,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        chunk = self.config.loss_chunk_size
        fusable = "num_items_in_batch" not in kwargs and (
            (chunk and self.training) or not return_logits
        )
        if labels is not None and fusable:
            # Fused head + loss: the (B, T, V) logits are never materialised.
            loss = self._chunked_loss(h, labels, chunk or _SCORING_CHUNK)
            logits = None
        else:
            logits = self._logits(h)
            loss = None
            if labels is not None:
                loss = causal_lm_loss(logits, labels, kwargs.get("num_items_in_batch"))
        fields: dict[str, Any] = {_CACHE_FIELD: getattr(out, _CACHE_FIELD)}
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=out.hidden_states, **fields
        )

    def _chunked_loss(self, h: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        weight = (self.lm_head or self.get_input_embeddings()).weight  # (V, d)
        scale = self.config.resolved_logit_scale
        kw: dict[str, Any] = {"chunk_size": chunk, "logit_scale": 1.0 if scale is None else scale}
        hidden, shifted = h[:, :-1].reshape(-1, h.shape[-1]), labels[:, 1:].reshape(-1)
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return chunked_linear_cross_entropy(hidden, weight, shifted, **kw)
        total, count = chunked_cross_entropy_sum(hidden, weight, shifted, **kw)  # scoring
        return total / count.clamp(min=1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            logits = self.lm_head(h)
        else:
            logits = F.linear(h, self.get_input_embeddings().weight)
        scale = self.config.resolved_logit_scale
        return logits if scale is None else logits * scale

    # ------------------------------------------------------------------ training helpers
    def init_weights_(self) -> None:
        """Initialise every weight per `config.init_config` (after `to_empty` on meta models)."""
        for module in self.modules():
            init_module_(module, self.config)

    def param_init_fn(self, module: nn.Module) -> None:
        """Initialise the parameters `module` owns directly (FSDP's per-unit meta init hook).

        Calling it on every module in `self.modules()` order equals `init_weights_()`.
        """
        init_module_(module, self.config)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N + 12 * n_layers * d_model * seq_len.

        N counts every weight used in a matmul: all parameters except the input embedding
        table, plus the output projection (which is the embedding table when tied).
        """
        config = self.config
        s = config.max_seq_len if seq_len is None else seq_len
        n = sum(p.numel() for p in self.parameters())
        if self.lm_head is not None:
            n -= self.transformer.wte.weight.numel()
        return 6 * n + 12 * config.n_layers * config.d_model * s

    @staticmethod
    def fsdp_wrap_fn(module: nn.Module) -> bool:
        """FSDP wraps each transformer block (composer's `fsdp_wrap_fn` hook)."""
        return isinstance(module, MPTBlock)

    @staticmethod
    def activation_checkpointing_fn(module: nn.Module) -> bool:
        """Activation checkpointing applies to each transformer block."""
        return isinstance(module, MPTBlock)


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token cross-entropy in fp32; labels are shifted here, -100 is ignored. The mean is
    over the scored tokens, 0 (not NaN) when there are none, as the chunked loss gives."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    if num_items_in_batch is None:
        return total / (shift_labels != -100).sum().clamp(min=1)
    return total / num_items_in_batch


def _as_cache(cache: object, use_cache: bool) -> Cache | None:
    if cache is None:
        return DynamicCache() if use_cache else None
    if isinstance(cache, Cache):
        if getattr(cache, "is_compileable", False):
            raise FoundryError(
                f"{type(cache).__name__} (a fixed-size cache) is not supported by foundry MPT "
                "models; use the default DynamicCache (do not set cache_implementation)."
            )
        return cache
    # transformers < 5 only (so looked up by name: it is absent from transformers 5's types)
    from_legacy: Callable[[Any], Cache] | None = getattr(DynamicCache, "from_legacy_cache", None)
    if _is_legacy_cache(cache) and from_legacy is not None:
        return from_legacy(cache)
    raise TypeError(
        f"past_key_values must be a transformers Cache (e.g. DynamicCache), got {type(cache)}"
    )


def _is_legacy_cache(value: object) -> TypeGuard[tuple[Any, ...] | list[Any]]:
    """transformers 4's cache format: a (key, value) pair of tensors per layer."""
    return isinstance(value, tuple | list)


def _check_length(total: int, max_seq_len: int) -> None:
    if total > max_seq_len:
        raise FoundryError(
            f"the sequence has {total} tokens (cache included) but the model's max_seq_len is "
            f"{max_seq_len}. Shorten the input, or raise the limit when loading: "
            f"MPTForCausalLM.from_pretrained(path, max_seq_len={total})."
        )


def _key_padding_mask(mask: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] != total:
        raise ValueError(
            f"attention_mask must be (batch, past + new tokens) = ({batch}, {total}), "
            f"got {tuple(mask.shape)}"
        )
    mask = mask.bool()
    return None if bool(mask.all()) else mask


def _positions(
    position_ids: torch.Tensor | None,
    sequence_id: torch.Tensor | None,
    batch: int,
    t: int,
    past: int,
    device: torch.device,
) -> torch.Tensor:
    """Rotary positions (B, T): given ids, else offsets within each packed sequence, else a range."""
    if position_ids is not None:
        return position_ids.to(device).expand(batch, t)
    idx = torch.arange(past, past + t, device=device).expand(batch, t)
    if sequence_id is None:
        return idx
    starts = torch.ones_like(sequence_id, dtype=torch.bool)
    starts[:, 1:] = sequence_id[:, 1:] != sequence_id[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_idx
