"""Checkpoints in an object store (a real S3 server, the root conftest's `s3_server`):
composer uploads them, autoresume finds the newest, downloads, scans and resumes from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from foundry_train.callbacks.monitors import read_metrics
from foundry_train.checkpointing.remote import download_checkpoint, latest_remote_checkpoint
from foundry_train.errors import FoundryError


@pytest.mark.slow
def test_autoresume_from_an_object_store_continues_the_run(
    baseline: Path, assets: dict, h: object, s3_server: object, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FOUNDRY_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    url = s3_server.url("runs/remote-resume")  # type: ignore[attr-defined]
    metrics = tmp_path / "metrics.jsonl"
    cfg = h.base_config(assets, None, autoresume=True)  # type: ignore[attr-defined]
    cfg.update(save_folder=url, save_interval="2ba", loggers={"metrics_file": str(metrics)})
    cfg["callbacks"] = {"plot": False}

    first = h.write_config(tmp_path / "first.yaml", {**cfg, "max_duration": "4ba"})  # type: ignore[attr-defined]
    run = h.run_cli([str(first)], env=s3_server.env)  # type: ignore[attr-defined]
    assert run.returncode == 0, run.stderr[-3000:]
    keys = s3_server.keys("runs/remote-resume/")  # type: ignore[attr-defined]
    assert "runs/remote-resume/ep0-ba4-rank0.pt" in keys, keys
    assert not [k for k in keys if k.endswith(".symlink")], keys  # no `latest` object to wait for
    assert latest_remote_checkpoint(url) == "ep0-ba4-rank0.pt"

    second = h.write_config(tmp_path / "second.yaml", {**cfg, "max_duration": "6ba"})  # type: ignore[attr-defined]
    run = h.run_cli([str(second)], env=s3_server.env)  # type: ignore[attr-defined]
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming from {url}/ep0-ba4-rank0.pt" in run.stderr
    assert "runs/remote-resume/ep0-ba6-rank0.pt" in s3_server.keys("runs/remote-resume/")  # type: ignore[attr-defined]
    # batches 0-3 from the first run, 4-5 after resuming: the uninterrupted run's losses
    loss = read_metrics(metrics, "loss/train/total")
    reference = h.losses(baseline)  # type: ignore[attr-defined]
    assert loss == {step: reference[step] for step in range(6)}

    # load_weights_only from an object store: the weights only, training from batch 0 (the
    # downloaded copy's path differs from the s3:// load_path, and the whole state was restored:
    # at max_duration 2ba that stopped with "max_duration less than the elapsed duration").
    # With the plot on: an s3:// save_folder puts it beside the metrics file (the run failed at
    # its end writing to a local path named "s3:/...").
    fresh = tmp_path / "weights-only-metrics.jsonl"
    third = h.write_config(  # type: ignore[attr-defined]
        tmp_path / "third.yaml",
        {
            **cfg,
            "autoresume": False,
            "save_folder": s3_server.url("runs/weights-only"),  # type: ignore[attr-defined]
            "load_path": f"{url}/ep0-ba4-rank0.pt",
            "load_weights_only": True,
            "max_duration": "2ba",
            "loggers": {"metrics_file": str(fresh)},
            "callbacks": {"plot": True},
        },
    )
    run = h.run_cli([str(third)], env=s3_server.env)  # type: ignore[attr-defined]
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(read_metrics(fresh, "loss/train/total")) == [0, 1]
    assert (tmp_path / "loss_throughput.png").is_file()


def test_missing_or_unreachable_remote_checkpoints_are_clear_errors(
    s3_server: object, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FOUNDRY_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    url = s3_server.url("runs/nothing-here")  # type: ignore[attr-defined]
    assert latest_remote_checkpoint(url) is None
    with pytest.raises(FoundryError, match="there is no checkpoint 'ep0-ba2-rank0.pt'"):
        download_checkpoint(f"{url}/ep0-ba2-rank0.pt")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(FoundryError, match="cannot list the checkpoints under"):
        latest_remote_checkpoint(url)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_folders_are_found_only_when_complete_and_fetched_whole(
    s3_server: object, tmp_path: Path, monkeypatch
) -> None:
    """A sharded (DCP) checkpoint is a folder of objects; one without .metadata is skipped."""
    import torch
    import torch.distributed.checkpoint as dcp
    from foundry_train.checkpointing.export import read_model_state_dict

    monkeypatch.setenv("FOUNDRY_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    weights = {"transformer.wte.weight": torch.randn(8, 4), "lm_head.weight": torch.randn(4, 8)}
    for name in ("ep0-ba2", "ep0-ba4"):
        model = {f"model.{k}": v + int(name[-1]) for k, v in weights.items()}
        # what composer's sharded save holds: model, optimizer and timestamp state
        state = {"state": {"model": model, "optimizers": {"adam": {"step": torch.zeros(1)}}}}
        state["state"]["timestamp"] = {"batch": int(name[-1])}
        dcp.save(state, checkpoint_id=str(tmp_path / "local" / name))
    # ep0-ba6: an upload cut short, shards but no .metadata yet
    dcp.save({"state": {"model": {"model.x": torch.ones(2)}}}, checkpoint_id=str(tmp_path / "cut"))
    (tmp_path / "cut" / ".metadata").unlink()
    client = s3_server.client()  # type: ignore[attr-defined]
    bucket = s3_server.bucket  # type: ignore[attr-defined]
    for folder, name in [(tmp_path / "local/ep0-ba2", "ep0-ba2"), (tmp_path / "local/ep0-ba4", "ep0-ba4"), (tmp_path / "cut", "ep0-ba6")]:  # fmt: skip
        for f in folder.iterdir():
            client.upload_file(str(f), bucket, f"runs/sharded/{name}/{f.name}")
    url = s3_server.url("runs/sharded")  # type: ignore[attr-defined]

    assert latest_remote_checkpoint(url) == "ep0-ba4"
    local = download_checkpoint(url, "ep0-ba4")
    assert local.is_dir() and (local / ".metadata").is_file()
    got = read_model_state_dict(local)
    assert sorted(got) == sorted(weights)
    for key, value in weights.items():
        assert torch.equal(got[key], value + 4), key
    with pytest.raises(FoundryError, match="incomplete or corrupt"):
        download_checkpoint(url, "ep0-ba6")
