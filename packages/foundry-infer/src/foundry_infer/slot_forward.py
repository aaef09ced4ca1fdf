"""Forward passes over a preallocated slot cache, written per architecture (MPT, Llama).

The static-slot engine keeps, per layer, keys and values in one tensor of shape
``(2, slots, kv_heads, max_len, head_dim)`` (keys at 0, values at 1): one slot per concurrent
sequence. A forward call runs rows ``start .. start + B`` of that cache (a view, no copy) on ``T``
new tokens per row at the given positions: it writes the new keys and values at those positions
with one ``index_put_`` (one kernel for both) and attends over the first ``kv_len`` cached
positions, masking every key after the query's own position. All shapes depend only on
(B, T, kv_len), so a decode step (T = 1) can be captured as a CUDA graph.

The forwards read the transformers module's own weights and call its own norms, MLPs and rotary
embedding; only attention and the cache are done here (with torch's
``scaled_dot_product_attention``), so no transformers cache object is involved. After
``compile_decode()``, a call with ``compiled=True`` runs each layer's parts before and after
attention as compiled functions instead (see :mod:`foundry_infer.slot_compiled`); the cache
write and the attention stay as they are. With ``triton_decode`` (``FOUNDRY_DECODE_ATTENTION=
triton``) a one-token step writes the cache and attends in one Triton kernel instead
(:mod:`foundry_infer.decode_attention`), and builds no mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .decode_attention import decode_attention

if TYPE_CHECKING:
    from .slot_compiled import CompiledLayers

__all__ = ["SLOT_ARCHITECTURES", "SlotForward", "slot_forward_for"]

SLOT_ARCHITECTURES = ("mpt", "llama")


class SlotForward:
    """One architecture's forward over the slot cache (see the module docstring)."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer(
        self, i: int, x: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    slopes: torch.Tensor | None = None  # (1, H, 1, 1) float32 ALiBi slopes, or None
    scale: float
    compiled: CompiledLayers | None = None
    triton_decode: bool = False  # one-token steps attend with the Triton kernel (decode_attention)

    def compile_decode(self) -> None:
        """Make the compiled layers that ``compiled=True`` calls use (compiling happens lazily,
        on their first call)."""
        raise NotImplementedError

    def rotary(self) -> tuple[torch.Tensor, ...]:
        """What ``attn_in`` takes after x: Llama's rotary cos and sin, nothing for MPT."""
        return ()

    def compiled_layer(
        self, i: int, x: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`layer` with the compiled parts before and after attention."""
        parts = self.compiled
        assert parts is not None, "compile_decode() first"
        q, new_kv = parts.attn_in(x, *self.rotary(), *parts.attn_in_weights[i])
        attn = self.attend(q, new_kv, positions, cache, self.scale)
        return parts.attn_out(x, attn, *parts.attn_out_weights[i])

    def prepare(self, x: torch.Tensor, positions: torch.Tensor) -> None:
        """Per-call state the layers share (Llama: the rotary cos/sin)."""

    def release(self) -> None:
        self._rows = self._mask = None

    def __call__(
        self,
        ids: torch.Tensor,  # (B, T)
        positions: torch.Tensor,  # (B, T)
        caches: list[torch.Tensor],  # per layer (2, B, Hkv, kv_len, D): views of the cache
        all_logits: bool = False,
        compiled: bool = False,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, V) float32 of each row's last token, or (B, T, V) with ``all_logits``;
        ``compiled``: the layers run :meth:`compiled_layer` (after :meth:`compile_decode`);
        ``last`` (B,): the index of each row's last real token, for right-padded rows."""
        x = self.embed(ids)
        b, t = ids.shape
        if not (t == 1 and self.triton_decode):  # the kernel writes the cache and masks itself
            self._rows = torch.arange(b, device=ids.device)[:, None].expand(b, t)
            self._mask = self.attention_mask(positions, caches[0].shape[3], x.dtype)
        self.prepare(x, positions)
        layer = self.compiled_layer if compiled else self.layer
        try:
            for i in range(self.num_layers):
                x = layer(i, x, positions, caches[i])
        finally:  # per-call tensors die with the call (inside a graph capture: with the capture)
            self.release()
        if not all_logits:
            x = x[:, -1:, :] if last is None else x[torch.arange(b, device=x.device), last][:, None]
        logits = self.head(x).float()
        return logits if all_logits else logits[:, -1, :]

    def attention_mask(self, positions: torch.Tensor, kv_len: int, dtype: torch.dtype) -> Any:
        """The additive mask every layer uses, made once per call: key j is visible to a query
        at position p when j <= p; ALiBi adds slope * (j - p) (in float32, rounded once)."""
        keys_at = torch.arange(kv_len, device=positions.device)
        distance = keys_at[None, None, :] - positions[:, :, None]  # (B, T, L)
        visible = (distance <= 0)[:, None]  # (B, 1, T, L)
        neg = torch.finfo(dtype).min
        if self.slopes is not None:
            bias = self.slopes * distance[:, None].float()  # (B, H, T, L)
            return torch.where(visible, bias, neg).to(dtype)
        b, t = positions.shape
        group = self.num_heads // self.num_kv_heads  # a kv head's queries share its mask row
        mask = torch.where(visible, 0.0, neg).to(dtype)
        return mask[:, :, None].expand(b, 1, group, t, kv_len).reshape(b, 1, group * t, kv_len)

    def attend(
        self,
        q: torch.Tensor,  # (B, H, T, D)
        new_kv: torch.Tensor,  # (B, T, 2, Hkv, D): the new keys and values
        positions: torch.Tensor,  # (B, T)
        cache: torch.Tensor,  # (2, B, Hkv, kv_len, D)
        scale: float,
    ) -> torch.Tensor:
        """Store the new keys/values at ``positions`` and attend; returns (B, T, H * D)."""
        b, h, t, d = q.shape
        if t == 1 and self.triton_decode:
            return decode_attention(q, new_kv, positions, cache, scale, self.slopes)
        # one index_put_ (capturable) writes keys and values: indexing dims 1 and 3 with (B, T)
        # tensors gives a (B, T, 2, Hkv, D) target, new_kv's own layout
        cache[:, self._rows, :, positions] = new_kv
        cache_k, cache_v = cache[0], cache[1]
        # grouped-query: each kv head's queries as one longer query block (no key repeat)
        group = h // self.num_kv_heads
        grouped = q if group == 1 else q.reshape(b, self.num_kv_heads, group * t, d)
        out = F.scaled_dot_product_attention(
            grouped, cache_k, cache_v, attn_mask=self._mask, scale=scale
        )
        return out.reshape(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)


class MptSlots(SlotForward):
    """transformers' ``MptForCausalLM`` (what ``foundry-train export-hf`` writes for MPT)."""

    def __init__(self, model: Any) -> None:
        from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

        config = model.config
        self.model = model
        self.blocks = list(model.transformer.blocks)
        self.num_layers = len(self.blocks)
        self.num_heads = self.num_kv_heads = int(config.n_heads)
        self.head_dim = int(config.d_model) // self.num_heads
        attn = self.blocks[0].attn
        self.scale = float(attn.softmax_scale)
        self.clip = attn.clip_qkv
        device = model.transformer.wte.weight.device
        alibi = build_mpt_alibi_tensor(
            self.num_heads, 2, config.attn_config.alibi_bias_max, device=device
        )  # (H, 1, 2): column 0 holds -slope
        self.slopes = (-alibi[:, :, 0]).float().reshape(1, self.num_heads, 1, 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.wte(ids)

    def compile_decode(self) -> None:
        from .slot_compiled import compiled_mpt_layers

        self.compiled = compiled_mpt_layers(self)

    def layer(
        self, i: int, x: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor
    ) -> torch.Tensor:
        block = self.blocks[i]
        b, t, _ = x.shape
        qkv = block.attn.Wqkv(block.norm_1(x))
        if self.clip:
            qkv = qkv.clamp(min=-self.clip, max=self.clip)
        q, new_kv = split_qkv(qkv, self.num_heads, self.head_dim)
        x = block.attn.out_proj(self.attend(q, new_kv, positions, cache, self.scale)) + x
        return block.ffn(block.norm_2(x), x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.transformer.norm_f(x))


class LlamaSlots(SlotForward):
    """transformers' ``LlamaForCausalLM`` (RMSNorm, rotary embedding, grouped-query attention).

    Each layer's q, k and v projections run as one matrix product, and so do the MLP's gate and
    up projections (fewer, larger kernels a decode step): their weights are concatenated once
    here, and the modules' own weights become views of the result, so no weight is held twice.
    """

    def __init__(self, model: Any) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        config = model.config
        self.model = model
        self.rotate = apply_rotary_pos_emb
        self.layers = list(model.model.layers)
        self.num_layers = len(self.layers)
        self.num_heads = int(config.num_attention_heads)
        self.num_kv_heads = int(config.num_key_value_heads or self.num_heads)
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scale = float(attn.scaling)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self.qkv = [
            fuse_rows(b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj)
            for b in self.layers
        ]
        self.gate_up = [fuse_rows(b.mlp.gate_proj, b.mlp.up_proj) for b in self.layers]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids)

    def compile_decode(self) -> None:
        from .slot_compiled import compiled_llama_layers

        self.compiled = compiled_llama_layers(self)

    def rotary(self) -> tuple[torch.Tensor, ...]:
        assert self._rope is not None
        return self._rope

    def prepare(self, x: torch.Tensor, positions: torch.Tensor) -> None:
        self._rope = self.model.model.rotary_emb(x, positions)  # shared by every layer

    def release(self) -> None:
        super().release()
        self._rope = None

    def layer(
        self, i: int, x: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor
    ) -> torch.Tensor:
        block = self.layers[i]
        b, t, _ = x.shape
        h = block.input_layernorm(x)
        width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = F.linear(h, *self.qkv[i]).split([width, kv_width, kv_width], dim=-1)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        assert self._rope is not None
        cos, sin = self._rope
        q, k = self.rotate(q, k, cos, sin)
        new_kv = torch.stack((k.transpose(1, 2), v.transpose(1, 2)), dim=2)
        x = block.self_attn.o_proj(self.attend(q, new_kv, positions, cache, self.scale)) + x
        mlp = block.mlp
        gate, up = F.linear(block.post_attention_layernorm(x), *self.gate_up[i]).chunk(2, dim=-1)
        return x + mlp.down_proj(mlp.act_fn(gate) * up)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm(x))


def fuse_rows(*linears: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (weight, bias) whose rows are the ``nn.Linear`` modules' rows in order; each module's
    weight (and bias) is rebound to a view of it, so the old tensors are freed and nothing is
    held twice. ``F.linear(x, *fused)`` is the modules' outputs concatenated on the last dim."""
    from torch import nn

    biases = [m.bias for m in linears]
    if len({b is None for b in biases}) > 1:
        raise ValueError("fuse_rows: some of the projections have a bias and some do not")
    with torch.no_grad():
        weight = torch.cat([m.weight for m in linears])
        bias = None if biases[0] is None else torch.cat(biases)
        start = 0
        for m in linears:
            rows = m.weight.shape[0]
            m.weight = nn.Parameter(weight[start : start + rows], requires_grad=False)
            if bias is not None:
                m.bias = nn.Parameter(bias[start : start + rows], requires_grad=False)
            start += rows
    return weight, bias


def split_qkv(qkv: torch.Tensor, heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MPT's fused projection (B, T, 3 * H * D) as q (B, H, T, D) and the new keys and values
    (B, T, 2, H, D), both views (no copy)."""
    b, t, _ = qkv.shape
    width = heads * head_dim
    q = qkv[..., :width].reshape(b, t, heads, head_dim).transpose(1, 2)
    return q, qkv[..., width:].view(b, t, 2, heads, head_dim)


def slot_forward_for(model: Any) -> SlotForward | None:
    """The slot forward for ``model``'s architecture, or None where there is none."""
    model_type = getattr(model.config, "model_type", "")
    if model_type == "mpt" and not getattr(model.transformer, "wpe", None):
        return MptSlots(model)
    if model_type == "llama":
        return LlamaSlots(model)
    return None
