"""Hugging Face hub ids wherever foundry-eval takes a model directory, from a local hub cache laid
out as transformers expects (HF_HUB_OFFLINE=1: no test reaches the hub)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from foundry_eval.cli import main
from foundry_eval.model_source import model_source

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tiny_model_dir, tmp_path, monkeypatch):
    """``testorg/tiny-llama`` in a hub cache under tmp_path (snapshots/<rev>/ and refs/main)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    repo = cache / "models--testorg--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both when imported (already done in this process): set them too.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _run(argv, out, capsys):
    assert main([*argv, "--json", str(out), "--no-progress", "--gauntlet", "none"]) == 0, (
        capsys.readouterr().err
    )
    return json.loads(out.read_text())["tasks"]


def test_hub_id_loads_from_the_local_hub_cache(
    hub_cache, tiny_model_dir, data_root, tmp_path, capsys
):
    common = ["--data-root", str(data_root), "--tasks", "piqa", "--limit", "4"]
    local = _run([str(tiny_model_dir), *common], tmp_path / "local.json", capsys)
    hub = _run(["testorg/tiny-llama", *common], tmp_path / "hub.json", capsys)
    assert hub["piqa/0-shot"]["metrics"] == local["piqa/0-shot"]["metrics"]
    # --tokenizer takes a hub id too.
    argv = [str(tiny_model_dir), "--tokenizer", "testorg/tiny-llama", *common]
    mixed = _run(argv, tmp_path / "mixed.json", capsys)
    assert mixed["piqa/0-shot"]["metrics"] == local["piqa/0-shot"]["metrics"]


def test_uncached_hub_id_offline_is_a_clear_error(hub_cache, data_root, capsys):
    assert main(["testorg/absent", "--data-root", str(data_root), "--tasks", "piqa"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "testorg/absent is a Hugging Face hub id that is not in the local hub cache" in err
    assert str(hub_cache) in err and "HF_HUB_OFFLINE is set" in err


@pytest.mark.parametrize(
    "value",
    ["./no-model", "~/no-such-model-dir", "/no/such/model", "model.safetensors", "a/b/c", "gpt2x"],
)
def test_missing_paths_fail_at_once(value, tiny_model_dir, data_root, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # would wait on the hub if asked
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    assert main([value, "--data-root", str(data_root), "--tasks", "piqa"]) == 2
    argv = [str(tiny_model_dir), "--tokenizer", value, "--data-root", str(data_root)]
    assert main([*argv, "--tasks", "piqa"]) == 2
    assert time.perf_counter() - start < 5
    errs = capsys.readouterr().err.splitlines()
    assert len(errs) == 2 and all(f"{value} does not exist" in e for e in errs), errs


def test_the_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert model_source("org/name") == "path"  # an existing local path wins
    for hub_id in ["mosaicml/mpt-7b", "Qwen/Qwen2.5-0.5B", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]:
        assert model_source(hub_id) == "hub"
    assert model_source("s3://bucket/model") == "url"
