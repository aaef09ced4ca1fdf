"""Compiled decode layers for the slot forwards (the static engine's ``compile_decode``).

Each layer of a decode step is split in two pure functions around attention: ``attn_in`` (norm,
q/k/v projections, Llama's rotary embedding; returns q as ``(B, heads, T, head_dim)`` and the new
keys and values as one ``(B, T, 2, kv_heads, head_dim)`` tensor, the cache write's layout) and
``attn_out`` (output projection, residual, norm, MLP, residual). Both are compiled once with
``torch.compile`` and called by every layer with that layer's weights as tensor arguments, so
one compiled graph serves all layers (dynamo guards on tensors' shapes, not on which module they
came from). The batch dimension changes with the batch bucket: the first call (batch 1) compiles
a static graph and the first larger batch one with a dynamic batch size (dynamo's automatic
dynamic shapes), which then serves every other bucket. The cache write and the attention stay
eager in :class:`~foundry_infer.slot_forward.SlotForward`, as does prefill.

The math is written here, matching transformers' modules op for op: ``LlamaRMSNorm`` (float32,
cast back, then times the weight), ``apply_rotary_pos_emb``, ``LlamaMLP`` (its gate and up
projections, like q, k and v, as one fused product: see ``LlamaSlots``), MPT's ``LayerNorm``,
``clip_qkv``, ``MptMLP`` (exact GELU). Model constants (head counts, epsilons) are closure
constants of the compiled functions, so engines of one configuration share their compiled code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .errors import FoundryError
from .slot_forward import split_qkv

if TYPE_CHECKING:
    from .slot_forward import LlamaSlots, MptSlots

__all__ = ["CompiledLayers", "compiled_llama_layers", "compiled_mpt_layers"]

Tensors = tuple[torch.Tensor, ...]
Weights = tuple["torch.Tensor | None", ...]
# hidden_act names whose transformers activation is exactly this torch function
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
}


@dataclass
class CompiledLayers:
    """The two compiled halves of a decode layer and each layer's weights for them."""

    attn_in: Callable[..., Tensors]  # (x, *extras, *weights) -> q, new keys and values
    attn_out: Callable[..., torch.Tensor]  # (x, attention output, *weights) -> next x
    attn_in_weights: list[Weights]
    attn_out_weights: list[Weights]


# FOUNDRY_DECODE_COMPILE_MODE picks the decode layers' torch.compile mode. On CUDA the default is
# "max-autotune-no-cudagraphs": inductor autotunes the matrix products (Triton templates against
# cuBLAS, the elementwise work fused into them) and, with coordinate-descent tuning, turns a
# one-row product into a fused Triton reduction. On one H100 (2026-12-05, 21:46-21:53 UTC) it took
# a MPT-1B decode step from 1.635 to 1.405 ms, for about 10 s of first steps instead of 1.5 s; an
# earlier H100 lease measured only 2.5% (1.658 to 1.617 ms) for 40 s. On a CPU the default is
# "default" (no autotuning). Modes that capture CUDA graphs themselves ("reduce-overhead",
# "max-autotune") are refused: the engine captures its own.
MODE_VARIABLE = "FOUNDRY_DECODE_COMPILE_MODE"
_MODES = ("default", "max-autotune-no-cudagraphs")


def compile_mode(device_type: str = "cpu") -> str:
    """The ``torch.compile`` mode of the decode layers on ``device_type`` (see
    :data:`MODE_VARIABLE`)."""
    fallback = "max-autotune-no-cudagraphs" if device_type == "cuda" else "default"
    mode = os.environ.get(MODE_VARIABLE, fallback)
    if mode not in _MODES:
        raise FoundryError(
            f"{MODE_VARIABLE}={mode!r} is not a decode compile mode; use one of "
            f"{', '.join(_MODES)} (modes that capture CUDA graphs themselves cannot run inside "
            "the engine's own graphs), or unset it."
        )
    return mode


def _compile(fn: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    # dynamic=None: static at first, a dynamic batch size once a second size is seen
    return torch.compile(fn, fullgraph=True, dynamic=None, mode=compile_mode(device_type))


def _plain(*tensors: torch.Tensor | None) -> Weights:
    """Weights as plain tensors (no autograd), None kept."""
    return tuple(None if t is None else t.detach() for t in tensors)


def _linear(module: Any) -> Weights:
    return _plain(module.weight, module.bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' ``LlamaRMSNorm``: normalised in float32, cast back, times the weight."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' ``apply_rotary_pos_emb`` for one of q, k (cos/sin already unsqueezed)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos) + (rotated * sin)


def _llama_functions(
    heads: int, kv_heads: int, head_dim: int, eps: tuple[float, float], act: Callable[..., Any]
) -> tuple[Callable[..., Tensors], Callable[..., torch.Tensor]]:
    def attn_in(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *w: Any) -> Tensors:
        norm, wqkv, bqkv = w  # q, k and v fused (LlamaSlots.qkv)
        b, t, _ = x.shape
        qkv = F.linear(rms_norm(x, norm, eps[0]), wqkv, bqkv)
        q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
        q = q.view(b, t, heads, head_dim).transpose(1, 2)
        k = k.view(b, t, kv_heads, head_dim).transpose(1, 2)
        v = v.view(b, t, kv_heads, head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        k = rotate(k, cos, sin)
        return rotate(q, cos, sin), torch.stack((k.transpose(1, 2), v.transpose(1, 2)), dim=2)

    def attn_out(x: torch.Tensor, attn: torch.Tensor, *w: Any) -> torch.Tensor:
        wo, bo, norm, wgu, bgu, wd, bd = w  # gate and up fused (LlamaSlots.gate_up)
        x = F.linear(attn, wo, bo) + x
        gate, up = F.linear(rms_norm(x, norm, eps[1]), wgu, bgu).chunk(2, dim=-1)
        return x + F.linear(act(gate) * up, wd, bd)

    return attn_in, attn_out


def compiled_llama_layers(forward: LlamaSlots) -> CompiledLayers:
    """Compiled decode layers for a transformers ``LlamaForCausalLM``."""
    layers = forward.layers
    first = layers[0]
    hidden_act = str(getattr(forward.model.config, "hidden_act", "silu"))
    # another activation: the module itself (correct, but compiled again per engine)
    act: Callable[..., Any] = _ACTIVATIONS.get(hidden_act) or first.mlp.act_fn
    eps = (
        float(first.input_layernorm.variance_epsilon),
        float(first.post_attention_layernorm.variance_epsilon),
    )
    attn_in, attn_out = _llama_functions(
        forward.num_heads, forward.num_kv_heads, forward.head_dim, eps, act
    )
    ins, outs = [], []
    for i, block in enumerate(layers):
        ins.append(_plain(block.input_layernorm.weight, *forward.qkv[i]))
        outs.append(
            _linear(block.self_attn.o_proj)
            + _plain(block.post_attention_layernorm.weight, *forward.gate_up[i])
            + _linear(block.mlp.down_proj)
        )
    device = forward.model.device.type
    return CompiledLayers(_compile(attn_in, device), _compile(attn_out, device), ins, outs)


def _mpt_functions(
    heads: int, head_dim: int, eps: tuple[float, float], clip: float | None
) -> tuple[Callable[..., Tensors], Callable[..., torch.Tensor]]:
    def attn_in(x: torch.Tensor, *w: Any) -> Tensors:
        norm_w, norm_b, wqkv, bqkv = w
        d = x.shape[-1]
        qkv = F.linear(F.layer_norm(x, (d,), norm_w, norm_b, eps[0]), wqkv, bqkv)
        if clip:
            qkv = qkv.clamp(min=-clip, max=clip)
        return split_qkv(qkv, heads, head_dim)

    def attn_out(x: torch.Tensor, attn: torch.Tensor, *w: Any) -> torch.Tensor:
        wo, bo, norm_w, norm_b, wu, bu, wd, bd = w
        x = F.linear(attn, wo, bo) + x
        h = F.layer_norm(x, (x.shape[-1],), norm_w, norm_b, eps[1])
        return F.linear(F.gelu(F.linear(h, wu, bu)), wd, bd) + x

    return attn_in, attn_out


def compiled_mpt_layers(forward: MptSlots) -> CompiledLayers:
    """Compiled decode layers for a transformers ``MptForCausalLM``."""
    blocks = forward.blocks
    first = blocks[0]
    eps = (float(first.norm_1.eps), float(first.norm_2.eps))
    clip = float(forward.clip) if forward.clip else None
    attn_in, attn_out = _mpt_functions(forward.num_heads, forward.head_dim, eps, clip)
    ins = [_plain(b.norm_1.weight, b.norm_1.bias) + _linear(b.attn.Wqkv) for b in blocks]
    outs = [
        _linear(b.attn.out_proj)
        + _plain(b.norm_2.weight, b.norm_2.bias)
        + _linear(b.ffn.up_proj)
        + _linear(b.ffn.down_proj)
        for b in blocks
    ]
    device = forward.model.device.type
    return CompiledLayers(_compile(attn_in, device), _compile(attn_out, device), ins, outs)
