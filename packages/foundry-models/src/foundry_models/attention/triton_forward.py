"""Forward kernel of the Triton attention (see triton_common.py for the scheme and masks)."""

# foundry: whole-kernel-file: Triton @triton.jit kernels; each kernel body is one GPU program whose loops share registers and pointers, and splitting it into more jit functions only moves the lines (the key/query loops are already their own functions)

# Triton's `tl.constexpr` parameter annotations are markers for its compiler, not Python types:
# passing a literal where one is declared is correct, so pyright's argument check is off here.
# pyright: reportArgumentType=false

from __future__ import annotations

import triton
import triton.language as tl

from foundry_models.attention.triton_common import (
    alibi_row_shift,
    bias_and_mask,
    key_ranges,
    load_rows,
)


@triton.jit
def _fwd_key_loop(
    acc,
    l_i,
    m_i,
    q,
    q_pos,
    q_ref,
    q_seq,
    k_ptrs,
    v_ptrs,
    seq_ptrs,
    stride_kt,
    stride_vt,
    slope2,
    qk_scale2,
    seq_len,
    window,
    start,
    stop,
    offs_n,
    offs_d,
    HEAD_DIM: tl.constexpr,
    PAD_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax accumulation over key tiles [start, stop) for one query tile."""
    for n0 in range(start, stop, BLOCK_N):
        k_pos = n0 + offs_n
        k_ok = k_pos < seq_len
        k = load_rows(k_ptrs + n0 * stride_kt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
        k_seq = k_pos
        if MASKED and HAS_SEQ:  # ids are only read where the tile needs a mask
            k_seq = tl.load(seq_ptrs + k_pos, mask=k_ok, other=-1)
        s = bias_and_mask(
            s,
            q_pos[:, None],
            k_pos[None, :],
            q_seq[:, None],
            k_seq[None, :],
            q_ref,
            slope2,
            seq_len,
            window,
            CAUSAL,
            HAS_ALIBI,
            HAS_WINDOW,
            HAS_SEQ,
            MASKED,
        )
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_rows(v_ptrs + n0 * stride_vt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attn_fwd_kernel(
    Q,
    K,
    V,
    OUT,
    LSE,
    SLOPES,
    SEQ,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_ob,
    stride_ot,
    stride_oh,
    stride_sb,
    seq_len,
    num_heads,
    group_size,
    window,
    qk_scale2,
    seq_bucket,  # unused by the code: the autotuning key
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Heaviest (last) query tiles first: better tail balance under causal masking.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    hk = h // group_size
    PAD_D: tl.constexpr = BLOCK_D != HEAD_DIM

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = offs_m < seq_len

    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    q = load_rows(
        q_base + offs_m[:, None] * stride_qt + offs_d[None, :], q_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    k_ptrs = k_base + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]

    slope2 = 0.0
    if HAS_ALIBI:
        slope2 = tl.load(SLOPES + h) * 1.4426950408889634
    seq_ptrs = SEQ + b.to(tl.int64) * stride_sb
    q_seq = offs_m
    if HAS_SEQ:
        q_seq = tl.load(seq_ptrs + offs_m, mask=q_ok, other=-2)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # Finite start value: a row whose first tiles are all masked stays NaN-free.
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30

    lo, mid, hi, end = key_ranges(m0, seq_len, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    # fmt: off
    acc, l_i, m_i = _fwd_key_loop(
        acc, l_i, m_i, q, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt, slope2,
        qk_scale2, seq_len, window, lo, mid, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI,
        HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_N,
    )
    acc, l_i, m_i = _fwd_key_loop(
        acc, l_i, m_i, q, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt, slope2,
        qk_scale2, seq_len, window, mid, hi, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI,
        HAS_WINDOW, HAS_SEQ, HAS_SEQ, DOT_PREC, BLOCK_N,
    )
    acc, l_i, m_i = _fwd_key_loop(
        acc, l_i, m_i, q, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt, slope2,
        qk_scale2, seq_len, window, hi, end, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI,
        HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_N,
    )
    # fmt: on
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = m_i + tl.log2(l_safe)
    if HAS_ALIBI and CAUSAL:
        lse -= alibi_row_shift(offs_m, m0, slope2)
    o_base = OUT + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    o_ptrs = o_base + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(
        o_ptrs, out.to(OUT.dtype.element_ty), mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    )
    tl.store(LSE + pid_bh.to(tl.int64) * seq_len + offs_m, lse, mask=q_ok)
