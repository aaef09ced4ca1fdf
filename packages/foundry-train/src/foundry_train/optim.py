"""Optimizers (incl. our decoupled LionW) and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from composer.core import State
from composer.optim import (
    ComposerScheduler,
    ConstantWithWarmupScheduler,
    CosineAnnealingWithWarmupScheduler,
    LinearWithWarmupScheduler,
)

from foundry_train.config.sections import OptimizerConfig, SchedulerConfig
from foundry_train.config.times import parse_time
from foundry_train.errors import FoundryError

__all__ = [
    "DecoupledAdamW",
    "DecoupledLionW",
    "InverseSqrtWithWarmupScheduler",
    "build_optimizer",
    "build_scheduler",
]


class DecoupledAdamW(torch.optim.AdamW):
    """AdamW whose weight decay is decoupled from the learning rate's peak.

    Each step shrinks a parameter by ``weight_decay * lr / initial_lr`` (composer's "decoupled"
    convention, so ``weight_decay`` is the absolute per-step shrink at peak lr) instead of
    torch's ``weight_decay * lr``. Built on ``torch.optim.AdamW`` with its weight decay set to
    ``weight_decay / initial_lr``, the product torch applies is exactly that, and torch's
    multi-tensor (``foreach``) and ``fused`` kernels do the work: one launch per group of
    tensors instead of a Python loop over parameters.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay / lr, fused=fused
        )


class DecoupledLionW(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    update = sign(beta1 * m + (1 - beta1) * g);  p -= lr * update;  m = beta2 * m + (1 - beta2) * g.
    Weight decay is decoupled from the gradient and scaled by lr / initial lr, so `weight_decay`
    is an absolute per-step shrink at peak lr (composer's "decoupled" convention).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})
        for group in self.param_groups:
            group["initial_lr"] = group["lr"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            initial_lr = group.get("initial_lr", lr)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd != 0:
                    p.mul_(1 - wd * lr / initial_lr)
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = m.mul(beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def build_optimizer(cfg: OptimizerConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable ``params``."""
    trainable = [p for p in params if p.requires_grad]
    if cfg.name in ("adamw", "decoupled_adamw"):
        adam = torch.optim.AdamW if cfg.name == "adamw" else DecoupledAdamW
        return adam(
            trainable,
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            fused=_fused(cfg, trainable),
        )
    return DecoupledLionW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _fused(cfg: OptimizerConfig, params: list[torch.Tensor]) -> bool | None:
    """The fused AdamW kernel when training runs on a GPU (``auto``), else torch's default.

    The trainer trains on the GPU whenever one is present, and composer moves parameters built
    on the CPU or the meta device there before the first step, so CUDA's presence decides.
    """
    if cfg.fused == "off" or not params:
        return None
    if not torch.cuda.is_available():
        if cfg.fused == "on":
            raise FoundryError(
                "optimizer.fused is 'on' but there is no CUDA device; the fused AdamW kernel "
                "needs a GPU. Use fused: auto (the default) or off."
            )
        return None
    return True


def _batches(value: str, what: str) -> int:
    t = parse_time(value)
    if t.unit != "ba":
        raise FoundryError(
            f"scheduler.{what} is '{value}', but inv_sqrt_with_warmup needs batches ('100ba')."
        )
    return int(t.value)


class InverseSqrtWithWarmupScheduler(ComposerScheduler):
    """Linear warmup from 0 (composer's: t / t_warmup), then the multiplier
    sqrt(t_scale / (t - t_warmup + t_scale)): 1 where warmup ends, no jump (batches)."""

    def __init__(self, t_warmup: str, t_scale: str) -> None:
        self.warmup = _batches(t_warmup, "t_warmup")
        self.scale = max(_batches(t_scale, "t_scale"), 1)

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        step = int(state.timestamp.batch)
        if step < self.warmup:
            return step / self.warmup
        return math.sqrt(self.scale / (step - self.warmup + self.scale))


def build_scheduler(cfg: SchedulerConfig) -> ComposerScheduler:
    """The configured learning-rate schedule."""
    if cfg.name == "cosine_with_warmup":
        return CosineAnnealingWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha_f=cfg.alpha_f)
    if cfg.name == "linear_decay_with_warmup":
        return LinearWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha_f=cfg.alpha_f)
    if cfg.name == "constant_with_warmup":
        return ConstantWithWarmupScheduler(t_warmup=cfg.t_warmup)
    return InverseSqrtWithWarmupScheduler(cfg.t_warmup, cfg.t_scale)
