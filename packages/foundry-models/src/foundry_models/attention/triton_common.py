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
* window ``w``: additionally ``i - j <= w`` (MPT's ``sliding_window_size``: ``w`` past tokens
  besides the query itself; the convention of every implementation, see dispatch.py).
* ``sequence_id`` (B, T): additionally ``sequence_id[b, i] == sequence_id[b, j]``.
* ALiBi: ``score += slope[h] * (j - i)`` (causal), ``-slope[h] * |i - j|`` otherwise.

The kernels run on CUDA tensors, or on CPU tensors through Triton's interpreter when the
environment variable ``TRITON_INTERPRET=1`` is set before ``triton`` is first imported.
"""

# Triton's `tl.constexpr` parameter annotations are markers for its compiler, not Python types:
# passing a literal where one is declared is correct, so pyright's argument check is off here.
# pyright: reportArgumentType=false

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_rows(
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
def alibi_bias(q_pos, k_pos, ref, slope2, CAUSAL: tl.constexpr):
    """ALiBi bias in log2 units for broadcastable query/key positions.

    Causal: ``slope * (j - i)`` splits into ``slope * (j - ref)``, computed here once per key (a
    broadcast vector, one add per score), and ``-slope * (i - ref)``, constant along a row, which the
    callers fold into the row's log-sum-exp instead (see ``alibi_row_shift``). ``ref`` is the start
    of the program's own tile, so both parts stay small where probabilities are not negligible.
    """
    if CAUSAL:
        bias = slope2 * (k_pos - ref).to(tl.float32)
    else:
        bias = -slope2 * tl.abs((k_pos - q_pos).to(tl.float32))
    return bias


@triton.jit
def alibi_row_shift(q_pos, ref, slope2):
    """The per-row part ``slope * (i - ref)`` that causal ``alibi_bias`` leaves out."""
    return slope2 * (q_pos - ref).to(tl.float32)


@triton.jit
def visible(
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
        vis = vis & (q_pos - k_pos <= window)
    if HAS_SEQ:
        vis = vis & (q_seq == k_seq)
    return vis


@triton.jit
def bias_and_mask(
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
        s += alibi_bias(q_pos, k_pos, ref, slope2, CAUSAL)
    if MASKED:
        vis = visible(q_pos, k_pos, q_seq, k_seq, seq_len, window, CAUSAL, HAS_WINDOW, HAS_SEQ)
        s = tl.where(vis, s, float("-inf"))
    return s


@triton.jit
def key_ranges(
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
            lo = tl.maximum(m0 - window, 0) // BLOCK_N * BLOCK_N
            mid = tl.maximum(m0 + BLOCK_M - 1 - window, lo)
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
def query_ranges(
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
            end = tl.minimum(n0 + BLOCK_N + window, seq_len)
            full_end = tl.minimum(full_end, (n0 + window + 1) // BLOCK_M * BLOCK_M)
        else:
            end = n0 * 0 + seq_len
        hi = tl.maximum(full_end, mid)
    else:
        lo = n0 * 0
        mid = n0 * 0
        hi = n0 * 0 + full_end
        end = n0 * 0 + seq_len
    return lo, mid, hi, end
