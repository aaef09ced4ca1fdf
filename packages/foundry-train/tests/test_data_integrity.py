"""Training refuses corrupted shards and out-of-vocabulary tokens with an error naming the shard.

Real datasets written by ``foundry-data convert`` (small shards, sha1 + xxh64 hashes) are
corrupted the way a bad copy or disk corrupts them:

- a raw shard gets the low byte of one token flipped (the token stays inside the vocabulary, so
  before the check training ran to the end on the wrong token);
- a zstd-compressed shard gets one byte changed inside its frame such that it still decompresses
  (into different tokens);

and ``foundry-train`` must stop with exit status 2 and an ``error:`` paragraph naming the dataset,
the shard and the fix, never train on them. A dataset converted with a larger tokenizer than the
model's vocabulary must stop with the shard and sample named, not an ``IndexError`` from the
embedding. Each test fails on the code before the check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SHARD = 1  # the corrupted shard; with shuffle off, the run reads shards 0, 1, 2 in order


def _convert(assets: dict, out: Path, compression: str, tokenizer: Path | None = None) -> Path:
    from foundry_data.cli import main

    args = [
        "convert", str(assets["root"] / "corpus.txt"), str(out),
        "--tokenizer", str(tokenizer or assets["tok"]), "--concat-tokens", "32",
        "--workers", "1", "--shard-size", "4KiB", "--compression", compression, "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def datasets(assets: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    return {c: _convert(assets, root / c, c) for c in ("none", "zstd")}


def _shard_file(dataset: Path, index: int) -> Path:
    shard = json.loads((dataset / "index.json").read_text())["shards"][index]
    return dataset / (shard.get("zip_data") or shard["raw_data"])["basename"]


def _flip_token_low_byte(path: Path) -> None:
    """XOR 1 into the low byte of a little-endian int32 token in the middle of a raw shard."""
    data = bytearray(path.read_bytes())
    count = int.from_bytes(data[:4], "little")  # an MDS shard: count, count + 1 offsets, samples
    middle = count // 2 + 1
    end = int.from_bytes(data[4 + 4 * middle : 8 + 4 * middle], "little")
    data[end - 4 * 16] ^= 0x01  # the sample ends with its 32 int32 tokens: the 17th, low byte
    path.write_bytes(bytes(data))


def _change_zstd_byte(path: Path) -> None:
    """Change one byte inside the zstd frame so that the shard still decompresses, differently."""
    import zstd

    original = path.read_bytes()
    raw = zstd.decompress(original)
    for offset in range(len(original) // 2, len(original) - 8):
        data = bytearray(original)
        data[offset] ^= 0x01
        try:
            changed = zstd.decompress(bytes(data))
        except zstd.Error:
            continue
        if len(changed) == len(raw) and changed != raw:
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no byte of {path} decompresses into other data")


def _train(assets: dict, h: object, tmp_path: Path, dataset: Path | dict, **loader: object):
    """``foundry-train`` on ``dataset`` (a local folder, or a stream config) in this process."""
    from foundry_train.cli import main

    cfg = h.base_config(assets, None, max_duration="6ba")  # type: ignore[attr-defined]
    stream = dataset if isinstance(dataset, dict) else {"local": str(dataset)}
    cfg["train_loader"] = {"dataset": stream, "shuffle": False, **loader}
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    return main([str(path)])


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_corrupted_shard_stops_training_naming_it(
    compression: str, datasets: dict, assets: dict, h: object, tmp_path: Path, capsys
) -> None:
    dataset = tmp_path / "data"
    shutil.copytree(datasets[compression], dataset)
    shard = _shard_file(dataset, SHARD)
    if compression == "none":
        _flip_token_low_byte(shard)
    else:
        _change_zstd_byte(shard)
    code = _train(assets, h, tmp_path, dataset)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    message = err[err.index("error: ") :]
    assert "Traceback" not in message, message
    assert shard.name.removesuffix(".zstd") in message and str(dataset) in message, message
    assert "hash" in message and "foundry-data inspect" in message, message


def test_corrupted_cached_copy_of_a_remote_shard_stops_training(
    datasets: dict, assets: dict, h: object, tmp_path: Path, capsys
) -> None:
    """A cache left by an earlier run (streaming reads such shards without any check), one of
    whose files went bad; the remote copy (a folder used as the remote) is intact."""
    cache = tmp_path / "cache"
    shutil.copytree(datasets["none"], cache)
    shard = _shard_file(cache, SHARD)
    _flip_token_low_byte(shard)
    code = _train(assets, h, tmp_path, {"remote": str(datasets["none"]), "local": str(cache)})
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    message = err[err.index("error: ") :]
    assert "Traceback" not in message and shard.name in message, message
    assert "cache" in message and "downloaded again" in message, message


def test_corrupted_shard_in_a_dataloader_worker_is_one_clean_error(
    datasets: dict, assets: dict, h: object, tmp_path: Path, capsys
) -> None:
    dataset = tmp_path / "data"
    shutil.copytree(datasets["none"], dataset)
    shard = _shard_file(dataset, SHARD)
    _flip_token_low_byte(shard)
    code = _train(assets, h, tmp_path, dataset, num_workers=1)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    message = err[err.index("error: ") :]
    assert "Traceback" not in message and "DataLoader worker" not in message, message
    assert shard.name in message, message


def test_hash_check_can_be_switched_off(
    datasets: dict, assets: dict, h: object, tmp_path: Path, capsys
) -> None:
    dataset = tmp_path / "data"
    shutil.copytree(datasets["none"], dataset)
    _flip_token_low_byte(_shard_file(dataset, SHARD))
    code = _train(assets, h, tmp_path, dataset, verify_shard_hashes=False)
    assert code == 0, capsys.readouterr().err[-3000:]


def test_tokens_outside_the_vocabulary_name_the_shard_and_sample(
    assets: dict, h: object, tmp_path: Path, capsys
) -> None:
    from tiny_lm import train_byte_bpe

    text = (assets["root"] / "corpus.txt").read_text()
    big = train_byte_bpe([text], vocab_size=1024, special_tokens=["<|endoftext|>"])
    big.save_pretrained(tmp_path / "big-tok")
    dataset = _convert(assets, tmp_path / "data", "none", tokenizer=tmp_path / "big-tok")
    code = _train(assets, h, tmp_path, dataset)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    message = err[err.index("error: ") :]
    assert "Traceback" not in message and "IndexError" not in message, message
    assert _shard_file(dataset, 0).name in message and "sample 0" in message, message
    assert "vocab" in message and "512" in message, message
