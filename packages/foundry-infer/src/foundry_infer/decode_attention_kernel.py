"""The Triton kernel behind :mod:`foundry_infer.decode_attention` (imported only when chosen).

One program per (sequence, key/value head) of a decode step (one new token a sequence). It holds
the new key and value and the group of query heads that read that key/value head in registers,
streams the sequence's cached positions ``0 .. pos - 1`` in blocks with an online softmax in
float32, adds the new token itself (always visible, at distance 0), writes the output, and
finally stores the new key and value at ``pos`` in the cache. Reading only positions before
``pos`` and writing only ``pos`` means no program reads what it writes. ``pos`` is read on the
device, so a CUDA graph of the step stays right as positions advance.

Runs on CUDA tensors, or on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1`` set before
``triton`` is first imported), which is how the CPU tests run it.
"""

# Triton's `tl.constexpr` parameters take Python literals; pyright's argument check is off here.
# pyright: reportArgumentType=false

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # decode_attention checks first; this is for a direct import
    raise ImportError(
        "foundry_infer.decode_attention_kernel needs triton: install foundry-infer[gpu] (torch's "
        "Linux CUDA wheels bring it too)"
    ) from exc

__all__ = ["decode_attention_kernel"]


@triton.jit
def _cached_block(
    q,  # (GROUP_P2, D) float32, already scaled
    keys,  # this sequence's and key/value head's keys; its values are sc_kv further
    start,
    pos,
    sc_kv,
    sc_l,
    slope,  # (GROUP_P2,) float32 ALiBi slopes (zeros without ALiBi)
    m,
    total,
    acc,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ALIBI: tl.constexpr,
):
    """The online-softmax update by cached positions ``start .. start + BLOCK_N`` (those < pos)."""
    n = start + tl.arange(0, BLOCK_N)
    cached = n < pos
    at = n[:, None] * sc_l + tl.arange(0, HEAD_DIM)[None, :]
    k = tl.load(keys + at, mask=cached[:, None], other=0.0).to(tl.float32)  # (BLOCK_N, D)
    v = tl.load(keys + sc_kv + at, mask=cached[:, None], other=0.0).to(tl.float32)  # both in flight
    s = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # (GROUP_P2, BLOCK_N)
    if ALIBI:
        s += slope[:, None] * (n - pos).to(tl.float32)[None, :]
    s = tl.where(cached[None, :], s, float("-inf"))
    m_next = tl.maximum(m, tl.max(s, axis=1))
    alpha = tl.exp(m - m_next)
    p = tl.exp(s - m_next[:, None])
    acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
    return m_next, total * alpha + tl.sum(p, axis=1), acc


@triton.jit
def decode_attention_kernel(
    q_ptr,  # (B, H, 1, D) queries
    new_ptr,  # (B, 1, 2, Hkv, D) the new keys (index 0) and values (index 1)
    pos_ptr,  # (B, 1) int64 positions of the new tokens
    cache_ptr,  # (2, B, Hkv, L, D) keys (index 0) and values (index 1), L > max position
    slopes_ptr,  # (H,) float32 ALiBi slopes (read only with ALIBI)
    out_ptr,  # (B, H, D) output
    sq_b,
    sq_h,
    sn_b,
    sn_kv,
    sn_h,
    sp_b,
    sc_kv,
    sc_b,
    sc_h,
    sc_l,
    so_b,
    so_h,
    scale,
    GROUP: tl.constexpr,  # query heads per key/value head
    GROUP_P2: tl.constexpr,  # GROUP rounded up to a power of two
    HEAD_DIM: tl.constexpr,  # a power of two; the head dimension is contiguous everywhere
    BLOCK_N: tl.constexpr,  # cached positions per block
    ALIBI: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    pos = tl.load(pos_ptr + b * sp_b)
    g = tl.arange(0, GROUP_P2)
    d = tl.arange(0, HEAD_DIM)
    in_group = g < GROUP
    heads = kv_head * GROUP + g
    q_at = q_ptr + b * sq_b + heads[:, None] * sq_h + d[None, :]
    q = tl.load(q_at, mask=in_group[:, None], other=0.0)
    q = q.to(tl.float32) * scale  # (GROUP_P2, D); rows past GROUP are zeros
    new = new_ptr + b * sn_b + kv_head * sn_h + d
    k_new = tl.load(new)
    v_new = tl.load(new + sn_kv)
    slope = tl.zeros((GROUP_P2,), tl.float32)
    if ALIBI:
        slope = tl.load(slopes_ptr + heads, mask=in_group, other=0.0)
    # the new token first: always visible, ALiBi distance 0; it starts the running max and sum
    m = tl.sum(q * k_new.to(tl.float32)[None, :], axis=1)  # (GROUP_P2,)
    total = tl.full((GROUP_P2,), 1.0, tl.float32)
    acc = tl.zeros((GROUP_P2, HEAD_DIM), tl.float32) + v_new.to(tl.float32)[None, :]
    keys = cache_ptr + b * sc_b + kv_head * sc_h
    for start in range(0, pos, BLOCK_N):
        m, total, acc = _cached_block(
            q, keys, start, pos, sc_kv, sc_l, slope, m, total, acc, HEAD_DIM, BLOCK_N, ALIBI
        )
    out = acc / total[:, None]
    out_at = out_ptr + b * so_b + heads[:, None] * so_h + d[None, :]
    tl.store(out_at, out.to(out_ptr.dtype.element_ty), mask=in_group[:, None])
    tl.store(keys + pos * sc_l + d, k_new)
    tl.store(keys + sc_kv + pos * sc_l + d, v_new)
