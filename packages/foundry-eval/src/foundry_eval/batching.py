"""Splitting length-sorted sequences into batches that waste the least compute on padding.

A padded batch costs about ``rows x widest row`` token positions plus a fixed cost per forward
call (Python, kernel launches, mask building). Cutting a length-sorted list into fixed runs of
``batch_size`` pads every short row of a run to its longest one; :func:`plan_batches` instead
picks the cut points that minimise the total cost (an exact dynamic programme over the sorted
list), never putting more than ``max_rows`` rows in one batch. The plan depends only on the
lengths and the device type, so results are reproducible run to run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["call_overhead_tokens", "plan_batches"]

# A forward call's fixed cost, in token positions it is worth padding instead of making another
# call. On CPU compute grows with every padded position and a call costs a few milliseconds; on a
# GPU padded positions are nearly free until the device is saturated, so few, full batches win.
_CPU_CALL_OVERHEAD = 64
_ACCELERATOR_CALL_OVERHEAD = 4096


def call_overhead_tokens(device: torch.device) -> int:
    """The fixed cost of one forward call on ``device``, in padded token positions."""
    return _CPU_CALL_OVERHEAD if device.type == "cpu" else _ACCELERATOR_CALL_OVERHEAD


def plan_batches(
    widths: Sequence[int],
    max_rows: int,
    overhead: int,
    *,
    tails: Sequence[int] | None = None,
    max_width: int | None = None,
) -> list[range]:
    """Contiguous batches over ``widths`` (sorted widest first) minimising padded cost.

    The cost of a batch ``i..j`` is ``(j - i) * widths[i] + overhead``. With ``tails`` and
    ``max_width``, a batch is only allowed when ``widths[i] + max(tails[i..j]) <= max_width``
    (e.g. a shared context padded to the widest one, followed by the longest choice); every single
    item must satisfy it on its own. Returns index ranges covering ``0..len(widths)`` in order.
    """
    n = len(widths)
    if any(widths[k] < widths[k + 1] for k in range(n - 1)):
        raise ValueError("plan_batches needs widths sorted widest first")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    best = [0] + [-1] * n  # best[j]: least cost of batching the first j items
    cut = [0] * (n + 1)  # cut[j]: where the last batch of that best plan starts
    for j in range(1, n + 1):
        longest_tail = 0
        for i in range(j - 1, max(j - max_rows, 0) - 1, -1):
            if tails is not None:
                longest_tail = max(longest_tail, tails[i])
            if max_width is not None and widths[i] + longest_tail > max_width and i < j - 1:
                break  # wider items only make it worse
            cost = best[i] + (j - i) * widths[i] + overhead
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    batches: list[range] = []
    j = n
    while j > 0:
        batches.append(range(cut[j], j))
        j = cut[j]
    return batches[::-1]
