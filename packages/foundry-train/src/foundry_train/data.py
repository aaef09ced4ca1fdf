"""Data loaders over foundry-data MDS datasets (pretraining and fine-tuning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from foundry_data import IGNORE_INDEX, decode_finetuning_sample
from streaming import Stream, StreamingDataset
from torch.utils.data import DataLoader

from foundry_train.config.sections import LoaderConfig, StreamConfig

__all__ = [
    "TokenDataset",
    "pretraining_collate",
    "FinetuningCollator",
    "build_dataloader",
    "stream_locations",
]


def stream_locations(loader: LoaderConfig) -> list[StreamConfig]:
    """The datasets a loader reads."""
    if loader.dataset is not None:
        return [loader.dataset]
    assert loader.streams is not None
    return list(loader.streams.values())


class TokenDataset(StreamingDataset):
    """A StreamingDataset whose items are decoded into ``input_ids`` / ``labels`` arrays.

    Keeps streaming's ``state_dict`` so composer resumes mid-epoch deterministically.
    """

    def __init__(
        self, *, kind: str, max_seq_len: int, rows_per_batch: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.max_seq_len = max_seq_len
        # packing: each batch draws `batch_size` raw samples and yields `rows_per_batch` rows
        self.rows_per_batch = rows_per_batch

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        """Streaming's resume state; ``num_samples`` counts the rows composer has seen.

        With packing a batch of ``rows_per_batch`` rows consumed ``batch_size`` raw samples, so
        the position in the dataset is scaled back to raw samples (whole batches only).
        """
        if self.rows_per_batch and self.batch_size:
            batches, rest = divmod(num_samples, self.rows_per_batch)
            num_samples = batches * int(self.batch_size) + rest
        return super().state_dict(num_samples, from_beginning)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        sample = super().__getitem__(idx)
        if self.kind == "pretraining":
            tokens = np.asarray(sample["tokens"], dtype=np.int64)[: self.max_seq_len]
            return {"input_ids": tokens, "labels": tokens}
        decoded = decode_finetuning_sample(sample)
        ids = np.asarray(decoded.input_ids, dtype=np.int64)[: self.max_seq_len]
        labels = np.asarray(decoded.labels, dtype=np.int64)[: self.max_seq_len]
        return {"input_ids": ids, "labels": labels}


def pretraining_collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack fixed-length token samples; every token is a label.

    No attention mask: every position is a real token, and a mask of ones would make the model
    check it on the host (a device synchronisation in every forward pass) only to drop it.
    """
    ids = torch.from_numpy(np.stack([s["input_ids"] for s in samples]))
    return {"input_ids": ids, "labels": ids.clone()}


class FinetuningCollator:
    """Pads (or packs) prompt/response samples; prompt and padding labels are -100.

    With ``packing``, the loader hands over ``packing_ratio`` x more samples than rows; they are
    placed first-fit-decreasing into ``rows`` sequences of ``max_seq_len`` tokens, each sample
    tagged in ``sequence_id`` so packed documents do not attend to each other; samples that do
    not fit are dropped.
    """

    def __init__(self, pad_token_id: int, max_seq_len: int, rows: int, packing: bool) -> None:
        self.pad_token_id = pad_token_id
        self.max_seq_len = max_seq_len
        self.rows = rows
        self.packing = packing

    def __call__(self, samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        if self.packing:
            return self._pack(samples)
        length = max(len(s["input_ids"]) for s in samples)
        batch = self._empty(len(samples), length)
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            batch["input_ids"][row, :n] = torch.from_numpy(s["input_ids"])
            batch["labels"][row, :n] = torch.from_numpy(s["labels"])
            batch["attention_mask"][row, :n] = 1
        return batch

    def _empty(self, rows: int, length: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.full((rows, length), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((rows, length), IGNORE_INDEX, dtype=torch.long),
            "attention_mask": torch.zeros((rows, length), dtype=torch.long),
        }

    def _pack(self, samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        batch = self._empty(self.rows, self.max_seq_len)
        batch["sequence_id"] = torch.full((self.rows, self.max_seq_len), -1, dtype=torch.long)
        fill = [0] * self.rows
        count = [0] * self.rows
        for s in sorted(samples, key=lambda s: -len(s["input_ids"])):
            n = len(s["input_ids"])
            row = next((r for r in range(self.rows) if fill[r] + n <= self.max_seq_len), None)
            if row is None:
                continue
            sl = slice(fill[row], fill[row] + n)
            batch["input_ids"][row, sl] = torch.from_numpy(s["input_ids"])
            batch["labels"][row, sl] = torch.from_numpy(s["labels"])
            batch["attention_mask"][row, sl] = 1
            batch["sequence_id"][row, sl] = count[row]
            fill[row] += n
            count[row] += 1
        return batch


def _streams(loader: LoaderConfig) -> list[Stream]:
    out = []
    for sc in stream_locations(loader):
        out.append(
            Stream(
                remote=sc.remote,
                local=sc.local,
                split=sc.split,
                proportion=sc.proportion,
                repeat=sc.repeat,
                download_timeout=loader.download_timeout,
            )
        )
    return out


def build_dataloader(
    loader: LoaderConfig,
    *,
    device_batch_size: int,
    max_seq_len: int,
    pad_token_id: int,
) -> DataLoader[dict[str, np.ndarray]]:  # of TokenDataset items; batches are collated tensors
    """A DataLoader of ``device_batch_size`` sequences per batch on this rank."""
    raw_batch = device_batch_size
    if loader.packing:
        raw_batch = int(np.ceil(device_batch_size * loader.packing_ratio))
    dataset = TokenDataset(
        kind=loader.name,
        max_seq_len=max_seq_len,
        streams=_streams(loader),
        batch_size=raw_batch,
        shuffle=loader.shuffle,
        shuffle_seed=loader.shuffle_seed,
        shuffle_algo=loader.shuffle_algo,
        num_canonical_nodes=loader.num_canonical_nodes,
        rows_per_batch=device_batch_size if loader.packing else None,
    )
    collate: Callable[[list[dict[str, np.ndarray]]], dict[str, torch.Tensor]]
    if loader.name == "pretraining":
        collate = pretraining_collate
    else:
        collate = FinetuningCollator(pad_token_id, max_seq_len, device_batch_size, loader.packing)
    workers = loader.num_workers
    if workers is None:
        workers = 2 if torch.cuda.is_available() else 0
    return DataLoader(
        dataset,
        batch_size=raw_batch,
        collate_fn=collate,
        num_workers=workers,
        drop_last=loader.drop_last,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
