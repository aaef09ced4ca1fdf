"""Reshaping a batch's key/value cache: joining rows, dropping rows, trimming padding.

A ``Past`` is a list of 2 * layers arrays of shape (batch, kv_heads, past, head_dim), numpy
arrays (ONNX Runtime) or torch tensors (torch back end). Rows of different lengths share one
batch by left padding: the padded slots hold zeros and are masked out by the attention mask.
ONNX Runtime's IO binding leaves the cache on the device as ``OrtValue`` objects: reshaping
reads them back as numpy arrays (only when a row joins or leaves; decode steps bind them as they
are).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Past", "concat_rows", "past_length", "select_rows", "trim_left"]

Past = list[Any]


def past_length(past: Past) -> int:
    shape = past[0].shape
    return int((shape() if callable(shape) else shape)[2])  # OrtValue.shape is a method


def _arrays(past: Past) -> Past:
    """numpy arrays for OrtValues (IO binding's device cache); other arrays as they are."""
    return [a.numpy() if callable(getattr(a, "shape", None)) else a for a in past]


def _left_pad(array: Any, extra: int) -> Any:
    if extra == 0:
        return array
    if isinstance(array, np.ndarray):
        return np.pad(array, ((0, 0), (0, 0), (extra, 0), (0, 0)))
    import torch

    return torch.nn.functional.pad(array, (0, 0, extra, 0))


def _cat(arrays: Sequence[Any]) -> Any:
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays, axis=0)
    import torch

    return torch.cat(list(arrays), dim=0)


def concat_rows(pasts: Sequence[Past], masks: Sequence[np.ndarray]) -> tuple[Past, np.ndarray]:
    """Join caches (and their (B_i, P_i) masks) along the batch, left padding to the longest."""
    pasts = [_arrays(p) for p in pasts]
    length = max(mask.shape[1] for mask in masks)
    joined_mask = np.concatenate(
        [np.pad(mask, ((0, 0), (length - mask.shape[1], 0))) for mask in masks], axis=0
    )
    if len(pasts) == 1:
        extra = length - masks[0].shape[1]
        return [_left_pad(a, extra) for a in pasts[0]], joined_mask
    joined = [
        _cat([_left_pad(p[i], length - m.shape[1]) for p, m in zip(pasts, masks, strict=True)])
        for i in range(len(pasts[0]))
    ]
    return joined, joined_mask


def select_rows(past: Past, mask: np.ndarray, rows: Sequence[int]) -> tuple[Past, np.ndarray]:
    """Keep only ``rows`` of the batch."""
    index = np.asarray(rows, dtype=np.int64)
    past = _arrays(past)
    if isinstance(past[0], np.ndarray):
        kept = [a[index] for a in past]
    else:
        import torch

        device_index = torch.from_numpy(index).to(past[0].device)
        kept = [a.index_select(0, device_index) for a in past]
    return kept, mask[index]


def trim_left(past: Past, mask: np.ndarray) -> tuple[Past, np.ndarray]:
    """Drop leading cache slots that every row masks out (padding no row needs any more)."""
    used = np.flatnonzero(mask.any(axis=0))
    start = int(used[0]) if used.size else mask.shape[1]
    if start == 0:
        return past, mask
    return [a[:, :, start:, :] for a in _arrays(past)], mask[:, start:]
