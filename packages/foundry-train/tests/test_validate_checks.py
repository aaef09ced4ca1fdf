"""`foundry-train validate` owns the schema: every problem reported together before anything
starts, time strings parsed by composer per key, llm-foundry YAMLs pointed at `migrate`."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from foundry_train.cli import build_parser, main
from foundry_train.config import load_config, parse_config
from foundry_train.errors import ConfigError

BASE = """\
model: {name: mpt, preset: debug}
tokenizer: {name: tok}
train_loader: {dataset: {local: data}}
max_duration: 10ba
global_train_batch_size: 8
"""


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    code = main(["validate", str(path), "--skip-files"])
    return code, capsys.readouterr().err


def test_issue_18_keys_reported_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's keys in one file: the refused ones are all listed in one error (exit 2, no
    traceback); the HF-checkpoint interval in `dur` and the ICL interval in `sp` are accepted,
    since composer's interval scheduler counts both."""
    text = BASE + (
        "device_train_microbatch_size: 0\n"
        "optimizer: {betas: [0.9, 1.5]}\n"
        "fsdp_config: {sharding_strategy: NO_SHARD, state_dict_type: sharded}\n"
        "callbacks: {hf_checkpointer: {save_folder: hf, save_interval: 0.5dur}}\n"
        "icl_eval: {tasks: t.yaml, data_root: d, interval: 100sp}\n"
        "console_log_interval: 100sp\n"
        "global_train_batch_size: 16\n"  # repeated key: line 12
    )
    code, err = _validate(tmp_path, text, capsys)
    assert code == 2 and "\nerror: " in "\n" + err and "Traceback" not in err
    assert "has 5 problems" in err, err
    assert "duplicate key 'global_train_batch_size' on line 12 (first on line 5)" in err
    assert "device_train_microbatch_size: must be 1 or more" in err
    assert "optimizer.betas: Value error, each beta must be in [0, 1)" not in err
    assert "optimizer.betas: each beta must be in [0, 1), e.g. [0.9, 0.95]; 1.5 is not" in err
    assert "fsdp_config: sharding_strategy NO_SHARD keeps whole weights" in err
    assert "console_log_interval: '100sp': unit 'sp' is not accepted here" in err
    assert "hf_checkpointer" not in err and "icl_eval" not in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("device_train_microbatch_size=-2", "device_train_microbatch_size: must be 1 or more"),
        ("optimizer.betas=[-0.1, 0.9]", "each beta must be in [0, 1)"),
        ("optimizer.betas=[0.9, 1.0]", "each beta must be in [0, 1)"),
        ("fsdp_config={sharding_strategy: NO_SHARD, data_parallel_replicate_degree: 2}",
         "data_parallel_replicate_degree applies to HYBRID_SHARD"),
        ("max_duration=0.5dur", "max_duration: '0.5dur': unit 'dur' is not accepted here"),
        ("max_duration=0ba", "max_duration: '0ba' must be above 0"),
        ("eval_interval=1.5ep", "eval_interval: '1.5ep' is not a composer time"),
        ("save_interval=2dur", "a 'dur' time is at most 1"),
        ("save_interval=100 batches", "is not a composer time"),
        ("scheduler={name: inv_sqrt_with_warmup, t_warmup: 0.1dur}",
         "inv_sqrt_with_warmup counts batches: give t_warmup in 'ba'"),
        ("scheduler.t_warmup=-1ba", "must be 0 or more"),
        # composer's warmup schedules need one unit: this passed validate, then crashed at batch 1
        ("scheduler.t_warmup=16sp", "scheduler.t_warmup '16sp' and max_duration '10ba' are in "
         "different units"),
        ("callbacks.hf_checkpointer={save_folder: x, save_interval: 5sec}",
         "unit 'sec' is not accepted here"),
        ("icl_eval={tasks: t, data_root: d, interval: 0dur}", "must be above 0"),
    ],
)  # fmt: skip
def test_each_refused_value(tmp_path: Path, override: str, expected: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert expected in str(info.value)


def test_accepted_times_keep_their_text(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    cfg = load_config(
        path,
        [
            "max_duration=2000tok",
            "eval_interval=0.25dur",
            "save_interval=64sp",
            "scheduler.t_warmup=0.1dur",
            "callbacks.hf_checkpointer={save_folder: x, save_interval: 1ep}",
        ],
    )
    assert (cfg.max_duration, cfg.eval_interval, cfg.save_interval) == (
        "2000tok",
        "0.25dur",
        "64sp",
    )
    assert cfg.callbacks.hf_checkpointer is not None
    assert cfg.callbacks.hf_checkpointer.save_interval == "1ep"


LLMFOUNDRY = """\
variables:
  seq: 128
max_seq_len: ${variables.seq}
model:
  name: mpt_causal_lm
  d_model: 64
  n_heads: 2
  n_layers: 2
  max_seq_len: ${variables.seq}
tokenizer: {name: EleutherAI/gpt-neox-20b}
train_loader: {name: text, dataset: {local: ./c4, split: train}}
max_duration: 10ba
global_train_batch_size: 8
"""


def test_llm_foundry_yaml_points_at_migrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused with one problem (not a list of unknown keys), naming a migrate command that
    parses and, when run, writes a YAML that foundry-train reads."""
    code, err = _validate(tmp_path, LLMFOUNDRY, capsys)
    assert code == 2 and "has 1 problem" in err, err
    assert "llm-foundry YAML (a top-level 'variables:' section and '${...}' interpolation" in err
    assert "(at max_seq_len)" in err
    command = err.split("new file: `")[1].split("`")[0]
    argv = shlex.split(command)
    assert argv[0] == "foundry-train"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "migrate"
    assert main(argv[1:]) == 0
    assert load_config(args.out).max_seq_len == 128
    # interpolation alone (no variables: section) is refused the same way
    code, err = _validate(tmp_path, BASE + "run_name: ${oc.env:USER}\n", capsys)
    assert code == 2 and "'${...}' interpolation (at run_name)" in err


def test_missing_tokenizer_folder_is_named(assets: dict, h: object, tmp_path: Path) -> None:
    from foundry_train.preflight import is_hub_id, preflight_problems

    cfg = h.base_config(assets, None)  # type: ignore[attr-defined]
    missing = tmp_path / "no-such" / "tok"
    cfg["tokenizer"]["name"] = str(missing)
    problems = preflight_problems(parse_config(cfg), world_size=1, hardware=False)
    assert problems == [
        f"tokenizer.name: the folder '{missing}' does not exist. Give a tokenizer folder "
        "(written by `foundry-data train-tokenizer` or save_pretrained) or a hub id such as "
        "'org/name'."
    ]
    for name in ("gpt2", "EleutherAI/gpt-neox-20b"):
        assert is_hub_id(name)
    for name in ("./tok", "runs/a/tok", "/abs/tok", "../tok", "~/tok", "org/"):
        assert not is_hub_id(name), name


@pytest.mark.parametrize(
    "text",
    ["100ba", "1ep", "2000tok", "512sp", "0.5dur", "1e3ba", "3e4tok", "1dur", "0ba", "-1ba",
     "1.5ep", "0.5ba", "ba", "10 ba", "tenba", "100", "1h", "5sec", "2iter", "1.0e2sp", "infba"],
)  # fmt: skip
def test_time_parser_agrees_with_composer(text: str) -> None:
    """The config's time parser (composer-free, for a fast validate) reads a time string
    exactly as composer does, or refuses one that composer refuses."""
    from composer.core import Time
    from foundry_train.config.times import parse_time

    try:
        theirs = Time.from_timestring(text)
    except (TypeError, ValueError, OverflowError):
        with pytest.raises(ValueError):
            parse_time(text)
        return
    if theirs.unit.value not in ("ba", "ep", "tok", "sp", "dur", "iter", "sec"):
        return
    try:
        ours = parse_time(text)
    except ValueError:
        assert theirs.unit.value == "sec", text  # '1h' style durations: composer only
        return
    assert (ours.value, ours.unit) == (theirs.value, theirs.unit.value)
    assert type(ours.value) is type(theirs.value)


def test_workers_get_the_resolved_config(
    assets: dict, h: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launching process validates the YAML and overrides once and hands the workers one
    resolved YAML (no overrides to apply again); the file is gone when the run ends."""
    import foundry_train.launcher
    import yaml

    for key in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(h.base_config(assets, None)))  # type: ignore[attr-defined]
    overrides = ["launcher.nproc=2", "optimizer.lr=1e-3", "max_duration=3ba"]
    seen: dict[str, object] = {}

    def fake_relaunch(cmd: list[str]) -> int:
        seen["cmd"] = cmd
        resolved = Path(cmd[-1])
        seen["file"] = resolved
        seen["config"] = load_config(resolved)
        return 0

    monkeypatch.setattr(foundry_train.launcher, "relaunch", fake_relaunch)
    assert main([str(path), *overrides]) == 0
    cmd = seen["cmd"]
    assert isinstance(cmd, list) and cmd[-4:-1] == ["-m", "foundry_train", "train"]
    assert "-n" in cmd and cmd[cmd.index("-n") + 1] == "2"
    expected = load_config(path, overrides)
    assert seen["config"] == expected and expected.optimizer.lr == pytest.approx(1e-3)
    assert not Path(str(seen["file"])).exists()


def test_issue_18_model_options_reported_with_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attn_impl: flsh`, `d_model: 65` and an MPT option of the wrong type, beside schema errors
    of other sections: all in one error before anything starts."""
    text = BASE.replace(
        "model: {name: mpt, preset: debug}",
        "model: {name: mpt, preset: debug, config_overrides: "
        "{d_model: 65, n_layers: two, attn_config: {attn_impl: flsh}}}",
    ) + ("device_train_microbatch_size: 0\noptimizer: {betas: [0.9, 1.5]}\n")
    code, err = _validate(tmp_path, text, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert "model.config_overrides.attn_config.attn_impl" in err and "did you mean 'flash'" in err
    assert "model.config_overrides.d_model" in err or "d_model" in err and "n_heads" in err
    assert "model.config_overrides.n_layers" in err
    assert "device_train_microbatch_size: must be 1 or more" in err
    assert "each beta must be in [0, 1)" in err


def test_overrides_after_an_option_are_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate CONFIG --skip-files KEY=VALUE`: plain argparse refuses overrides after an
    option; they must reach the config (the bad value is reported), and a stray flag must not."""
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    assert main(["validate", str(path), "--skip-files", "max_seq_len=-5", "max_duration=7ba"]) == 2
    assert "max_seq_len" in capsys.readouterr().err
    assert main(["validate", str(path), "--skip-files", "max_duration=7ba"]) == 0
    with pytest.raises(SystemExit):
        main(["validate", str(path), "--skip-files", "--bogus", "max_duration=7ba"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_warmup_units_follow_max_duration_and_eval_keeps_its_last_batch(tmp_path: Path) -> None:
    """An epoch warmup counts as batches; a zero warmup in another unit becomes '0dur' (composer
    refused '0ba' against a token max_duration); an eval_loader keeps its last, partial batch
    unless drop_last is set (it dropped it: part of the set unscored, or all of it, a NaN)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    cfg = load_config(path, ["scheduler.t_warmup=1ep"])
    assert cfg.scheduler.t_warmup == "1ep"
    cfg = load_config(path, ["max_duration=2000tok", "eval_loader={dataset: {local: data}}"])
    assert cfg.scheduler.t_warmup == "0dur"
    assert cfg.eval_loader is not None and cfg.eval_loader.drop_last is False
    assert cfg.train_loader.drop_last is True
    cfg = load_config(path, ["eval_loader={dataset: {local: data}, drop_last: true}"])
    assert cfg.eval_loader is not None and cfg.eval_loader.drop_last is True


def test_run_name_in_save_folder_is_filled_in_where_foundry_reads_it(tmp_path: Path) -> None:
    """llm-foundry's YAMLs write `save_folder: ./{run_name}/checkpoints`. composer fills it in;
    autoresume, the saved run config and the metrics file used the literal text, so a resumed
    run found no checkpoint, started over and overwrote them. Other placeholders are refused."""
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    named = load_config(path, ["run_name=myrun", "save_folder=./{run_name}/checkpoints"])
    assert named.save_folder == "./myrun/checkpoints"
    unnamed = load_config(path, ["save_folder=s3://bucket/{run_name}"])
    assert unnamed.save_folder == "s3://bucket/foundry-run"  # composer's name for it
    with pytest.raises(ConfigError, match=r"only \{run_name\} is filled in"):
        load_config(path, ["save_folder=./{rank}/checkpoints"])
