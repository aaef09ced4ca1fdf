"""One forward pass of the log-likelihood engine: the full-sequence path and the shared-prefix
path (context once, then the choices over its key/value cache). :mod:`foundry_eval.scoring`
plans the batches and calls these.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from foundry_eval.batching import call_overhead_tokens, plan_batches

__all__ = [
    "Capabilities",
    "ContinuationScore",
    "ScoreGroup",
    "input_device",
    "score_full_batch",
    "score_shared_batch",
]


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
class Capabilities:
    """What the model's forward accepts beyond input_ids/attention_mask."""

    cache_arg: str | None  # "cache" (transformers >= 5.2x), "past_key_values" (older), or None
    position_ids: bool
    logits_to_keep: bool
    use_cache: bool  # whether the cache can be switched off where it is not needed

    @classmethod
    def of(cls, model: Any) -> Capabilities:
        cache_arg = next((n for n in ("cache", "past_key_values") if _accepts(model, n)), None)
        return cls(
            cache_arg,
            _accepts(model, "position_ids"),
            _accepts(model, "logits_to_keep"),
            _accepts(model, "use_cache"),
        )


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


def score_full_batch(
    model: Any,
    pairs: list[tuple[list[int], list[int]]],
    device: torch.device,
    max_len: int,
    pad_id: int,
    caps: Capabilities,
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
    kwargs: dict[str, Any] = {"use_cache": False} if caps.use_cache else {}
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


def _cache_rows(past: Any, index: torch.Tensor, keep: bool) -> Any:
    """The key/value cache repeated along the batch as ``index`` says.

    ``reorder_cache`` (the beam-search API of transformers' caches) works in place, so when the
    original is needed again (``keep``) it is applied to a copy. Legacy tuple caches are rebuilt.
    """
    if hasattr(past, "reorder_cache"):
        target = copy.deepcopy(past) if keep else past
        target.reorder_cache(index)
        return target
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in past)


@dataclass(frozen=True)
class _ContextPass:
    """The shared contexts of a batch after one forward: left-padded mask and key/value cache."""

    mask: torch.Tensor  # (G, W), 1 on context tokens; every context ends at column W - 1
    last: torch.Tensor  # (G, V) logits predicting each continuation's first token
    cache: Any


def _run_contexts(
    model: Any, groups: list[ScoreGroup], device: torch.device, pad_id: int, caps: Capabilities
) -> _ContextPass:
    g = len(groups)
    width = max(len(x.context) for x in groups)
    ids = torch.full((g, width), pad_id, dtype=torch.long)
    mask = torch.zeros((g, width), dtype=torch.long)
    for i, grp in enumerate(groups):  # left padding: every context ends at the last column
        ids[i, width - len(grp.context) :] = torch.tensor(grp.context)
        mask[i, width - len(grp.context) :] = 1
    kwargs: dict[str, Any] = {"use_cache": True}
    if caps.position_ids:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
    if caps.logits_to_keep:
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return _ContextPass(mask, out.logits[:, -1, :], cache)


def _run_continuations(
    model: Any,
    ctx: _ContextPass,
    owners: list[int],
    conts: list[list[int]],
    cache: Any,
    device: torch.device,
    pad_id: int,
    caps: Capabilities,
) -> torch.Tensor:
    """Logits (R, T, V) at every position of ``conts[r][:-1]``, continuing context ``owners[r]``."""
    rest = max(len(c) for c in conts) - 1
    cids = torch.full((len(conts), rest), pad_id, dtype=torch.long)
    cmask = torch.zeros((len(conts), rest), dtype=torch.long)
    for j, c in enumerate(conts):
        cids[j, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        cmask[j, : len(c) - 1] = 1
    full_mask = torch.cat([ctx.mask[owners], cmask], dim=1)
    kw: dict[str, Any] = {str(caps.cache_arg): cache, "use_cache": True}
    if caps.position_ids:
        start = ctx.mask.sum(-1)[owners][:, None]
        kw["position_ids"] = (start + torch.arange(rest)[None, :]).to(device)
    return model(input_ids=cids.to(device), attention_mask=full_mask.to(device), **kw).logits


def score_shared_batch(
    model: Any,
    groups: list[ScoreGroup],
    device: torch.device,
    pad_id: int,
    caps: Capabilities,
) -> list[list[ContinuationScore]]:
    """One forward over the contexts, then the choices in length-sorted chunks over its cache."""
    ctx = _run_contexts(model, groups, device, pad_id, caps)
    owner = [i for i, grp in enumerate(groups) for _ in grp.continuations]
    conts = [c for grp in groups for c in grp.continuations]
    # Choices longer than one token continue the context; sorted longest first and cut where
    # padding a short choice to a long one would cost more than another forward call.
    rows = sorted((j for j, c in enumerate(conts) if len(c) > 1), key=lambda j: -len(conts[j]))
    chunks = plan_batches(
        [len(conts[j]) - 1 for j in rows], len(rows) or 1, call_overhead_tokens(device)
    )
    later: dict[int, torch.Tensor] = {}  # choice -> (len - 1, V) logits after its tokens
    for k, chunk in enumerate(chunks):
        picked = [rows[t] for t in chunk]
        index = torch.tensor([owner[j] for j in picked], device=device)
        cache = _cache_rows(ctx.cache, index, keep=k < len(chunks) - 1)
        logits = _run_continuations(
            model, ctx, [owner[j] for j in picked], [conts[j] for j in picked], cache, device,
            pad_id, caps,
        )  # fmt: skip
        for t, j in enumerate(picked):
            later[j] = logits[t, : len(conts[j]) - 1]
    scored = [grp.n_scored(j) for grp in groups for j in range(len(grp.continuations))]
    pieces: list[torch.Tensor] = []
    tgts: list[int] = []
    for j, (c, n) in enumerate(zip(conts, scored, strict=True)):
        first = len(c) - n  # token k of c is predicted by the prefix (k = 0) or by c[k - 1]
        if first == 0:
            pieces.append(ctx.last[owner[j]][None, :])
        if len(c) > 1:
            pieces.append(later[j][max(first, 1) - 1 :].to(ctx.last.device))
        tgts += c[first:]
    scores = _gather_scores(torch.cat(pieces), torch.tensor(tgts, device=ctx.last.device), scored)
    grouped: list[list[ContinuationScore]] = []
    k = 0
    for grp in groups:
        grouped.append(scores[k : k + len(grp.continuations)])
        k += len(grp.continuations)
    return grouped
