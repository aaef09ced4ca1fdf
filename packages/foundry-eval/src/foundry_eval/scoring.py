"""The log-likelihood engine: batched, length-sorted, with a shared multiple-choice prefix.

Every request is a (context tokens, continuation tokens) pair. For each one we compute the summed
log-probability of the continuation, whether greedy decoding reproduces it, and its token count.

Two paths give the same numbers (up to float rounding):

- full: ``(context + continuation)[:-1]`` is fed once; requests are sorted by length (longest
  first) so a batch holds similar lengths and little padding; log-softmax is taken only at the
  continuation positions.
- shared prefix: for a question whose choices share one context, the context is run once
  (left-padded across the questions of a batch, with explicit position ids) and its key/value cache
  is reused by every choice, so a long few-shot prompt is not recomputed per choice. Needs a model
  that takes a key/value cache (``cache`` or ``past_key_values``: any Hugging Face causal LM).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ContinuationScore", "ScoreGroup", "input_device", "score_groups"]


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float
    num_tokens: int
    greedy: bool

    @property
    def mean_loss(self) -> float:
        """Mean per-token negative log-likelihood (llm-foundry's multiple-choice criterion)."""
        return -self.logprob / max(self.num_tokens, 1)


@dataclass
class ScoreGroup:
    """Sequences sharing one prefix: ``context`` + each of ``continuations``.

    Only the last ``scored[j]`` tokens of continuation ``j`` are scored (all of them when
    ``scored`` is None): multiple-choice questions share the context and score each whole choice;
    schema questions share the longest common prefix of their options and score the tail.
    """

    context: list[int]
    continuations: list[list[int]]
    scored: list[int] | None = None

    def n_scored(self, j: int) -> int:
        return len(self.continuations[j]) if self.scored is None else self.scored[j]

    def pair(self, j: int) -> tuple[list[int], list[int]]:
        """(everything before the scored tokens, the scored tokens) of sequence ``j``."""
        cont = self.continuations[j]
        cut = len(cont) - self.n_scored(j)
        return self.context + cont[:cut], cont[cut:]


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class _Capabilities:
    """What the model's forward accepts beyond input_ids/attention_mask."""

    cache_arg: str | None  # "cache" (transformers >= 5.2x), "past_key_values" (older), or None
    position_ids: bool
    logits_to_keep: bool

    @classmethod
    def of(cls, model: Any) -> _Capabilities:
        cache_arg = next((n for n in ("cache", "past_key_values") if _accepts(model, n)), None)
        return cls(cache_arg, _accepts(model, "position_ids"), _accepts(model, "logits_to_keep"))


def input_device(model: Any, device: torch.device | None) -> torch.device:
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _gather_scores(
    logits_rows: torch.Tensor, targets: torch.Tensor, sizes: Sequence[int]
) -> list[ContinuationScore]:
    """Scores from (N, V) logits at continuation positions and (N,) targets, split by ``sizes``."""
    logprobs = torch.log_softmax(logits_rows.float(), dim=-1)
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    greedy = logprobs.argmax(dim=-1) == targets
    out = []
    for lp, gr in zip(picked.split(list(sizes)), greedy.split(list(sizes)), strict=True):
        out.append(ContinuationScore(float(lp.double().sum()), int(lp.numel()), bool(gr.all())))
    return out


def _score_full_batch(
    model: Any,
    pairs: list[tuple[list[int], list[int]]],
    device: torch.device,
    max_len: int,
    pad_id: int,
    caps: _Capabilities,
) -> list[ContinuationScore]:
    """One forward over ``(context + continuation)[:-1]`` rows.

    With a model that takes ``position_ids`` rows are left-padded (every continuation ends at the
    last column), so only the last ``max continuation`` positions need logits (``logits_to_keep``);
    otherwise rows are right-padded and all logits are computed.
    """
    inputs = [(ctx + cont)[-(max_len + 1) :][:-1] for ctx, cont in pairs]
    width = max(len(x) for x in inputs)
    left = caps.position_ids
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for b, inp in enumerate(inputs):
        sl = slice(width - len(inp), width) if left else slice(0, len(inp))
        ids[b, sl] = torch.tensor(inp)
        mask[b, sl] = 1
    kwargs: dict[str, Any] = {}
    keep = width
    if left:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        if caps.logits_to_keep:
            keep = max(len(c) for _, c in pairs)
            kwargs["logits_to_keep"] = keep
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    offset = width - logits.shape[1]  # logits cover columns offset..width-1
    rows, cols, tgts = [], [], []
    for b, (inp, (_, cont)) in enumerate(zip(inputs, pairs, strict=True)):
        n = len(cont)
        end = width if left else len(inp)
        rows += [b] * n
        cols += [c - offset for c in range(end - n, end)]
        tgts += cont
    sel = logits[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)]
    return _gather_scores(sel, torch.tensor(tgts, device=logits.device), [len(c) for _, c in pairs])


def _repeat_cache(past: Any, index: torch.Tensor) -> Any:
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(index)
        return past
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in past)


def _score_shared_batch(
    model: Any, groups: list[ScoreGroup], device: torch.device, pad_id: int, caps: _Capabilities
) -> list[list[ContinuationScore]]:
    use_positions = caps.position_ids
    g = len(groups)
    width = max(len(x.context) for x in groups)
    ids = torch.full((g, width), pad_id, dtype=torch.long)
    mask = torch.zeros((g, width), dtype=torch.long)
    for i, grp in enumerate(groups):  # left padding: every context ends at the last column
        ids[i, width - len(grp.context) :] = torch.tensor(grp.context)
        mask[i, width - len(grp.context) :] = 1
    kwargs: dict[str, Any] = {"use_cache": True}
    if use_positions:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
    if caps.logits_to_keep:
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    last = out.logits[:, -1, :]  # (G, V): predicts each continuation's first token
    owner = [i for i, grp in enumerate(groups) for _ in grp.continuations]
    conts = [c for grp in groups for c in grp.continuations]
    rest = max(len(c) for c in conts) - 1
    later = None
    if rest > 0:
        r = len(conts)
        returned = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        past = _repeat_cache(returned, torch.tensor(owner, device=device))
        cids = torch.full((r, rest), pad_id, dtype=torch.long)
        cmask = torch.zeros((r, rest), dtype=torch.long)
        for j, c in enumerate(conts):
            cids[j, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            cmask[j, : len(c) - 1] = 1
        full_mask = torch.cat([mask[owner], cmask], dim=1)
        kw: dict[str, Any] = {str(caps.cache_arg): past, "use_cache": True}
        if use_positions:
            start = mask.sum(-1)[owner][:, None]
            kw["position_ids"] = (start + torch.arange(rest)[None, :]).to(device)
        later = model(input_ids=cids.to(device), attention_mask=full_mask.to(device), **kw).logits
    scored = [grp.n_scored(j) for grp in groups for j in range(len(grp.continuations))]
    pieces, tgts = [], []
    for j, (c, n) in enumerate(zip(conts, scored, strict=True)):
        first = len(c) - n  # token k of c is predicted by the prefix (k = 0) or by c[k - 1]
        if first == 0:
            pieces.append(last[owner[j]][None, :])
        if len(c) > 1 and later is not None:
            pieces.append(later[j, max(first, 1) - 1 : len(c) - 1].to(last.device))
        tgts += c[first:]
    scores = _gather_scores(torch.cat(pieces), torch.tensor(tgts, device=last.device), scored)
    grouped: list[list[ContinuationScore]] = []
    k = 0
    for grp in groups:
        grouped.append(scores[k : k + len(grp.continuations)])
        k += len(grp.continuations)
    return grouped


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

    ``batch_size`` is the number of sequences per forward pass. ``on_progress(n)`` is called with
    the number of groups finished after each batch.
    """
    dev = input_device(model, device)
    results: list[list[ContinuationScore] | None] = [None] * len(groups)
    caps = _Capabilities.of(model)
    shared_ok = share_prefix and caps.cache_arg is not None
    shared, single = [], []
    for i, grp in enumerate(groups):
        longest = max(len(c) for c in grp.continuations)
        fits = len(grp.context) + longest <= max_seq_len + 1 and len(grp.context) > 0
        # Sharing saves (N - 1) context passes but pads every choice to the batch's longest one:
        # worth it when the context outweighs the choices.
        pays = (len(grp.continuations) - 1) * len(grp.context) > sum(
            len(c) for c in grp.continuations
        )
        if shared_ok and fits and pays and len(grp.continuations) > 1:
            shared.append(i)
        else:
            single.append(i)
    with torch.inference_mode():
        _run_shared(
            model, groups, shared, results, batch_size, dev, max_seq_len, pad_id, caps, on_progress
        )
        _run_full(
            model, groups, single, results, batch_size, dev, max_seq_len, pad_id, caps, on_progress
        )
    return [r if r is not None else [] for r in results]


def _run_shared(
    model: Any,
    groups: list[ScoreGroup],
    order: list[int],
    results: list[list[ContinuationScore] | None],
    batch_size: int,
    dev: torch.device,
    max_seq_len: int,
    pad_id: int,
    caps: _Capabilities,
    on_progress: Callable[[int], object] | None,
) -> None:
    """``batch_size`` contexts per batch; their choices follow in one more forward."""
    for batch in _shared_batches(groups, order, batch_size, max_seq_len):
        scored = _score_shared_batch(model, [groups[i] for i in batch], dev, pad_id, caps)
        for i, s in zip(batch, scored, strict=True):
            results[i] = s
        if on_progress:
            on_progress(len(batch))


def _shared_batches(
    groups: list[ScoreGroup], order: list[int], batch_size: int, max_seq_len: int
) -> list[list[int]]:
    """Longest contexts first, at most ``batch_size`` per batch, and never wider than the model.

    A shared batch pads every context to the batch's longest and every choice to its longest
    (minus the first token, predicted by the context), so that padded width is what must fit.
    """
    batches: list[list[int]] = []
    width = longest = 0
    for i in sorted(order, key=lambda i: -len(groups[i].context)):
        grp = groups[i]
        cont = max(len(c) for c in grp.continuations)
        new_width, new_longest = max(width, len(grp.context)), max(longest, cont)
        if batches and len(batches[-1]) < batch_size and new_width + new_longest - 1 <= max_seq_len:
            batches[-1].append(i)
            width, longest = new_width, new_longest
        else:
            batches.append([i])
            width, longest = len(grp.context), cont
    return batches


def _run_full(
    model: Any,
    groups: list[ScoreGroup],
    order: list[int],
    results: list[list[ContinuationScore] | None],
    batch_size: int,
    dev: torch.device,
    max_seq_len: int,
    pad_id: int,
    caps: _Capabilities,
    on_progress: Callable[[int], object] | None,
) -> None:
    flat = [(i, j) for i in order for j in range(len(groups[i].continuations))]
    flat.sort(
        key=lambda ij: -(len(groups[ij[0]].context) + len(groups[ij[0]].continuations[ij[1]]))
    )
    partial: dict[int, dict[int, ContinuationScore]] = {}
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        pairs = [groups[i].pair(j) for i, j in chunk]
        scores = _score_full_batch(model, pairs, dev, max_seq_len, pad_id, caps)
        done = 0
        for (i, j), s in zip(chunk, scores, strict=True):
            partial.setdefault(i, {})[j] = s
            if len(partial[i]) == len(groups[i].continuations):
                results[i] = [partial[i][x] for x in range(len(groups[i].continuations))]
                done += 1
        if on_progress and done:
            on_progress(done)
