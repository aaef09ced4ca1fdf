"""Choosing the next token from a row of logits.

Logits are first adjusted by the request's processors, in this order: the repetition penalty
(CTRL-style: a logit of a token already in the prompt or the output is divided by the penalty
when positive and multiplied by it when negative), ``logit_bias`` (added to the named tokens),
and suppression of end-of-sequence tokens while fewer than ``min_tokens`` were generated. Then a
token is chosen: greedy (argmax) at temperature 0, otherwise temperature, top-k and top-p
sampling.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import FoundryError

__all__ = ["SamplingParams", "TokenLogprob", "adjust_logits", "sample_token", "token_logprob"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy (argmax).

    ``logit_bias`` pairs token ids with a bias added to their logits (-100 bans a token in
    practice, +100 forces it); ``repetition_penalty`` 1.0 is off; ``min_tokens`` keeps
    end-of-sequence tokens out until that many tokens were generated; ``ignore_eos`` goes on past
    an end-of-sequence token (until ``max_new_tokens`` or a stop string).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise FoundryError(
                f"temperature must be >= 0, got {self.temperature}. Use 0 for greedy decoding."
            )
        if not (0.0 < self.top_p <= 1.0):
            raise FoundryError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise FoundryError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")
        if not (self.repetition_penalty > 0.0):
            raise FoundryError(
                f"repetition_penalty must be > 0 (1 disables it), got {self.repetition_penalty}."
            )
        if self.min_tokens < 0:
            raise FoundryError(f"min_tokens must be >= 0, got {self.min_tokens}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def adjusts_logits(self) -> bool:
        return bool(self.logit_bias) or self.repetition_penalty != 1.0 or self.min_tokens > 0

    def make_rng(self) -> np.random.Generator:
        # any integer is a seed (OpenAI's API allows negative ones); numpy takes 0 <= seed < 2**64
        return np.random.default_rng(None if self.seed is None else self.seed % (1 << 64))


def adjust_logits(
    logits: np.ndarray,
    params: SamplingParams,
    seen: Sequence[int] = (),
    eos_ids: Collection[int] = (),
    generated: int = 0,
) -> npt.NDArray[np.float64]:
    """``logits`` (shape (V,)) after the repetition penalty, the bias and ``min_tokens``.

    ``seen`` are the token ids of the prompt and the output so far; ``generated`` how many tokens
    were generated; ``eos_ids`` the tokens ``min_tokens`` holds back.
    """
    scores = logits.astype(np.float64)  # a copy: the caller's logits are left alone
    if params.repetition_penalty != 1.0 and len(seen):
        ids = np.unique(np.asarray(seen, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < scores.shape[0])]
        picked = scores[ids]
        with np.errstate(over="ignore"):  # a tiny penalty overflows to inf: sample_token copes
            scores[ids] = np.where(
                picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty
            )
    for token, bias in params.logit_bias:
        if 0 <= token < scores.shape[0]:
            scores[token] += bias
    if generated < params.min_tokens:
        for token in eos_ids:
            if 0 <= token < scores.shape[0]:
                scores[token] = -np.inf
    return scores


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Pick one token id from ``logits`` (shape (V,), any float dtype), already adjusted."""
    if params.greedy:
        return int(np.argmax(logits))
    raw = logits.astype(np.float64)
    raw = np.where(np.isnan(raw), -np.inf, raw)  # a NaN score counts as a banned token
    with np.errstate(over="ignore"):  # a tiny temperature overflows to inf: handled just below
        scores = raw / params.temperature
    top = float(np.max(scores))
    if not np.isfinite(top):
        # +inf: a tiny temperature (or a tiny repetition penalty before it) overflowed the scale;
        # temperature -> 0 is greedy decoding, so the largest unscaled score wins (not a draw
        # among the tokens that overflowed). -inf everywhere: every token was banned, take the first
        return int(np.argmax(raw))
    if 0 < params.top_k < scores.shape[0]:
        cutoff = np.partition(scores, -params.top_k)[-params.top_k]
        scores = np.where(scores < cutoff, -np.inf, scores)
    with np.errstate(over="ignore"):  # a score ~1e308 below the top: exp gives 0, as it should
        probs: npt.NDArray[np.float64] = np.exp(scores - top)
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


@dataclass(frozen=True)
class TokenLogprob:
    """A token with its log-probability under the model and the ``top`` most likely tokens.

    Log-probabilities are the model's own (log-softmax of the raw logits, before temperature or
    any processor). ``logprob`` is None for a prompt's first token, which has no context.
    """

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under ``logits`` (shape (V,)) and the ``top`` best tokens."""
    scores = logits.astype(np.float64)
    peak = float(np.max(scores))
    logprobs = scores - (peak + float(np.log(np.sum(np.exp(scores - peak)))))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        order = np.argsort(-logprobs, kind="stable")[:top]
        best = tuple((int(i), float(logprobs[i])) for i in order)
    return TokenLogprob(token, float(logprobs[token]), best)
