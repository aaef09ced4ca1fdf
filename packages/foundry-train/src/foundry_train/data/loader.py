"""Data loaders over foundry-data MDS datasets (pretraining and fine-tuning)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from foundry_data import IGNORE_INDEX, decode_finetuning_sample
from streaming import Stream, StreamingDataset
from torch.utils.data import DataLoader

from foundry_train.config.sections import LoaderConfig, StreamConfig
from foundry_train.data.integrity import check_token_ids, verify_compressed, verify_shard
from foundry_train.errors import DataError

__all__ = [
    "TokenDataset",
    "pretraining_collate",
    "FinetuningCollator",
    "build_dataloader",
    "stream_locations",
    "token_counts",
]


def stream_locations(loader: LoaderConfig) -> list[StreamConfig]:
    """The datasets a loader reads."""
    if loader.dataset is not None:
        return [loader.dataset]
    assert loader.streams is not None
    return list(loader.streams.values())


class TokenDataset(StreamingDataset):
    """A StreamingDataset whose items are decoded into ``input_ids`` / ``labels`` arrays.

    Keeps streaming's ``state_dict`` so composer resumes mid-epoch deterministically. With
    ``verify_hashes`` each shard is checked against its stored hash the first time this process
    opens it; with ``vocab_size`` every token id is checked to be inside the vocabulary. Either
    failure is a :class:`DataError` naming the dataset and the shard.
    """

    def __init__(
        self,
        *,
        kind: str,
        max_seq_len: int,
        rows_per_batch: int | None = None,
        verify_hashes: bool = True,
        vocab_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.max_seq_len = max_seq_len
        # packing: each batch draws `batch_size` raw samples and yields `rows_per_batch` rows
        self.rows_per_batch = rows_per_batch
        self.verify_hashes = verify_hashes
        self.vocab_size = vocab_size
        self._verified: set[int] = set()  # shards checked by this process (each worker its own)
        self._zips_checked: set[int] = set()
        # A check that failed in streaming's download thread, raised again by the next read
        # (streaming itself would only say "Background thread failed").
        self._data_error: DataError | None = None

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """streaming's download / decompression, after checking compressed files it would
        decompress (once per shard in this process)."""
        if self.verify_hashes and shard_id not in self._zips_checked:
            try:
                verify_compressed(self, shard_id)
            except DataError as exc:
                self._data_error = exc
                raise
            self._zips_checked.add(shard_id)
        super().prepare_shard(shard_id, blocking)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # When the download thread fails, streaming ends the epoch early or refuses the next
        # one ("Background thread failed"): the failed check is raised instead.
        self._raise_data_error()
        try:
            yield from super().__iter__()
        except RuntimeError:
            self._raise_data_error()
            raise
        self._raise_data_error()

    def _raise_data_error(self) -> None:
        if self._data_error is not None:
            raise self._data_error from None

    def get_item(self, sample_id: int, retry: int = 7) -> Any:
        """streaming's sample read, after checking the sample's shard once in this process."""
        self._raise_data_error()
        try:
            if self.verify_hashes:
                shard_id = int(self.spanner[sample_id][0])
                if shard_id not in self._verified:
                    verify_shard(self, shard_id)
                    self._verified.add(shard_id)
            return super().get_item(sample_id, retry)
        except RuntimeError:
            self._raise_data_error()
            raise

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
            ids = np.asarray(sample["tokens"], dtype=np.int64)[: self.max_seq_len]
            labels = ids
        else:
            decoded = decode_finetuning_sample(sample)
            ids = np.asarray(decoded.input_ids, dtype=np.int64)[: self.max_seq_len]
            labels = np.asarray(decoded.labels, dtype=np.int64)[: self.max_seq_len]
        if self.vocab_size is not None:
            check_token_ids(self, idx, ids, self.vocab_size)
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
    vocab_size: int | None = None,
) -> DataLoader[dict[str, np.ndarray]]:  # of TokenDataset items; batches are collated tensors
    """A DataLoader of ``device_batch_size`` sequences per batch on this rank; with
    ``vocab_size``, a token id outside the vocabulary stops it naming the shard and sample."""
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
        verify_hashes=loader.verify_shard_hashes,
        vocab_size=vocab_size,
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


def token_counts(batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """A batch's tokens ("total", as composer counts them for throughput) and the tokens its loss
    scores ("loss_generating": labels other than -100, after the shift)."""
    scored = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return {"total": int(batch["input_ids"].numel()), "loss_generating": scored}
