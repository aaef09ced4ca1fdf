"""Malicious pickles are refused before composer (or anything) unpickles them; resume picks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from foundry_train.checkpointing.resume import find_latest_checkpoint, is_complete
from foundry_train.checkpointing.safety import disallowed_globals, scan_checkpoint
from foundry_train.cli import main
from foundry_train.config import parse_config
from foundry_train.errors import CheckpointSecurityError
from foundry_train.trainer import resolve_load_path


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"state": {"model": {"w": torch.zeros(2)}, "x": _Payload(marker)}}, path)


def test_real_checkpoints_pass_and_planted_pickle_is_refused(
    baseline: Path, tmp_path: Path
) -> None:
    scan_checkpoint(baseline / "ep0-ba2-rank0.pt")  # what composer writes is allowed
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _plant(evil, marker)
    with pytest.raises(CheckpointSecurityError, match=r"(posix|os)\.system"):
        scan_checkpoint(evil)
    assert not marker.exists()
    # a plain pickle stream (legacy format) is scanned the same way
    import pickle

    assert any(
        "system" in g for g in disallowed_globals(pickle.dumps(_Payload(marker), protocol=4))
    )
    assert not marker.exists()


def test_autoresume_refuses_a_planted_checkpoint(
    baseline: Path, assets: dict, h: object, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(baseline, folder, symlinks=True)
    marker = tmp_path / "pwned"
    _plant(folder / "ep0-ba12-rank0.pt", marker)
    (folder / "latest-rank0.pt").unlink()
    os.symlink("ep0-ba12-rank0.pt", folder / "latest-rank0.pt")
    cfg = parse_config(h.base_config(assets, folder, autoresume=True))  # type: ignore[attr-defined]
    with pytest.raises(CheckpointSecurityError, match="would run code"):
        resolve_load_path(cfg)
    assert not marker.exists()


def test_export_hf_cli_refuses_a_planted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "ckpt" / "ep0-ba2-rank0.pt"
    evil.parent.mkdir()
    _plant(evil, marker)
    (evil.parent / "foundry_train_config.yaml").write_text(
        "model: {name: mpt, preset: debug}\ntokenizer: {name: t}\n"
        "train_loader: {dataset: {local: d}}\nmax_duration: 1ba\nglobal_train_batch_size: 1\n"
    )
    assert main(["export-hf", str(evil), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and "would run code" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_resume_never_picks_a_half_written_checkpoint(baseline: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(baseline, folder, symlinks=True)
    full = (folder / "ep0-ba10-rank0.pt").read_bytes()
    # a crash while writing ba12, and between composer's unlink and re-creation of the symlink
    (folder / "ep0-ba12-rank0.pt").write_bytes(full[: len(full) // 2])
    (folder / "latest-rank0.pt").unlink()
    assert not is_complete(folder / "ep0-ba12-rank0.pt")
    assert find_latest_checkpoint(folder) == folder / "ep0-ba10-rank0.pt"
    # a symlink pointing at the half-written file is not trusted either
    os.symlink("ep0-ba12-rank0.pt", folder / "latest-rank0.pt")
    assert find_latest_checkpoint(folder) == folder / "ep0-ba10-rank0.pt"
    assert find_latest_checkpoint(tmp_path / "nothing-here") is None


def _to_sharded(full: Path, out: Path, extra: dict | None = None) -> Path:
    """Re-save a composer checkpoint as a torch.distributed.checkpoint directory."""
    import torch.distributed.checkpoint as dcp

    scan_checkpoint(full)
    state = torch.load(full, map_location="cpu", weights_only=False)
    state["state"].update(extra or {})
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(out)), no_dist=True)
    shutil.copy(full.parent / "foundry_train_config.yaml", out.parent / "foundry_train_config.yaml")
    return out


def test_export_hf_from_sharded_checkpoint_matches_full(baseline: Path, tmp_path: Path) -> None:
    from foundry_train.checkpointing.export import export_checkpoint
    from foundry_train.checkpointing.resume import is_complete

    sharded = _to_sharded(baseline / "ep0-ba10-rank0.pt", tmp_path / "ckpt" / "ep0-ba10")
    assert is_complete(sharded)
    scan_checkpoint(sharded)  # byte items (rng, timestamps) are scanned and allowed
    a = export_checkpoint(sharded, tmp_path / "from-sharded")
    b = export_checkpoint(baseline / "ep0-ba10-rank0.pt", tmp_path / "from-full")
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sharded_checkpoint_with_planted_pickle_is_refused(baseline: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sharded = _to_sharded(
        baseline / "ep0-ba2-rank0.pt", tmp_path / "ckpt" / "ep0-ba2", {"evil": _Payload(marker)}
    )
    with pytest.raises(CheckpointSecurityError, match="system"):
        scan_checkpoint(sharded)
    assert not marker.exists()


def _repoint(folder: Path, target: str) -> None:
    (folder / "latest-rank0.pt").unlink(missing_ok=True)
    os.symlink(target, folder / "latest-rank0.pt")


def test_stale_latest_pointer_keeps_the_complete_checkpoint_and_resumes_from_it(
    baseline: Path, assets: dict, h: object, tmp_path: Path
) -> None:
    from foundry_train.trainer import train

    folder = tmp_path / "run"
    shutil.copytree(baseline, folder, symlinks=True)
    _repoint(folder, "ep0-ba4-rank0.pt")  # stale: ba6..ba10 were written after it
    names = sorted(p.name for p in folder.glob("ep*"))
    cfg = parse_config(h.base_config(assets, folder, autoresume=True, max_duration="12ba"))  # type: ignore[attr-defined]
    assert resolve_load_path(cfg) == str(folder / "ep0-ba10-rank0.pt")
    trainer = train(cfg)
    assert int(trainer.state.timestamp.batch) == 12
    assert set(names) <= {p.name for p in folder.glob("ep*")}  # nothing complete was deleted
    steps = [step for step in h.losses(folder)]  # type: ignore[attr-defined]
    assert steps == list(range(12))  # resumed at ba10: steps 10 and 11 added, none repeated
    assert not (folder / "incomplete").exists()


def test_half_written_checkpoint_is_moved_aside_until_a_newer_complete_one_exists(
    baseline: Path, assets: dict, h: object, tmp_path: Path
) -> None:
    from foundry_train.trainer import train

    folder = tmp_path / "run"
    shutil.copytree(baseline, folder, symlinks=True)
    full = (folder / "ep0-ba10-rank0.pt").read_bytes()
    (folder / "ep0-ba12-rank0.pt").write_bytes(full[: len(full) // 2])
    _repoint(folder, "ep0-ba12-rank0.pt")  # the pointer names the half-written one
    sharded = _to_sharded(baseline / "ep0-ba10-rank0.pt", folder / "ep0-ba14")
    next(p for p in sharded.iterdir() if p.suffix == ".distcp").unlink()  # a shard never written
    cfg = parse_config(h.base_config(assets, folder, autoresume=True, max_duration="14ba"))  # type: ignore[attr-defined]
    assert resolve_load_path(cfg) == str(folder / "ep0-ba10-rank0.pt")
    aside = folder / "incomplete"
    assert (aside / "ep0-ba12-rank0.pt").read_bytes() == full[: len(full) // 2]  # kept as is
    assert (aside / "ep0-ba14").is_dir() and not (folder / "ep0-ba14").exists()
    train(cfg)  # saves complete ba12 and ba14
    assert is_complete(folder / "ep0-ba14-rank0.pt")
    assert resolve_load_path(cfg) == str(folder / "ep0-ba14-rank0.pt")
    assert not any(aside.iterdir())  # superseded by complete checkpoints: now removed


def test_refused_newest_checkpoint_stops_autoresume_and_stays_on_disk(
    baseline: Path, assets: dict, h: object, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(baseline, folder, symlinks=True)
    marker = tmp_path / "pwned"
    _plant(folder / "ep0-ba12-rank0.pt", marker)  # latest-rank0.pt still names ba10
    cfg = h.base_config(assets, folder, autoresume=True, max_duration="12ba")  # type: ignore[attr-defined]
    assert main(["train", str(h.write_config(tmp_path / "cfg.yaml", cfg))]) == 2  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and "ep0-ba12-rank0.pt" in errors[0]
    assert (folder / "ep0-ba12-rank0.pt").is_file() and not (folder / "incomplete").exists()
    assert not marker.exists()
