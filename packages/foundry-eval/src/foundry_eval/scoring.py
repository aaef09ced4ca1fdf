"""The log-likelihood engine: batched, length-sorted, with a shared multiple-choice prefix.

Every request is a (context tokens, continuation tokens) pair. For each one we compute the summed
log-probability of the continuation, whether greedy decoding reproduces it, and its token count.

Two paths give the same numbers (up to float rounding):

- full: ``(context + continuation)[:-1]`` is fed once; requests are sorted by length (longest
  first) so a batch holds similar lengths and little padding; log-softmax is taken only at the
  continuation positions.
- shared prefix: for a question whose choices share one context, the context is run once
  (left-padded across the questions of a batch, with explicit position ids) and its key/value cache
  is reused by every choice, so a long few-shot prompt is not recomputed per choice. The choices
  then run in length-sorted chunks, so a one-word answer is not padded to the longest one. Needs a
  model that takes a key/value cache (``cache`` or ``past_key_values``: any Hugging Face causal LM).

In both, where a length-sorted list is cut into batches is chosen by
:func:`foundry_eval.batching.plan_batches` (least padded compute plus per-call cost), with at most
``batch_size`` sequences (or shared contexts) per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from foundry_eval.batching import call_overhead_tokens, plan_batches
from foundry_eval.forward import (
    Capabilities,
    ContinuationScore,
    ScoreGroup,
    input_device,
    score_full_batch,
    score_shared_batch,
)

__all__ = ["ContinuationScore", "ScoreGroup", "input_device", "score_groups"]

# Context tokens a shared prefix must save before it is worth its extra forward call, and how
# many context tokens one choice token run over a copied cache must save (see _sharing_pays).
_MIN_SHARED_SAVING = 8
_CACHED_TOKEN_COST = 2


@dataclass(frozen=True)
class _Run:
    """Everything a scoring pass needs besides the groups."""

    model: Any
    device: torch.device
    batch_size: int
    max_seq_len: int
    pad_id: int
    caps: Capabilities
    overhead: int
    on_progress: Callable[[int], object] | None


def score_groups(
    model: Any,
    groups: list[ScoreGroup],
    *,
    batch_size: int,
    max_seq_len: int,
    pad_id: int,
    device: torch.device | None = None,
    share_prefix: bool = True,
    on_progress: Callable[[int], object] | None = None,
) -> list[list[ContinuationScore]]:
    """Score every continuation of every group; results follow the input order.

    ``batch_size`` is the most sequences (or shared contexts) per forward pass. ``on_progress(n)``
    is called with the number of groups finished after each batch.
    """
    dev = input_device(model, device)
    caps = Capabilities.of(model)
    run = _Run(
        model, dev, batch_size, max_seq_len, pad_id, caps, call_overhead_tokens(dev), on_progress
    )
    results: list[list[ContinuationScore] | None] = [None] * len(groups)
    shared_ok = share_prefix and caps.cache_arg is not None
    shared: list[int] = []
    single: list[int] = []
    for i, grp in enumerate(groups):
        (shared if shared_ok and _sharing_pays(grp, max_seq_len) else single).append(i)
    with torch.inference_mode(), _host_threads(1 if dev.type == "cuda" else None):
        _run_shared(run, groups, shared, results)
        _run_full(run, groups, single, results)
    return [r if r is not None else [] for r in results]


@contextlib.contextmanager
def _host_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` for the block (None: unchanged).

    With the model on a GPU only small bookkeeping tensors are built on the host, and OpenMP's
    threads spin after each of those. Measured on one H200 (16 cores), 1,773 gauntlet examples
    with a shared prefix: 16 threads 2.72 s wall and 5.79 CPU-s, one thread 2.53 s and 3.05 CPU-s.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sharing_pays(grp: ScoreGroup, max_seq_len: int) -> bool:
    """Whether computing the context once saves work.

    Sharing skips ``N - 1`` context passes, but the choices then run over a copied key/value
    cache, which costs more per token than a plain forward (about 2.6x in a CPU profile of
    arc_easy 3-shot on the benchmark's model). So sharing must save at least twice as many context
    tokens as the choices hold: true for few-shot prompts, not for 0-shot questions with
    sentence-long answers (piqa, where sharing measured no faster).
    """
    if len(grp.continuations) < 2 or not grp.context:
        return False
    longest = max(len(c) for c in grp.continuations)
    fits = len(grp.context) + longest <= max_seq_len + 1
    saved = (len(grp.continuations) - 1) * len(grp.context)
    choices = sum(len(c) for c in grp.continuations)
    return fits and saved >= max(_CACHED_TOKEN_COST * choices, _MIN_SHARED_SAVING)


def _run_shared(
    run: _Run,
    groups: list[ScoreGroup],
    order: list[int],
    results: list[list[ContinuationScore] | None],
) -> None:
    """At most ``batch_size`` contexts per batch; their choices follow over the cache."""
    for batch in _shared_batches(run, groups, order):
        scored = score_shared_batch(
            run.model, [groups[i] for i in batch], run.device, run.pad_id, run.caps
        )
        for i, s in zip(batch, scored, strict=True):
            results[i] = s
        if run.on_progress:
            run.on_progress(len(batch))


def _shared_batches(run: _Run, groups: list[ScoreGroup], order: list[int]) -> list[list[int]]:
    """Longest contexts first, cut where padding costs most, and never wider than the model.

    A shared batch pads every context to the batch's longest and every choice to its longest
    (minus the first token, predicted by the context), so that padded width is what must fit.
    """
    ranked = sorted(order, key=lambda i: -len(groups[i].context))
    plan = plan_batches(
        [len(groups[i].context) for i in ranked],
        run.batch_size,
        run.overhead,
        tails=[max(len(c) for c in groups[i].continuations) - 1 for i in ranked],
        max_width=run.max_seq_len,
    )
    return [[ranked[k] for k in b] for b in plan]


def _run_full(
    run: _Run,
    groups: list[ScoreGroup],
    order: list[int],
    results: list[list[ContinuationScore] | None],
) -> None:
    """Each (context, continuation) as one sequence; longest first, in padding-aware batches."""
    flat = [(i, j) for i in order for j in range(len(groups[i].continuations))]
    pairs = {ij: groups[ij[0]].pair(ij[1]) for ij in flat}
    width = {ij: min(len(c) + len(t), run.max_seq_len + 1) - 1 for ij, (c, t) in pairs.items()}
    flat.sort(key=lambda ij: -width[ij])
    partial: dict[int, dict[int, ContinuationScore]] = {}
    for batch in plan_batches([width[ij] for ij in flat], run.batch_size, run.overhead):
        chunk = [flat[k] for k in batch]
        scores = score_full_batch(
            run.model, [pairs[ij] for ij in chunk], run.device, run.max_seq_len, run.pad_id,
            run.caps,
        )  # fmt: skip
        done = 0
        for (i, j), s in zip(chunk, scores, strict=True):
            partial.setdefault(i, {})[j] = s
            if len(partial[i]) == len(groups[i].continuations):
                results[i] = [partial[i][x] for x in range(len(groups[i].continuations))]
                done += 1
        if run.on_progress and done:
            run.on_progress(done)
