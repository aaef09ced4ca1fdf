"""benchmarks/shipped_yamls.py on CPU: its foundry-data step, and that the commands it runs on the
GPU host are ones `foundry-train validate` accepts for the shipped YAMLs (FP8 row included)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "shipped_yamls.py"


def _module():
    spec = importlib.util.spec_from_file_location("shipped_yamls", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    subprocess.run(
        [sys.executable, str(BENCH), "prepare", "--data", str(root), "--text-mb", "1",
         "--seq", "2048", "--vocab", "600"],
        check=True,
        timeout=300,
    )  # fmt: skip
    return root


def test_prepare_writes_a_tokenizer_and_mds_splits_through_foundry_data(data: Path) -> None:
    assert (data / "tok" / "tokenizer.json").is_file()
    for split in ("train", "val"):
        index = json.loads((data / "mds" / split / "index.json").read_text())
        samples = sum(shard["samples"] for shard in index["shards"])
        assert samples > 50, split  # 1 MiB of stdlib source at 2048 tokens a sample


@pytest.mark.parametrize("preset, extra", [("1b", ["fp8.recipe=tensorwise"])])
def test_run_commands_validate_against_the_shipped_yaml(
    data: Path, tmp_path: Path, preset: str, extra: list[str]
) -> None:
    mod = _module()
    args = argparse.Namespace(data=data, steps=12, global_batch=32, set=extra)
    keys = mod.overrides(args, tmp_path / "run")
    assert [k.split("=")[0] for k in keys] == [
        "tokenizer.name",
        "train_loader.dataset.local",
        "eval_loader.dataset.local",
        "max_duration",
        "save_folder",
        "global_train_batch_size",
        "fp8.recipe",
    ]
    yaml = mod.YAMLS / "pretrain" / f"mpt-{preset}.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "foundry_train", "validate", str(yaml), *keys, "--skip-hardware"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compare_gives_speed_and_loss_against_the_base_tag(tmp_path: Path, capsys) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"preset": "1b", "tag": "bf16", "tokens_per_s": 50_000.0, "loss_last20": 4.0})
        + "\n"
        + json.dumps({"preset": "1b", "tag": "fp8", "tokens_per_s": 56_000.0, "loss_last20": 4.02})
        + "\n"
    )
    _module().compare(rows, "bf16", None)
    fp8 = next(x for x in capsys.readouterr().out.splitlines() if "| fp8 |" in x)
    assert "1.120x" in fp8 and "+0.50%" in fp8


def test_gpu_round_script_parses_and_handles_every_section_it_lists() -> None:
    script = BENCH.with_name("gpu_round.sh")
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    header = text.split("set -u", 1)[0]
    listed = {
        line.split()[1]
        for line in header.splitlines()
        if line.startswith("#   ") and len(line.split()) > 1 and not line.startswith("#    ")
    } - {"bash"}
    handled = {
        line.strip().split(")")[0]
        for line in text.split("case $section in", 1)[1].splitlines()
        if line.startswith("    ") and not line.startswith("     ") and ")" in line
    }
    assert listed and listed <= handled, (listed, handled)
