"""Model and tokenizer locations follow one rule: a local path, an org/name hub id, or missing.

The hub cases use a local Hugging Face cache laid out as huggingface_hub writes it
(``models--ORG--NAME/refs/main`` and ``snapshots/<commit>/``), with the hub offline: no network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from foundry_data import location_kind
from foundry_train.config import parse_config
from foundry_train.preflight import preflight_problems


def _hf_config(assets: dict, h: object, model: str) -> dict:
    cfg = h.base_config(assets, None)  # type: ignore[attr-defined]
    cfg["model"] = {"name": "hf_causal_lm", "pretrained_model_name_or_path": model}
    return cfg


def test_a_missing_model_path_is_named_at_once(assets: dict, h: object, tmp_path: Path) -> None:
    for missing in ("weights/model.safetensors", "./my-model", str(tmp_path / "nope")):
        assert location_kind(missing) == "missing"
        problems = preflight_problems(parse_config(_hf_config(assets, h, missing)), hardware=False)
        assert any(f"'{missing}' does not exist" in p for p in problems), problems


def test_an_org_name_model_is_a_hub_id_read_from_the_local_cache(
    assets: dict, h: object, tmp_path: Path
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--testorg--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(assets["llama"], snapshot)
    for f in assets["tok"].iterdir():
        shutil.copy(f, snapshot / f.name)
    cfg = _hf_config(assets, h, "testorg/tiny-llama")
    cfg["tokenizer"] = {"name": "testorg/tiny-llama"}
    cfg["train_loader"] = {"dataset": {"local": str(assets["pretrain"])}}
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    ok = h.run_cli(["validate", str(path)], env=env)  # type: ignore[attr-defined]
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip() == f"{path}: OK"


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("mosaicml/mpt-7b", "hub"), ("gpt2", "hub"), ("data.parquet", "missing"), ("~/x", "missing")],
)
def test_the_rule(spec: str, kind: str) -> None:
    assert location_kind(spec) == kind
    assert location_kind(os.getcwd()) == "path"
