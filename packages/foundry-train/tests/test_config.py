"""Config schema, overrides, did-you-mean, preflight checks and the validate command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from foundry_train.config import apply_overrides, load_config, parse_config
from foundry_train.errors import ConfigError
from foundry_train.preflight import preflight_problems

REPO = Path(__file__).resolve().parents[3]


def _minimal() -> dict:
    return {
        "model": {"name": "mpt", "preset": "debug"},
        "tokenizer": {"name": "tok"},
        "train_loader": {"dataset": {"local": "data"}},
        "max_duration": "10ba",
        "global_train_batch_size": 8,
    }


def test_all_errors_at_once_with_did_you_mean() -> None:
    data = _minimal()
    data["optimzer"] = {"lr": 1e-3}
    data["train_loader"]["shufle"] = True
    data["global_train_batch_size"] = "many"
    data["max_duration"] = "ten batches"
    del data["tokenizer"]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    problems = info.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "optimzer: unknown key. Did you mean 'optimizer'?" in text
    assert "train_loader.shufle: unknown key. Did you mean 'shuffle'?" in text
    assert "global_train_batch_size:" in text and "'many'" in text
    assert "max_duration:" in text
    assert "tokenizer: required key is missing." in text


def test_impossible_combinations() -> None:
    data = _minimal()
    data["device_train_microbatch_size"] = 16
    with pytest.raises(ConfigError, match="larger than global_train_batch_size"):
        parse_config(data)
    data = _minimal()
    data["autoresume"] = True
    with pytest.raises(ConfigError, match="autoresume needs save_folder"):
        parse_config(data)


def test_dotted_overrides_parse_yaml_values() -> None:
    data = apply_overrides(
        _minimal(),
        [
            "optimizer.lr=3e-4",
            "fsdp_config.sharding_strategy=NO_SHARD",
            "train_loader.shuffle=false",
        ],
    )
    cfg = parse_config(data)
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.fsdp_config is not None and cfg.fsdp_config.sharding_strategy == "NO_SHARD"
    assert cfg.train_loader.shuffle is False


def test_preflight_batch_divisibility_and_vocab(assets: dict, h: object) -> None:
    cfg = parse_config(h.base_config(assets, None))  # type: ignore[attr-defined]
    assert preflight_problems(cfg, world_size=1) == []
    problems = preflight_problems(cfg, world_size=3)
    assert any("not divisible by world size 3" in p for p in problems)
    small_vocab = h.base_config(assets, None)  # type: ignore[attr-defined]
    small_vocab["model"]["config_overrides"] = {"vocab_size": 100}
    problems = preflight_problems(parse_config(small_vocab), world_size=1)
    assert any(
        "the tokenizer has 512 tokens but the model's vocab_size is 100" in p for p in problems
    )


def test_preflight_dataset_shorter_than_model(assets: dict, h: object) -> None:
    cfg_dict = h.base_config(assets, None, max_seq_len=64)  # type: ignore[attr-defined]
    problems = preflight_problems(parse_config(cfg_dict), world_size=1)
    assert any("dataset sequence length 32 is shorter than max_seq_len 64" in p for p in problems)
    cfg_dict = h.base_config(assets, None)  # type: ignore[attr-defined]
    cfg_dict["train_loader"]["dataset"]["local"] = str(assets["finetune"])
    problems = preflight_problems(parse_config(cfg_dict), world_size=1)
    assert any("holds finetuning data but the loader is 'pretraining'" in p for p in problems)


def test_validate_cli_clear_error_no_traceback(
    tmp_path: Path, h: object, assets: dict, capsys: pytest.CaptureFixture
) -> None:
    from foundry_train.cli import main

    bad = _minimal()
    bad["model"]["presett"] = "debug"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = h.run_cli(["validate", str(path), "--skip-files"])  # type: ignore[attr-defined]
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "model.presett: unknown key. Did you mean 'preset'?" in result.stderr
    assert "Traceback" not in result.stderr
    # files are checked too: a missing dataset is reported before anything starts
    good = h.base_config(assets, None)  # type: ignore[attr-defined]
    path.write_text(yaml.safe_dump(good))
    assert main(["validate", str(path)]) == 0
    assert (
        main(
            ["validate", str(path), "train_loader.dataset.local=/nope", "global_train_batch_size=7"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'/nope' is not an MDS dataset" in err and "not divisible by" in err
    # training refuses the same way (exit 2, nothing started)
    assert main([str(path), "train_loader.dataset.local=/nope"]) == 2


def test_every_shipped_yaml_loads_and_validates() -> None:
    import foundry_train

    yamls = sorted(foundry_train.shipped_yamls_dir().rglob("*.yaml"))
    names = {p.stem for p in yamls}
    for expected in ("mpt-125m", "mpt-350m", "mpt-760m", "mpt-1b", "mpt-3b", "mpt-7b", "debug-cpu"):
        assert expected in names
    assert len(yamls) >= 9
    for path in yamls:
        cfg = load_config(path)
        assert cfg.max_duration


def test_config_reference_is_up_to_date() -> None:
    from foundry_train.config.reference import config_reference

    doc = REPO / "docs" / "config-reference.md"
    assert doc.read_text() == config_reference(), (
        "docs/config-reference.md is stale: run `uv run foundry-train config-reference "
        "--out docs/config-reference.md`"
    )
