"""A causal LM seen as one step function over flat key/value tensors.

``FlatCacheStep`` wraps any transformers causal LM (GPT-2, Llama, MPT, ...) so that one call takes
``input_ids``, ``attention_mask``, ``position_ids`` and the past keys/values as plain tensors,
builds the model's own cache object (a transformers ``DynamicCache``) from them, runs the model,
and returns the last position's logits with the updated keys/values, again as plain tensors.
This is the signature the ONNX graph is exported with, and the torch engine runs the same module,
so both back ends share one generation loop.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CacheLayout", "FlatCacheStep", "cache_layout", "input_names", "output_names"]


@dataclass(frozen=True)
class CacheLayout:
    """Shapes of one layer's cached keys/values: (batch, num_kv_heads, past, head_dim)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int | None
    model_type: str


def cache_layout(config: Any) -> CacheLayout:
    """Read the cache geometry from a transformers config (GPT-2, Llama, MPT and their kin)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = _first_attr(text, "num_hidden_layers", "n_layer", "n_layers")
    heads = _first_attr(text, "num_attention_heads", "n_head", "n_heads")
    hidden = _first_attr(text, "hidden_size", "n_embd", "d_model")
    kv_heads = getattr(text, "num_key_value_heads", None)
    if kv_heads is None and getattr(text, "model_type", None) == "falcon":
        # Falcon's multi-query attention (Falcon-7B's default) caches one key/value head
        multi = getattr(text, "multi_query", False)
        new_arch = getattr(text, "new_decoder_architecture", False)
        kv_heads = getattr(text, "num_kv_heads", None) if new_arch or not multi else 1
    kv_heads = kv_heads or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    max_positions = None
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if getattr(text, name, None):
            max_positions = int(getattr(text, name))
            break
    return CacheLayout(
        num_layers=int(layers),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        vocab_size=int(text.vocab_size),
        max_positions=max_positions,
        model_type=str(getattr(text, "model_type", "unknown")),
    )


def _first_attr(obj: Any, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    raise ValueError(f"config {type(obj).__name__} has none of {names}")


def input_names(num_layers: int) -> list[str]:
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past]


def output_names(num_layers: int) -> list[str]:
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["logits", *present]


class FlatCacheStep(torch.nn.Module):
    """One forward step of ``model`` with its cache passed as flat tensors (see module doc)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layout = cache_layout(model.config)  # type: ignore[arg-type]
        params = inspect.signature(model.forward).parameters
        # transformers 5 names the argument `cache`; 4.x calls it `past_key_values`.
        self.cache_argument = "cache" if "cache" in params else "past_key_values"
        self.uses_position_ids = "position_ids" in params
        self.keeps_last_logits = "logits_to_keep" in params

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) int64
        attention_mask: torch.Tensor,  # (B, P + T) int64, 0 marks left padding
        position_ids: torch.Tensor,  # (B, T) int64
        *past: torch.Tensor,  # 2 * layers tensors (B, Hkv, P, D)
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer in range(self.layout.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        kwargs: dict[str, Any] = {self.cache_argument: cache}
        if self.uses_position_ids:
            kwargs["position_ids"] = position_ids
        if self.keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **kwargs
        )
        logits = out.logits[:, -1, :]  # (B, V)
        return (logits, *_flat_cache(cache))


def _flat_cache(cache: Any) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56
        for layer in layers:
            flat += [layer.keys, layer.values]
    else:  # older DynamicCache
        for keys, values in zip(cache.key_cache, cache.value_cache, strict=True):
            flat += [keys, values]
    return flat
