"""Backward kernel of the Triton attention: dK and dV, one program per key tile."""

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
    load_rows,
    query_ranges,
)


@triton.jit
def _dkdv_query_loop(
    dk,
    dv,
    k,
    v,
    k_pos,
    k_ref,
    k_seq,
    q_ptrs,
    do_ptrs,
    lse_ptrs,
    delta_ptrs,
    seq_ptrs,
    stride_qt,
    stride_dot,
    slope2,
    qk_scale2,
    seq_len,
    window,
    start,
    stop,
    offs_m,
    offs_d,
    HEAD_DIM: tl.constexpr,
    PAD_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """dK (unscaled) and dV accumulation over query tiles [start, stop) for one key tile."""
    for m0 in range(start, stop, BLOCK_M):
        q_pos = m0 + offs_m
        q_ok = q_pos < seq_len
        q = load_rows(q_ptrs + m0 * stride_qt, q_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        do = load_rows(do_ptrs + m0 * stride_dot, q_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        if MASKED:
            lse = tl.load(lse_ptrs + q_pos, mask=q_ok, other=0.0)
            delta = tl.load(delta_ptrs + q_pos, mask=q_ok, other=0.0)
        else:
            lse = tl.load(lse_ptrs + q_pos)
            delta = tl.load(delta_ptrs + q_pos)
        # Transposed (keys x queries) tiles, so that dK and dV come out as plain products.
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale2
        q_seq = q_pos
        if MASKED and HAS_SEQ:  # ids are only read where the tile needs a mask
            q_seq = tl.load(seq_ptrs + q_pos, mask=q_ok, other=-2)
        s_t = bias_and_mask(
            s_t,
            q_pos[None, :],
            k_pos[:, None],
            q_seq[None, :],
            k_seq[:, None],
            k_ref,
            slope2,
            seq_len,
            window,
            CAUSAL,
            HAS_ALIBI,
            HAS_WINDOW,
            HAS_SEQ,
            MASKED,
        )
        if HAS_ALIBI and CAUSAL:
            lse += alibi_row_shift(q_pos, k_ref, slope2)
        p_t = tl.exp2(s_t - lse[None, :])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    LSE,
    DELTA,
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
    stride_dob,
    stride_dot,
    stride_doh,
    stride_dkb,
    stride_dkt,
    stride_dkh,
    stride_dvb,
    stride_dvt,
    stride_dvh,
    stride_sb,
    seq_len,
    num_heads,
    num_kv_heads,
    group_size,
    window,
    qk_scale2,
    softmax_scale,
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
    # Key tiles near the start are seen by the most queries under causal masking: run them first.
    pid_n = tl.program_id(0)
    pid_bk = tl.program_id(1)
    b = pid_bk // num_kv_heads
    hk = pid_bk % num_kv_heads
    PAD_D: tl.constexpr = BLOCK_D != HEAD_DIM

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k_ok = offs_n < seq_len

    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    k = load_rows(
        k_base + offs_n[:, None] * stride_kt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    v = load_rows(
        v_base + offs_n[:, None] * stride_vt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    seq_ptrs = SEQ + b.to(tl.int64) * stride_sb
    k_seq = offs_n
    if HAS_SEQ:
        k_seq = tl.load(seq_ptrs + offs_n, mask=k_ok, other=-1)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, mid, hi, end = query_ranges(n0, seq_len, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    for g in range(0, group_size):
        h = hk * group_size + g
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        do_base = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
        q_ptrs = q_base + offs_m[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = do_base + offs_m[:, None] * stride_dot + offs_d[None, :]
        lse_ptrs = LSE + (b * num_heads + h).to(tl.int64) * seq_len
        delta_ptrs = DELTA + (b * num_heads + h).to(tl.int64) * seq_len
        slope2 = 0.0
        if HAS_ALIBI:
            slope2 = tl.load(SLOPES + h) * 1.4426950408889634
        # fmt: off
        dk, dv = _dkdv_query_loop(
            dk, dv, k, v, offs_n, n0, k_seq, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, seq_ptrs,
            stride_qt, stride_dot, slope2, qk_scale2, seq_len, window, lo, mid, offs_m, offs_d,
            HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI, HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_M,
        )
        dk, dv = _dkdv_query_loop(
            dk, dv, k, v, offs_n, n0, k_seq, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, seq_ptrs,
            stride_qt, stride_dot, slope2, qk_scale2, seq_len, window, mid, hi, offs_m, offs_d,
            HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI, HAS_WINDOW, HAS_SEQ, HAS_SEQ, DOT_PREC, BLOCK_M,
        )
        dk, dv = _dkdv_query_loop(
            dk, dv, k, v, offs_n, n0, k_seq, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, seq_ptrs,
            stride_qt, stride_dot, slope2, qk_scale2, seq_len, window, hi, end, offs_m, offs_d,
            HEAD_DIM, PAD_D, CAUSAL, HAS_ALIBI, HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_M,
        )
        # fmt: on
    out_mask = k_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    dk_base = DK + b.to(tl.int64) * stride_dkb + hk.to(tl.int64) * stride_dkh
    dv_base = DV + b.to(tl.int64) * stride_dvb + hk.to(tl.int64) * stride_dvh
    dk = dk * softmax_scale
    tl.store(
        dk_base + offs_n[:, None] * stride_dkt + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=out_mask,
    )
    tl.store(
        dv_base + offs_n[:, None] * stride_dvt + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=out_mask,
    )
