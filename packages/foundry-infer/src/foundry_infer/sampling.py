"""Choosing the next token from a row of logits: greedy, temperature, top-k and top-p."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import FoundryError

__all__ = ["SamplingParams", "sample_token"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise FoundryError(
                f"temperature must be >= 0, got {self.temperature}. Use 0 for greedy decoding."
            )
        if not (0.0 < self.top_p <= 1.0):
            raise FoundryError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise FoundryError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Pick one token id from ``logits`` (shape (V,), any float dtype)."""
    if params.greedy:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < scores.shape[0]:
        cutoff = np.partition(scores, -params.top_k)[-params.top_k]
        scores = np.where(scores < cutoff, -np.inf, scores)
    probs: npt.NDArray[np.float64] = np.exp(scores - np.max(scores))
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = int(np.searchsorted(cumulative, params.top_p)) + 1  # smallest set reaching top_p
        kept = order[:keep]
        trimmed = np.zeros_like(probs)
        trimmed[kept] = probs[kept]
        probs = trimmed / trimmed.sum()
    return int(rng.choice(len(probs), p=probs))
