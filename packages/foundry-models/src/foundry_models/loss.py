"""Next-token cross-entropy fused with the output projection, computed chunk by chunk.

The plain path materialises logits for every position (B*T x V, e.g. 16*2048 x 50368) in the
autocast dtype, upcasts them to fp32 for the softmax, and keeps them for the backward pass: several
GiB of memory traffic and activation memory per step. `chunked_linear_cross_entropy` instead walks
the positions in chunks; for each chunk it computes the logits, the loss and, at once, the
gradients with respect to the hidden states and the projection weight, then drops the logits. The
backward pass only scales the stored gradients. FLOPs are those of the plain path (three matmuls
of N x d x V); the full logits never exist.

`chunked_cross_entropy_sum` is the forward-only walk for scoring (evaluation under no_grad): the
summed loss and the number of scored positions, with no gradient buffers.
`reference_linear_cross_entropy` is the slow, obvious path the tests compare against.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "chunked_cross_entropy_sum",
    "chunked_linear_cross_entropy",
    "reference_linear_cross_entropy",
]

IGNORE_INDEX = -100  # torch's cross_entropy default; foundry-data writes it (tests check)


def reference_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, logit_scale: float = 1.0
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T * logit_scale` against `labels` (-100 ignored)."""
    logits = (hidden @ weight.T).float() * logit_scale  # (N, V)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


class _LossContext(Protocol):
    """What the autograd context holds between `forward` and `backward` here."""

    needs_input_grad: tuple[bool, ...]
    saved_tensors: tuple[torch.Tensor, ...]
    dtypes: tuple[torch.dtype, torch.dtype]

    def save_for_backward(self, *tensors: torch.Tensor) -> None: ...


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: _LossContext,
        hidden: torch.Tensor,  # (N, d)
        weight: torch.Tensor,  # (V, d)
        labels: torch.Tensor,  # (N,)
        chunk_size: int,
        logit_scale: float,
    ) -> torch.Tensor:
        if torch.is_autocast_enabled(hidden.device.type):
            dtype = torch.get_autocast_dtype(hidden.device.type)
        else:
            dtype = hidden.dtype
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            w = weight.to(dtype)
            need_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            valid = labels != IGNORE_INDEX
            n_valid = valid.sum()
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for start in range(0, h.shape[0], chunk_size):
                hc = h[start : start + chunk_size]  # (c, d)
                lc = labels[start : start + chunk_size]
                vc = valid[start : start + chunk_size]
                target = lc.clamp(min=0)
                logits = (hc @ w.T).float() * logit_scale  # (c, V)
                lse = torch.logsumexp(logits, dim=-1)  # (c,)
                picked = logits.gather(1, target[:, None]).squeeze(1)
                loss += torch.where(vc, lse - picked, 0.0).sum()
                if not need_grads:
                    continue
                # d(sum of losses)/d(logits) = softmax - one_hot, zero on ignored rows.
                probs = torch.exp_(logits.sub_(lse[:, None]))
                probs.scatter_add_(1, target[:, None], -torch.ones_like(lse)[:, None])
                probs.mul_((vc.to(probs.dtype) * logit_scale)[:, None])
                g = probs.to(dtype)
                grad_h[start : start + chunk_size] = g @ w
                grad_w.add_((g.T @ hc).float())
            denom = n_valid.clamp(min=1).to(torch.float32)
        ctx.save_for_backward(grad_h, grad_w, denom)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss / denom

    @staticmethod
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
        # torch declares backward(ctx, *grad_outputs); the loss has one output, so one gradient
        ctx: _LossContext,
        grad_out: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        grad_h, grad_w, denom = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        scale = grad_out / denom
        return (grad_h * scale).to(h_dtype), (grad_w * scale).to(w_dtype), None, None, None


def _check_shapes(hidden: torch.Tensor, labels: torch.Tensor) -> None:
    if hidden.dim() != 2 or labels.dim() != 1 or hidden.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected hidden (N, d) and labels (N,), got {tuple(hidden.shape)} and "
            f"{tuple(labels.shape)}"
        )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = 8192,
    logit_scale: float = 1.0,
) -> torch.Tensor:
    """Mean next-token loss over `labels != -100`, never materialising the full logits.

    Args:
        hidden: (N, d) final hidden states (already shifted to align with `labels`).
        weight: (V, d) output projection (the embedding matrix when tied).
        labels: (N,) target ids, -100 where no loss is taken.
        chunk_size: positions per chunk; memory is O(chunk_size x V).
        logit_scale: multiplies the logits before the softmax (MPT's `logit_scale`).
    """
    _check_shapes(hidden, labels)
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, labels, chunk_size, float(logit_scale))


def chunked_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = 8192,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over `labels != -100` and how many positions that is, forward only.

    For scoring: memory is O(chunk_size x V) whatever N is, and nothing is kept for a backward
    pass. The logits are taken in the autocast dtype when autocast is on and reduced in fp32.
    Shapes as in `chunked_linear_cross_entropy`.
    """
    _check_shapes(hidden, labels)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk_size):
            lc = labels[start : start + chunk_size]
            logits = (hidden[start : start + chunk_size] @ weight.T).float() * logit_scale
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, lc.clamp(min=0)[:, None]).squeeze(1)
            total += torch.where(lc != IGNORE_INDEX, lse - picked, 0.0).sum()
    return total, (labels != IGNORE_INDEX).sum()
