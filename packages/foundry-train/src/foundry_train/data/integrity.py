"""Checks of the training data as it is read: shard hashes, and token ids against the vocabulary.

streaming checks a shard's hash (``validate_hash``) only right after downloading or decompressing
it, and only when asked; a shard already on disk (a local dataset, or a cache from an earlier
run) is read as it is, so a flipped byte trains on a wrong token. Here every shard is checked
against the hash ``index.json`` stores for it (foundry-data's check, xxh64 when stored) the first
time a process opens it: each DataLoader worker checks the shards it reads, once per process.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from foundry_data import shard_file_matches

from foundry_train.errors import DataError

__all__ = ["check_token_ids", "verify_compressed", "verify_shard"]


def _location(stream: Any) -> str:
    root = str(stream.remote if stream.remote is not None else stream.local)
    return f"{root.rstrip('/')}/{stream.split}" if stream.split else root


def _file(stream: Any, info: Any) -> str:
    return os.path.join(stream.local, stream.split, info.basename)


def _first_sample(dataset: Any, shard_id: int) -> int:
    stream_id = int(dataset.stream_per_shard[shard_id])
    offset = int(dataset.sample_offset_per_shard[shard_id])
    return offset - int(dataset.sample_offset_per_stream[stream_id])


def verify_compressed(dataset: Any, shard_id: int) -> None:
    """Check the compressed files of a shard whose raw files are not there yet (about to be
    decompressed), so a damaged frame is named instead of failing inside the decompressor or
    being decompressed into wrong tokens."""
    stream = dataset.streams[int(dataset.stream_per_shard[shard_id])]
    for raw_info, zip_info in dataset.shards[shard_id].file_pairs:
        if zip_info is not None and not os.path.isfile(_file(stream, raw_info)):
            _check(dataset, shard_id, stream, zip_info, zip_info)


def verify_shard(dataset: Any, shard_id: int) -> None:
    """Make shard ``shard_id`` of a StreamingDataset local (download or decompress it through
    the dataset's ``prepare_shard``), then check each of its raw files against its stored hash."""
    stream = dataset.streams[int(dataset.stream_per_shard[shard_id])]
    dataset.prepare_shard(shard_id)
    for raw_info, zip_info in dataset.shards[shard_id].file_pairs:
        _check(dataset, shard_id, stream, raw_info, zip_info)


def _check(dataset: Any, shard_id: int, stream: Any, info: Any, zip_info: Any) -> None:
    path = _file(stream, info)
    try:
        result = shard_file_matches(path, info.hashes)
    except FileNotFoundError:  # a zip another worker has just decompressed (and removed)
        return
    if result is None or result[1]:
        return
    raise DataError(_mismatch_message(dataset, shard_id, stream, info, zip_info, result[0]))


def _zip_intact(stream: Any, info: Any, zip_info: Any) -> bool | None:
    """Whether the compressed file ``info`` was decompressed from is intact; None when ``info``
    is itself compressed, or there is no compressed file (or hash) to tell."""
    if zip_info is None or zip_info is info:
        return None
    zip_path = _file(stream, zip_info)
    if not os.path.isfile(zip_path):
        return None
    result = shard_file_matches(zip_path, zip_info.hashes)
    return None if result is None else result[1]


def _fix(stream: Any, info: Any, zip_info: Any) -> str:
    path = _file(stream, info)
    intact = _zip_intact(stream, info, zip_info)
    if intact:
        return (
            f"It was decompressed from {zip_info.basename}, which is intact: delete {path} and "
            "it is decompressed again when training starts."
        )
    damaged = [path] if intact is None else [path, _file(stream, zip_info)]
    if stream.remote is not None and stream.remote != stream.local:
        return (
            f"It is the copy in the local cache {stream.local}: delete {' and '.join(damaged)} "
            "and it is downloaded again; if the error comes back, the copy in the remote store "
            "is damaged: re-convert the dataset with `foundry-data convert`."
        )
    also = "" if intact is None else f" ({zip_info.basename}, which it came from, is damaged too)"
    return (
        f"Restore the dataset from a good copy or re-convert it with `foundry-data convert`{also}."
    )


def _mismatch_message(
    dataset: Any, shard_id: int, stream: Any, info: Any, zip_info: Any, algo: str
) -> str:
    location = _location(stream)
    sample = _first_sample(dataset, shard_id)
    return (
        f"shard {info.basename} of the dataset {location} failed its {algo} hash check: its "
        f"bytes ({_file(stream, info)}) differ from those index.json records, so it is damaged "
        f"(a bad copy or disk) and training would read wrong tokens. "
        f"{_fix(stream, info, zip_info)} `foundry-data inspect {location} --sample {sample}` "
        "checks this shard again. (verify_shard_hashes: false in train_loader / eval_loader "
        "turns this check off.)"
    )


def check_token_ids(dataset: Any, idx: int, ids: np.ndarray, vocab_size: int) -> None:
    """Raise DataError when a token id of sample ``idx`` is outside ``[0, vocab_size)``."""
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < vocab_size:
        return
    shard_id, in_shard = dataset.spanner[idx]
    stream = dataset.streams[int(dataset.stream_per_shard[shard_id])]
    name = dataset.shards[shard_id].file_pairs[0][0].basename
    bad = high if high >= vocab_size else low
    location = _location(stream)
    raise DataError(
        f"sample {in_shard} of shard {name} of the dataset {location} holds token id {bad}, "
        f"outside the model's vocabulary of {vocab_size} (ids 0 to {vocab_size - 1}). The "
        "dataset was most likely converted with another tokenizer than the model's: "
        f"`foundry-data inspect {location}` shows the tokenizer it was made with; re-convert "
        "it with the model's tokenizer, or give the model a vocab_size that covers it "
        "(model.config_overrides.vocab_size)."
    )
