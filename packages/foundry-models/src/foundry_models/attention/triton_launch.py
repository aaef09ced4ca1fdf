"""Launch configuration of the Triton attention kernels: autotuned tiles on a GPU, fixed tiles in the interpreter."""

from __future__ import annotations

from typing import Any

import torch
import triton

from foundry_models.attention.triton_backward_dkdv import attn_bwd_dkdv_kernel
from foundry_models.attention.triton_backward_dq import attn_bwd_delta_kernel, attn_bwd_dq_kernel
from foundry_models.attention.triton_forward import attn_fwd_kernel

_LOG2E = 1.4426950408889634

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
_KERNELS = {"fwd": attn_fwd_kernel, "dq": attn_bwd_dq_kernel, "dkdv": attn_bwd_dkdv_kernel}
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


def interpreted() -> bool:
    """True when this module's kernels were built by Triton's CPU interpreter."""
    return not isinstance(attn_fwd_kernel, triton.runtime.JITFunction)


def _launch(name: str, grid: Any, *args: Any, **flags: Any) -> None:
    """Launch the autotuned kernel on a GPU, or the plain one with small tiles when interpreted."""
    if interpreted():
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


class Problem:
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


def run_forward(
    p: Problem, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
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


def run_backward(
    p: Problem,
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
    delta_block = 64 if not interpreted() else 32
    attn_bwd_delta_kernel[(triton.cdiv(seq_len, delta_block), p.batch * num_heads)](
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
