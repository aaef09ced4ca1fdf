"""Training killed by SIGKILL mid-step and mid-eval, then autoresumed: the final weights are
bit-identical to an uninterrupted run, and only complete checkpoints are ever resumed from.

(SIGKILL in the middle of a checkpoint write is foundry-train's own
``test_sigkill_mid_checkpoint_then_autoresume_is_bit_identical``; it is not repeated here.)

Every run starts in a process forked from a forkserver that imported composer and foundry-train
once, so all the runs cost one import, and all of them run with identical settings.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import runpy
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

SEQ = 32  # tokens per sample of the pretrain_dir fixture

HELPER = Path(__file__).resolve().parent / "train_until_killed.py"
pytestmark = pytest.mark.slow


def _config(tokenizer: Path, train_data: Path, eval_data: Path | None, folder: Path) -> dict:
    cfg = {
        "run_name": "reliability",
        "max_seq_len": SEQ,
        "model": {"name": "mpt", "preset": "debug"},
        "tokenizer": {"name": str(tokenizer)},
        "train_loader": {"dataset": {"local": str(train_data)}},
        "optimizer": {"name": "decoupled_adamw", "lr": 3e-3, "weight_decay": 0.0},
        "scheduler": {"name": "constant_with_warmup", "t_warmup": "2ba"},
        "max_duration": "8ba",
        "global_train_batch_size": 8,
        "device_train_microbatch_size": 4,
        "precision": "fp32",
        "progress_bar": False,
        "deterministic": True,
        "callbacks": {"plot": False},
        "save_folder": str(folder),
        "save_interval": "2ba",
        "autoresume": True,
    }
    if eval_data is not None:
        cfg["eval_loader"] = {"dataset": {"local": str(eval_data)}, "shuffle": False}
        cfg["eval_interval"] = "2ba"
        cfg["eval_subset_num_batches"] = 2
        cfg["device_eval_batch_size"] = 4
    return cfg


@pytest.fixture(scope="module")
def runner():
    """Runs the helper script in a child forked from a forkserver with composer preloaded."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["foundry_train.trainer", "composer", "runpy"])

    def run(args: list[str], timeout: float = 400) -> int:
        child = ctx.Process(
            target=runpy.run_path,
            args=(str(HELPER),),
            kwargs={"init_globals": {"ARGS": args}, "run_name": "__main__"},
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            pytest.fail(f"training run {args} did not end within {timeout} s")
        return int(child.exitcode)

    return run


def _metrics(folder: Path) -> dict[tuple[int, str], float]:
    """(step, metric) -> value for every train-loss and eval row in metrics.jsonl."""
    out: dict[tuple[int, str], float] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith(("loss/train", "metrics/eval")):
                out[(int(row["step"]), key)] = value
    return out


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from foundry_train.checkpointing.export import read_model_state_dict

    return read_model_state_dict(checkpoint)


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("ep*-ba*-rank0.pt"))


def _write(tmp_path: Path, name: str, cfg: dict) -> tuple[Path, Path]:
    folder = tmp_path / name
    cfg = {**cfg, "save_folder": str(folder)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, folder


def _assert_same_run(run: Path, base: Path) -> None:
    """Same checkpoints, every logged loss and eval metric, and bit-identical final weights."""
    assert _checkpoints(run) == _checkpoints(base)
    assert _metrics(run) == _metrics(base)
    ours, ref = _weights(run / "ep0-ba8-rank0.pt"), _weights(base / "ep0-ba8-rank0.pt")
    assert ours.keys() == ref.keys()
    different = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert not different, f"weights differ after resuming: {different}"
    assert os.readlink(run / "latest-rank0.pt") == "ep0-ba8-rank0.pt"


def test_sigkill_mid_step_then_autoresume_is_bit_identical(
    runner, tokenizer_dir: Path, pretrain_dir: Path, tmp_path: Path
) -> None:
    from foundry_train.checkpointing.resume import find_latest_checkpoint, is_complete

    cfg = _config(tokenizer_dir, pretrain_dir, None, tmp_path)
    base_cfg, base = _write(tmp_path, "uninterrupted", cfg)
    assert runner([str(base_cfg)]) == 0
    run_cfg, run = _write(tmp_path, "interrupted", cfg)
    marker = tmp_path / "killed-at.json"

    # SIGKILL in the middle of an optimizer step: batch 6's gradients exist, its update not.
    assert runner([str(run_cfg), "after_backward", "5", str(marker)]) == -signal.SIGKILL
    assert json.loads(marker.read_text()) == {"event": "after_backward", "batch": 5}
    assert _checkpoints(run) == ["ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"]
    assert all(is_complete(run / name) for name in _checkpoints(run))
    assert find_latest_checkpoint(run) == run / "ep0-ba4-rank0.pt"

    assert runner([str(run_cfg)]) == 0  # autoresume from ba4 to the end
    _assert_same_run(run, base)


def test_sigkill_mid_eval_then_autoresume_is_bit_identical(
    runner, tokenizer_dir: Path, pretrain_dir: Path, tmp_path: Path
) -> None:
    from foundry_train.checkpointing.resume import find_latest_checkpoint

    eval_data = tmp_path / "eval-data"  # a second copy: streaming wants one local dir per loader
    shutil.copytree(pretrain_dir, eval_data)
    cfg = _config(tokenizer_dir, pretrain_dir, eval_data, tmp_path)
    base_cfg, base = _write(tmp_path, "uninterrupted", cfg)
    assert runner([str(base_cfg)]) == 0, "the uninterrupted run with eval_loader failed"
    run_cfg, run = _write(tmp_path, "interrupted", cfg)
    marker = tmp_path / "killed-at.json"

    # SIGKILL in the middle of the evaluation after batch 6, before ba6 is saved (composer saves
    # after evaluating): the resumed run starts from ba4 and evaluates at 6 again.
    assert runner([str(run_cfg), "eval_batch_end", "6", str(marker)]) == -signal.SIGKILL
    assert json.loads(marker.read_text()) == {"event": "eval_batch_end", "batch": 6}
    assert _checkpoints(run) == ["ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"]
    assert find_latest_checkpoint(run) == run / "ep0-ba4-rank0.pt"

    assert runner([str(run_cfg)]) == 0
    assert any(key.startswith("metrics/eval") for _, key in _metrics(base))
    _assert_same_run(run, base)
