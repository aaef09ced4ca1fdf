"""MODEL may be a Hugging Face Hub id, read from a local hub cache laid out as transformers expects
(HF_HUB_OFFLINE=1: no test reaches the hub); a missing path fails at once."""

from __future__ import annotations

import shutil
import time

import pytest
from foundry_infer.cli import main

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def hub_cache(trained_llama_dir, tmp_path, monkeypatch):
    """``testorg/tiny-llama`` in a hub cache under tmp_path (snapshots/<rev>/ and refs/main)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    repo = cache / "models--testorg--tiny-llama"
    shutil.copytree(trained_llama_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read when huggingface_hub loaded
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _generate(model: str, capsys) -> str:
    argv = ["generate", model, "--prompt", "The", "--max-new-tokens", "6", "--backend", "torch"]
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_generate_takes_a_hub_id_from_the_local_cache(hub_cache, trained_llama_dir, capsys) -> None:
    assert _generate("testorg/tiny-llama", capsys) == _generate(str(trained_llama_dir), capsys)


def test_uncached_hub_id_offline_and_missing_path_are_clear_errors(hub_cache, capsys) -> None:
    assert main(["generate", "testorg/absent", "--prompt", "x", "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: testorg/absent is no local directory") and "Traceback" not in err
    assert "HF_HUB_OFFLINE is set" in err and str(hub_cache) in err
    start = time.monotonic()
    assert main(["generate", "./no-such-model", "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model directory ./no-such-model does not exist")
    assert time.monotonic() - start < 5
