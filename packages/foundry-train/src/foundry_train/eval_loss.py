"""Evaluation loss without the full logits: a batch is scored as (summed loss, token count).

The language-modelling evaluators report cross-entropy and perplexity over every scored token. A
Foundry MPT computes the summed loss position chunk by chunk (``return_logits=False``), so an
evaluation batch never holds its (B, T, V) logits: at 16 x 8192 tokens and a 50k vocabulary
those are 25 GiB in fp32. Other causal LMs return logits; they are reduced one sequence at a
time, so only one row is ever upcast to fp32. Either way the metrics accumulate sums, which add
up across batches and ranks exactly as composer's own ``LanguageCrossEntropy`` states do.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from foundry_data import IGNORE_INDEX
from torchmetrics import Metric

__all__ = ["EvalLoss", "TokenCrossEntropy", "TokenPerplexity", "loss_sum_from_logits"]


class EvalLoss(NamedTuple):
    """One evaluation batch: the summed next-token loss and how many tokens it covers."""

    loss_sum: torch.Tensor
    count: torch.Tensor


def loss_sum_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> EvalLoss:
    """Summed next-token loss of (B, T, V) logits against (B, T) labels, a row at a time."""
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    target = labels[:, 1:].to(logits.device)
    for row in range(logits.shape[0]):
        total += F.cross_entropy(
            logits[row, :-1].float(), target[row], ignore_index=IGNORE_INDEX, reduction="sum"
        )
    return EvalLoss(total, (target != IGNORE_INDEX).sum())


class TokenCrossEntropy(Metric):
    """Mean next-token cross-entropy over every scored token of the evaluation."""

    full_state_update = False
    sum_loss: torch.Tensor
    total_items: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_loss", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total_items", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scored: EvalLoss) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        self.sum_loss += scored.loss_sum.detach().float().to(self.sum_loss.device)
        self.total_items += scored.count.to(self.total_items.device)

    def compute(self) -> torch.Tensor:
        return self.sum_loss / self.total_items


class TokenPerplexity(TokenCrossEntropy):
    """exp of the mean next-token cross-entropy."""

    def compute(self) -> torch.Tensor:
        return torch.exp(self.sum_loss / self.total_items)
