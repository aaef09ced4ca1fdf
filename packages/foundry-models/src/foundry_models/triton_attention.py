"""Causal attention in Triton: forward and backward, ALiBi, GQA/MQA, sliding window, packed sequences.

The kernels follow the FlashAttention-2 scheme: a program owns a tile of queries (or, in the
backward dK/dV kernel, a tile of keys) and streams the other side through SRAM with an online
softmax kept in fp32. Nothing of size T x S is ever materialised: the ALiBi bias is computed in
the kernel from the per-head slope and the two positions, and the masks (causal, sliding window,
packed-sequence ids, ragged edges) are evaluated only on the tiles that straddle a boundary.
Tiles that are entirely visible take a mask-free path; tiles that are entirely hidden are never
visited.

Layout: ``q`` is (B, T, H, D) and ``k``/``v`` are (B, S, Hkv, D) with ``H % Hkv == 0``; any strides
are accepted as long as the head dimension is contiguous, so the views produced by splitting a
fused QKV projection are used as they are. Query head ``h`` reads key/value head
``h // (H // Hkv)``; the backward pass accumulates dK/dV over the query heads of a group in
registers, so repeated K/V are never built.

Masking semantics (shared with the ``torch`` reference implementation):

* causal: key ``j`` is visible to query ``i`` iff ``j <= i`` (``T == S``, training / prefill).
* window ``w``: additionally ``i - j < w`` (MPT's ``sliding_window_size``).
* ``sequence_id`` (B, T): additionally ``sequence_id[b, i] == sequence_id[b, j]``.
* ALiBi: ``score += slope[h] * (j - i)`` (causal), ``-slope[h] * |i - j|`` otherwise.

The kernels run on CUDA tensors, or on CPU tensors through Triton's interpreter when the
environment variable ``TRITON_INTERPRET=1`` is set before ``triton`` is first imported.
"""

# Triton's `tl.constexpr` parameter annotations are markers for its compiler, not Python types:
# passing a literal where one is declared is correct, so pyright's argument check is off here.
# pyright: reportArgumentType=false

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["triton_attention"]

_LOG2E = 1.4426950408889634
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256


# --------------------------------------------------------------------------------------------
# Shared device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_rows(
    ptrs, row_ok, offs_d, HEAD_DIM: tl.constexpr, BOUNDS: tl.constexpr, PAD_D: tl.constexpr
):
    """Load a (rows, BLOCK_D) tile; masks only what the compile-time flags say may be out of range."""
    if BOUNDS:
        if PAD_D:
            tile = tl.load(ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
        else:
            tile = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    else:
        if PAD_D:  # noqa: SIM108 (constexpr branches)
            tile = tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _alibi_bias(q_pos, k_pos, ref, slope2, CAUSAL: tl.constexpr):
    """ALiBi bias in log2 units for broadcastable query/key positions.

    Causal: ``slope * (j - i)`` splits into ``slope * (j - ref)``, computed here once per key (a
    broadcast vector, one add per score), and ``-slope * (i - ref)``, constant along a row, which the
    callers fold into the row's log-sum-exp instead (see ``_alibi_row_shift``). ``ref`` is the start
    of the program's own tile, so both parts stay small where probabilities are not negligible.
    """
    if CAUSAL:
        bias = slope2 * (k_pos - ref).to(tl.float32)
    else:
        bias = -slope2 * tl.abs((k_pos - q_pos).to(tl.float32))
    return bias


@triton.jit
def _alibi_row_shift(q_pos, ref, slope2):
    """The per-row part ``slope * (i - ref)`` that causal ``_alibi_bias`` leaves out."""
    return slope2 * (q_pos - ref).to(tl.float32)


@triton.jit
def _visible(
    q_pos,
    k_pos,
    q_seq,
    k_seq,
    seq_len,
    window,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SEQ: tl.constexpr,
):
    """Which (query, key) pairs of a tile may attend; positions and ids are broadcastable."""
    vis = (q_pos < seq_len) & (k_pos < seq_len)
    if CAUSAL:
        vis = vis & (k_pos <= q_pos)
    if HAS_WINDOW:
        vis = vis & (q_pos - k_pos < window)
    if HAS_SEQ:
        vis = vis & (q_seq == k_seq)
    return vis


@triton.jit
def _bias_and_mask(
    s,
    q_pos,
    k_pos,
    q_seq,
    k_seq,
    ref,
    slope2,
    seq_len,
    window,
    CAUSAL: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_SEQ: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Scores of one tile with the ALiBi bias added and invisible pairs at -inf.

    Positions and sequence ids come broadcast to the tile's layout (queries x keys in the forward
    and dQ loops, keys x queries in the dK/dV loop); tiles with MASKED false need no mask.
    """
    if HAS_ALIBI:
        s += _alibi_bias(q_pos, k_pos, ref, slope2, CAUSAL)
    if MASKED:
        vis = _visible(q_pos, k_pos, q_seq, k_seq, seq_len, window, CAUSAL, HAS_WINDOW, HAS_SEQ)
        s = tl.where(vis, s, float("-inf"))
    return s


@triton.jit
def _key_ranges(
    m0,
    seq_len,
    window,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):
    """Key ranges a query tile [m0, m0 + BLOCK_M) must visit (BLOCK_M % BLOCK_N == 0).

    Returns (lo, mid, hi, end): keys [lo, mid) need masks (window's lower edge), [mid, hi) are fully
    visible, [hi, end) need masks (causal diagonal, or the ragged end when not causal).
    """
    if CAUSAL:
        hi = m0
        end = tl.minimum(m0 + BLOCK_M, seq_len)
        if HAS_WINDOW:
            lo = tl.maximum(m0 - window + 1, 0) // BLOCK_N * BLOCK_N
            mid = tl.maximum(m0 + BLOCK_M - window, lo)
            mid = tl.minimum((mid + BLOCK_N - 1) // BLOCK_N * BLOCK_N, hi)
        else:
            lo = m0 * 0
            mid = m0 * 0
    else:
        lo = m0 * 0
        mid = m0 * 0
        hi = m0 * 0 + seq_len // BLOCK_N * BLOCK_N
        end = m0 * 0 + seq_len
    return lo, mid, hi, end


@triton.jit
def _query_ranges(
    n0,
    seq_len,
    window,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):
    """Query ranges a key tile [n0, n0 + BLOCK_N) is seen by (BLOCK_N % BLOCK_M == 0).

    Returns (lo, mid, hi, end): queries [lo, mid) need masks (causal diagonal), [mid, hi) see the
    whole key tile, [hi, end) need masks (window's far edge and the ragged end).
    """
    full_end = seq_len // BLOCK_M * BLOCK_M
    if CAUSAL:
        lo = n0
        mid = tl.minimum(n0 + BLOCK_N, seq_len)
        if HAS_WINDOW:
            end = tl.minimum(n0 + BLOCK_N - 1 + window, seq_len)
            full_end = tl.minimum(full_end, (n0 + window) // BLOCK_M * BLOCK_M)
        else:
            end = n0 * 0 + seq_len
        hi = tl.maximum(full_end, mid)
    else:
        lo = n0 * 0
        mid = n0 * 0
        hi = n0 * 0 + full_end
        end = n0 * 0 + seq_len
    return lo, mid, hi, end


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


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
        k = _load_rows(k_ptrs + n0 * stride_kt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
        k_seq = k_pos
        if MASKED and HAS_SEQ:  # ids are only read where the tile needs a mask
            k_seq = tl.load(seq_ptrs + k_pos, mask=k_ok, other=-1)
        s = _bias_and_mask(
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
        v = _load_rows(v_ptrs + n0 * stride_vt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
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
    q = _load_rows(
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

    lo, mid, hi, end = _key_ranges(m0, seq_len, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
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
        lse -= _alibi_row_shift(offs_m, m0, slope2)
    o_base = OUT + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    o_ptrs = o_base + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(
        o_ptrs, out.to(OUT.dtype.element_ty), mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    )
    tl.store(LSE + pid_bh.to(tl.int64) * seq_len + offs_m, lse, mask=q_ok)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_delta_kernel(
    OUT,
    DO,
    DELTA,
    stride_ob,
    stride_ot,
    stride_oh,
    stride_dob,
    stride_dot,
    stride_doh,
    seq_len,
    num_heads,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """delta[b, h, i] = sum_d O[b, i, h, d] * dO[b, i, h, d], the softmax-backward row term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seq_len
    o_ptrs = OUT + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    do_ptrs = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    o = _load_rows(
        o_ptrs + offs_m[:, None] * stride_ot + offs_d[None, :],
        row_ok,
        offs_d,
        HEAD_DIM,
        True,
        BLOCK_D != HEAD_DIM,
    )
    do = _load_rows(
        do_ptrs + offs_m[:, None] * stride_dot + offs_d[None, :],
        row_ok,
        offs_d,
        HEAD_DIM,
        True,
        BLOCK_D != HEAD_DIM,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * seq_len + offs_m, delta, mask=row_ok)


@triton.jit
def _dq_key_loop(
    dq,
    q,
    do,
    lse,
    delta,
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
    """dQ (unscaled) accumulation over key tiles [start, stop) for one query tile."""
    for n0 in range(start, stop, BLOCK_N):
        k_pos = n0 + offs_n
        k_ok = k_pos < seq_len
        k = _load_rows(k_ptrs + n0 * stride_kt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        v = _load_rows(v_ptrs + n0 * stride_vt, k_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
        k_seq = k_pos
        if MASKED and HAS_SEQ:  # ids are only read where the tile needs a mask
            k_seq = tl.load(seq_ptrs + k_pos, mask=k_ok, other=-1)
        s = _bias_and_mask(
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
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
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
    stride_dqb,
    stride_dqt,
    stride_dqh,
    stride_sb,
    seq_len,
    num_heads,
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

    q_ptrs = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_ptrs = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    q = _load_rows(
        q_ptrs + offs_m[:, None] * stride_qt + offs_d[None, :], q_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    do = _load_rows(
        do_ptrs + offs_m[:, None] * stride_dot + offs_d[None, :],
        q_ok,
        offs_d,
        HEAD_DIM,
        True,
        PAD_D,
    )
    row_stats = pid_bh.to(tl.int64) * seq_len + offs_m
    lse = tl.load(LSE + row_stats, mask=q_ok, other=0.0)
    delta = tl.load(DELTA + row_stats, mask=q_ok, other=0.0)

    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    k_ptrs = k_base + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
    slope2 = 0.0
    if HAS_ALIBI:
        slope2 = tl.load(SLOPES + h) * 1.4426950408889634
    if HAS_ALIBI and CAUSAL:
        lse += _alibi_row_shift(offs_m, m0, slope2)
    seq_ptrs = SEQ + b.to(tl.int64) * stride_sb
    q_seq = offs_m
    if HAS_SEQ:
        q_seq = tl.load(seq_ptrs + offs_m, mask=q_ok, other=-2)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, mid, hi, end = _key_ranges(m0, seq_len, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    # fmt: off
    dq = _dq_key_loop(
        dq, q, do, lse, delta, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt,
        slope2, qk_scale2, seq_len, window, lo, mid, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL,
        HAS_ALIBI, HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_N,
    )
    dq = _dq_key_loop(
        dq, q, do, lse, delta, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt,
        slope2, qk_scale2, seq_len, window, mid, hi, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL,
        HAS_ALIBI, HAS_WINDOW, HAS_SEQ, HAS_SEQ, DOT_PREC, BLOCK_N,
    )
    dq = _dq_key_loop(
        dq, q, do, lse, delta, offs_m, m0, q_seq, k_ptrs, v_ptrs, seq_ptrs, stride_kt, stride_vt,
        slope2, qk_scale2, seq_len, window, hi, end, offs_n, offs_d, HEAD_DIM, PAD_D, CAUSAL,
        HAS_ALIBI, HAS_WINDOW, HAS_SEQ, True, DOT_PREC, BLOCK_N,
    )
    # fmt: on
    dq_base = DQ + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh
    dq_ptrs = dq_base + offs_m[:, None] * stride_dqt + offs_d[None, :]
    dq = dq * softmax_scale
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=q_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


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
        q = _load_rows(q_ptrs + m0 * stride_qt, q_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
        do = _load_rows(do_ptrs + m0 * stride_dot, q_ok, offs_d, HEAD_DIM, MASKED, PAD_D)
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
        s_t = _bias_and_mask(
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
            lse += _alibi_row_shift(q_pos, k_ref, slope2)
        p_t = tl.exp2(s_t - lse[None, :])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
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
    k = _load_rows(
        k_base + offs_n[:, None] * stride_kt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    v = _load_rows(
        v_base + offs_n[:, None] * stride_vt + offs_d[None, :], k_ok, offs_d, HEAD_DIM, True, PAD_D
    )
    seq_ptrs = SEQ + b.to(tl.int64) * stride_sb
    k_seq = offs_n
    if HAS_SEQ:
        k_seq = tl.load(seq_ptrs + offs_n, mask=k_ok, other=-1)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, mid, hi, end = _query_ranges(n0, seq_len, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
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


# --------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------

# Tuned per power-of-two bucket of the sequence length, so varying lengths (evaluation) do not
# re-run the tuning for every length.
_TUNING_KEY = ["seq_bucket", "HEAD_DIM", "CAUSAL", "HAS_ALIBI", "HAS_WINDOW", "HAS_SEQ"]


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
        for bm, bn, warps, stages in shapes
    ]


# Candidate (BLOCK_M, BLOCK_N, warps, stages) per kernel and head-dim class ("64": D <= 64,
# "128": D <= 128, "256": D <= 256), chosen to compile for sm_90 without (or with little) register
# spilling. Query tiles are multiples of key tiles in the forward and dQ kernels; key tiles are
# multiples of query tiles in the dK/dV kernel (the range helpers rely on it).
_CANDIDATES: dict[str, dict[str, list[tuple[int, int, int, int]]]] = {
    "fwd": {
        "64": [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
        "128": [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
        "256": [(64, 64, 4, 2), (64, 32, 4, 2), (128, 64, 8, 2)],
    },
    "dq": {
        "64": [(128, 32, 4, 5), (128, 64, 8, 3), (64, 64, 4, 3)],
        "128": [(128, 64, 8, 3), (128, 32, 4, 5), (64, 64, 4, 3)],
        "256": [(64, 32, 4, 2), (64, 64, 8, 2), (32, 32, 4, 2)],
    },
    "dkdv": {
        "64": [(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 4, 3)],
        "128": [(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3)],
        "256": [(32, 64, 4, 2), (32, 32, 4, 2), (16, 64, 4, 2)],
    },
}
_KERNELS = {"fwd": _attn_fwd_kernel, "dq": _attn_bwd_dq_kernel, "dkdv": _attn_bwd_dkdv_kernel}
_TUNED = {
    (name, dim_class): triton.autotune(configs=_configs(shapes), key=_TUNING_KEY)(_KERNELS[name])
    for name, by_dim in _CANDIDATES.items()
    for dim_class, shapes in by_dim.items()
}

# Small fixed tiles for the CPU interpreter, where autotuning would only cost time.
_INTERPRETER_BLOCKS = {
    "fwd": {"BLOCK_M": 32, "BLOCK_N": 16},
    "dq": {"BLOCK_M": 32, "BLOCK_N": 16},
    "dkdv": {"BLOCK_M": 16, "BLOCK_N": 32},
}


def tuned_configs() -> dict[str, str]:
    """The configs autotuning picked so far, per kernel and head-dim class (for benchmarks)."""
    return {
        f"{name}/D<={dim}": str(tuner.best_config)
        for (name, dim), tuner in _TUNED.items()
        if getattr(tuner, "best_config", None) is not None
    }


def _interpreted() -> bool:
    """True when this module's kernels were built by Triton's CPU interpreter."""
    return not isinstance(_attn_fwd_kernel, triton.runtime.JITFunction)


def _launch(name: str, grid: Any, *args: Any, **flags: Any) -> None:
    """Launch the autotuned kernel on a GPU, or the plain one with small tiles when interpreted."""
    if _interpreted():
        _KERNELS[name][grid](*args, **flags, **_INTERPRETER_BLOCKS[name])
        return
    block_d = flags["BLOCK_D"]
    dim_class = "64" if block_d <= 64 else "128" if block_d <= 128 else "256"
    if flags["DOT_PREC"] == "ieee":
        dim_class = "256"  # float32 tiles take twice the shared memory: use the small ones
    _TUNED[name, dim_class][grid](*args, **flags)


def _rows3(t: torch.Tensor) -> tuple[int, int, int]:
    """Batch, token and head strides of a (B, T, H, D) tensor (its D stride is 1)."""
    return t.stride(0), t.stride(1), t.stride(2)


class _Problem:
    """Shapes, flags and optional operands of one attention call, shared by forward and backward."""

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        slopes: torch.Tensor | None,
        seq_ids: torch.Tensor | None,
        causal: bool,
        window: int | None,
        softmax_scale: float,
    ) -> None:
        self.batch, self.seq_len, self.num_heads, self.head_dim = q.shape
        self.num_kv_heads = k.shape[2]
        self.group_size = self.num_heads // self.num_kv_heads
        self.causal = causal
        self.window = window
        self.softmax_scale = softmax_scale
        self.slopes = slopes
        self.seq_ids = seq_ids
        # Unused pointer arguments still need a tensor on the right device.
        self.dummy = q.new_empty(1, dtype=torch.float32)
        self.dummy_ids = q.new_empty((1, 1), dtype=torch.int32)

    @property
    def flags(self) -> dict[str, Any]:
        return {
            "HEAD_DIM": self.head_dim,
            "BLOCK_D": max(16, triton.next_power_of_2(self.head_dim)),
            "CAUSAL": self.causal,
            "HAS_ALIBI": self.slopes is not None,
            "HAS_WINDOW": self.window is not None,
            "HAS_SEQ": self.seq_ids is not None,
            "seq_bucket": triton.next_power_of_2(self.seq_len),
        }

    def dot_precision(self, dtype: torch.dtype) -> str:
        return "ieee" if dtype == torch.float32 else "tf32"

    @property
    def slopes_arg(self) -> torch.Tensor:
        return self.slopes if self.slopes is not None else self.dummy

    @property
    def seq_arg(self) -> torch.Tensor:
        return self.seq_ids if self.seq_ids is not None else self.dummy_ids

    @property
    def scalars(self) -> tuple[int, int, int, int, float]:
        return (
            self.seq_len,
            self.num_heads,
            self.group_size,
            self.window or 0,
            self.softmax_scale * _LOG2E,
        )

    def query_grid(self, meta: dict[str, Any]) -> tuple[int, int]:
        return triton.cdiv(self.seq_len, meta["BLOCK_M"]), self.batch * self.num_heads

    def key_grid(self, meta: dict[str, Any]) -> tuple[int, int]:
        return triton.cdiv(self.seq_len, meta["BLOCK_N"]), self.batch * self.num_kv_heads


def _forward(
    p: _Problem, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((p.batch, p.num_heads, p.seq_len), dtype=torch.float32, device=q.device)
    seq_len, num_heads, group_size, window, qk_scale2 = p.scalars
    _launch(
        "fwd",
        p.query_grid,
        q, k, v, out, lse, p.slopes_arg, p.seq_arg,
        *_rows3(q), *_rows3(k), *_rows3(v), *_rows3(out), p.seq_arg.stride(0),
        seq_len, num_heads, group_size, window, qk_scale2,
        DOT_PREC=p.dot_precision(q.dtype),
        **p.flags,
    )  # fmt: skip
    return out, lse


def _backward(
    p: _Problem,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    grad_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq_len, num_heads, group_size, window, qk_scale2 = p.scalars
    flags = p.flags
    delta = torch.empty_like(lse)
    delta_block = 64 if not _interpreted() else 32
    _attn_bwd_delta_kernel[(triton.cdiv(seq_len, delta_block), p.batch * num_heads)](
        out, grad_out, delta, *_rows3(out), *_rows3(grad_out), seq_len, num_heads,
        HEAD_DIM=flags["HEAD_DIM"], BLOCK_D=flags["BLOCK_D"], BLOCK_M=delta_block,
    )  # fmt: skip

    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    precision = p.dot_precision(q.dtype)
    _launch(
        "dkdv",
        p.key_grid,
        q, k, v, grad_out, dk, dv, lse, delta, p.slopes_arg, p.seq_arg,
        *_rows3(q), *_rows3(k), *_rows3(v), *_rows3(grad_out), *_rows3(dk), *_rows3(dv),
        p.seq_arg.stride(0),
        seq_len, num_heads, p.num_kv_heads, group_size, window, qk_scale2, p.softmax_scale,
        DOT_PREC=precision,
        **flags,
    )  # fmt: skip
    _launch(
        "dq",
        p.query_grid,
        q, k, v, grad_out, dq, lse, delta, p.slopes_arg, p.seq_arg,
        *_rows3(q), *_rows3(k), *_rows3(v), *_rows3(grad_out), *_rows3(dq), p.seq_arg.stride(0),
        seq_len, num_heads, group_size, window, qk_scale2, p.softmax_scale,
        DOT_PREC=precision,
        **flags,
    )  # fmt: skip
    return dq, dk, dv


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class _TritonAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        slopes: torch.Tensor | None,
        seq_ids: torch.Tensor | None,
        causal: bool,
        window: int | None,
        softmax_scale: float,
    ) -> torch.Tensor:
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        problem = _Problem(q, k, slopes, seq_ids, causal, window, softmax_scale)
        with _on_device(q):
            out, lse = _forward(problem, q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = problem
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = _last_dim_contiguous(grad_outputs[0])
        with _on_device(q):
            dq, dk, dv = _backward(ctx.problem, q, k, v, out, lse, grad_out)
        return dq, dk, dv, None, None, None, None, None


def _on_device(t: torch.Tensor) -> Any:
    return torch.cuda.device(t.device) if t.is_cuda else _NullContext()


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    alibi_slopes: torch.Tensor | None,
    window: int | None,
    sequence_id: torch.Tensor | None,
) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "triton_attention expects q of shape (B, T, H, D) and k, v of shape (B, S, Hkv, D); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    batch, seq_len, heads, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(
            "triton_attention needs k and v of shape (B, S, Hkv, D) matching q's batch and head "
            f"dim; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    if k.shape[1] != seq_len:
        raise ValueError(
            f"triton_attention computes training/prefill attention with T == S; got T={seq_len} "
            f"queries and S={k.shape[1]} keys. Use the `torch` implementation for decoding with a "
            "KV cache."
        )
    if heads % k.shape[2] != 0:
        raise ValueError(
            f"the number of query heads ({heads}) must be a multiple of the number of key/value "
            f"heads ({k.shape[2]}) for grouped-query attention."
        )
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            "triton_attention supports float16, bfloat16 and float32 with q, k and v of one dtype; "
            f"got {q.dtype}, {k.dtype}, {v.dtype}."
        )
    if head_dim > _MAX_HEAD_DIM:
        raise ValueError(
            f"triton_attention supports head dims up to {_MAX_HEAD_DIM}; got {head_dim}."
        )
    if not (q.device == k.device == v.device):
        raise ValueError("q, k and v must be on the same device.")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (heads,):
        raise ValueError(
            f"alibi_slopes must have shape (H,) = ({heads},); got {tuple(alibi_slopes.shape)}."
        )
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int (or None); got {window!r}.")
        if not causal:
            raise ValueError("a sliding window is supported with causal attention only.")
    if sequence_id is not None and (
        tuple(sequence_id.shape) != (batch, seq_len)
        or sequence_id.dtype.is_floating_point
        or sequence_id.dtype == torch.bool
    ):
        raise ValueError(
            f"sequence_id must be an integer tensor of shape (B, T) = ({batch}, {seq_len}); got "
            f"{sequence_id.dtype} {tuple(sequence_id.shape)}."
        )
    if not q.is_cuda and not _interpreted():
        raise RuntimeError(
            f"triton_attention runs on CUDA tensors (got {q.device}); on CPU use attn_impl='torch', "
            "or set TRITON_INTERPRET=1 before triton is imported to run the kernels in Triton's "
            "interpreter (slow, for tests)."
        )


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
    sequence_id: torch.Tensor | None = None,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """Attention of q (B, T, H, D) over k, v (B, T, Hkv, D), differentiable in q, k and v.

    Args:
        q: queries, float16 / bfloat16 (float32 accepted), head dimension contiguous.
        k: keys with ``H % Hkv == 0`` (Hkv == 1 is multi-query attention).
        v: values, same shape as ``k``.
        causal: key ``j`` visible to query ``i`` only if ``j <= i``.
        alibi_slopes: (H,) slopes; adds ``slope[h] * (j - i)`` to the scores (``-slope*|i - j|``
            when not causal). Not differentiated.
        window: sliding window (causal only): key ``j`` visible to query ``i`` only if
            ``i - j < window``.
        sequence_id: (B, T) integer ids of packed sequences; a query sees keys of its own id only.
        softmax_scale: score scale, ``1 / sqrt(D)`` by default.

    Returns:
        The attention output, (B, T, H, D), in q's dtype.
    """
    if q.is_cuda and torch.is_autocast_enabled("cuda"):
        # Like SDPA under autocast: run in the autocast dtype (q may come out of an fp32 qk-norm).
        amp_dtype = torch.get_autocast_dtype("cuda")
        q, k, v = (t.to(amp_dtype) for t in (q, k, v))
    _check_inputs(q, k, v, causal, alibi_slopes, window, sequence_id)
    seq_len, head_dim = q.shape[1], q.shape[3]
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.detach().to(device=q.device, dtype=torch.float32).contiguous()
    seq_ids = None
    if sequence_id is not None:
        seq_ids = sequence_id.to(device=q.device, dtype=torch.int32).contiguous()
    if window is not None and window >= seq_len:
        window = None  # the window covers every causal key: plain causal attention
    out = _TritonAttentionFunction.apply(q, k, v, slopes, seq_ids, causal, window, scale)
    return out
