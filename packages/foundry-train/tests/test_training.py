"""Real composer training on CPU: loss falls, SIGKILL + autoresume, gloo, two nodes, export-hf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from foundry_train.checkpointing.export import export_checkpoint, read_model_state_dict
from foundry_train.checkpointing.resume import is_complete

HERE = Path(__file__).resolve().parent


def test_debug_model_loss_falls_on_real_text(baseline: Path, h: object) -> None:
    loss = h.losses(baseline)  # type: ignore[attr-defined]
    assert sorted(loss) == list(range(10))
    first = (loss[0] + loss[1]) / 2
    last = (loss[8] + loss[9]) / 2
    assert last < first - 0.5, loss
    assert (baseline / "loss_throughput.png").stat().st_size > 1000
    from PIL import Image

    with Image.open(baseline / "loss_throughput.png") as png:  # the plot's title and loss units
        text = dict(png.text)  # type: ignore[attr-defined]
    assert text["Title"] == "test-run: MPT debug, 2,560 tokens, 10 batches"  # 10 x 8 x 32
    assert text["Description"] == "training loss (cross-entropy, nats/token)"
    assert (baseline / "foundry_train_config.yaml").is_file()


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_autoresume_is_bit_identical(
    baseline: Path, assets: dict, h: object, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    cfg = h.base_config(assets, folder, autoresume=True)  # type: ignore[attr-defined]
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # as run_cli: fixed reduction order
    killed = subprocess.run(
        [sys.executable, str(HERE / "kill_during_save.py"), str(path), "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    half = folder / "ep0-ba6-rank0.pt"
    assert half.is_file() and not is_complete(half)  # died while writing the 3rd checkpoint
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba4-rank0.pt"

    resumed = h.run_cli([str(path)])  # type: ignore[attr-defined]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "ep0-ba4-rank0.pt" in resumed.stderr

    assert h.losses(folder) == h.losses(baseline)  # type: ignore[attr-defined]  # every step, exactly
    ours = read_model_state_dict(folder / "ep0-ba10-rank0.pt")
    ref = read_model_state_dict(baseline / "ep0-ba10-rank0.pt")
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key


@pytest.mark.slow
def test_two_process_gloo_run_trains(assets: dict, h: object, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    cfg = h.base_config(assets, folder, max_duration="4ba")  # type: ignore[attr-defined]
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    result = h.run_cli([str(path), "launcher.nproc=2", "callbacks.plot=false"])  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2" in result.stderr
    assert is_complete(folder / "ep0-ba4-rank0.pt")
    assert len(h.losses(folder)) == 4  # type: ignore[attr-defined]


def _private_shm_prefix() -> list[str] | None:
    """A command prefix giving a process its own /dev/shm, as a separate host would have."""
    cmd = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs tmpfs /dev/shm && exec "$0" "$@"']
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return cmd if ok else None


@pytest.mark.slow
def test_two_nodes_train_together(assets: dict, h: object, tmp_path: Path) -> None:
    # Two "nodes" on one host would share /dev/shm, where streaming registers one prefix per
    # node leader; real nodes do not share it, so node 1 gets a private /dev/shm.
    prefix = _private_shm_prefix()
    if prefix is None:
        pytest.skip("needs `unshare -rm` (user namespaces) to give node 1 its own /dev/shm")
    folder = tmp_path / "run"
    cfg = h.base_config(assets, folder, max_duration="4ba")  # type: ignore[attr-defined]
    cfg["callbacks"] = {"plot": False}
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    port = str(h.free_port())  # type: ignore[attr-defined]
    base = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    }
    procs = []
    for node in (0, 1):
        env = {
            **base,
            "WORLD_SIZE": "2",
            "NODE_RANK": str(node),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        cmd = [sys.executable, "-m", "foundry_train", str(path)]
        procs.append(
            subprocess.Popen(
                prefix + cmd if node == 1 else cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "world size 2, rank 0" in outs[0][1]
    assert "world size 2, rank 1" in outs[1][1]
    assert is_complete(folder / "ep0-ba4-rank0.pt")
    assert len(h.losses(folder)) == 4  # type: ignore[attr-defined]


def test_export_hf_loads_without_custom_code_and_matches_logits(
    baseline: Path, assets: dict, h: object, tmp_path: Path
) -> None:
    import foundry_models
    from transformers import AutoModelForCausalLM

    out = export_checkpoint(baseline / "latest-rank0.pt", tmp_path / "hf")
    exported = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(exported).__module__.startswith("transformers.models.")
    state = read_model_state_dict(baseline / "ep0-ba10-rank0.pt")
    native = foundry_models.MPTForCausalLM(foundry_models.preset_config("debug", max_seq_len=h.SEQ))  # type: ignore[attr-defined]
    native.load_state_dict(state)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = native(input_ids=ids).logits
        got = exported(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (out / "tokenizer.json").is_file() and (out / "foundry_train_config.yaml").is_file()


def test_the_run_ends_with_a_one_line_summary(
    assets: dict, h: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from foundry_train.cli import main

    folder, hf = tmp_path / "run", tmp_path / "hf"
    cfg = h.base_config(assets, folder, max_duration="3ba", save_interval="3ba")  # type: ignore[attr-defined]
    cfg["callbacks"] = {
        "plot": False,
        "hf_checkpointer": {"save_folder": str(hf), "save_interval": "3ba"},
    }
    # The console script's entry point, in this process (a fresh one costs composer's import).
    assert main([str(h.write_config(tmp_path / "cfg.yaml", cfg))]) == 0  # type: ignore[attr-defined]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    loss = h.losses(folder)[2]  # type: ignore[attr-defined]  # the third (last) batch
    tokens = 3 * cfg["global_train_batch_size"] * cfg["max_seq_len"]
    expected = (
        re.escape("foundry-train: test-run done at batch 3 in ")
        + r"\d+\.\d"
        + re.escape(
            f" s: final loss {loss:.4f}, {tokens:,} tokens; checkpoints in {folder} "
            f"(latest {folder / 'ep0-ba3-rank0.pt'}); HF export in {hf / 'ba3'}"
        )
    )
    assert re.fullmatch(expected, last), last
    assert (hf / "ba3" / "config.json").is_file()


def test_checkpoints_to_keep_counts_those_saved_before_a_resume(
    assets: dict, h: object, tmp_path: Path
) -> None:
    """save_num_checkpoints_to_keep: 1 across an autoresume leaves one checkpoint (composer's
    saver forgot the checkpoints of earlier processes, so every restart left one more)."""
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    folder = tmp_path / "ckpt"
    for length in ("2ba", "4ba"):  # a checkpoint every 2 batches; the second run resumes
        cfg = h.base_config(  # type: ignore[attr-defined]
            assets, folder, max_duration=length, autoresume=True, save_num_checkpoints_to_keep=1
        )
        trainer = train(parse_config(cfg))
        assert int(trainer.state.timestamp.batch) == int(length[:-2])
        kept = sorted(p.name for p in folder.glob("ep*"))
        assert kept == [f"ep0-ba{length[:-2]}-rank0.pt"], kept
