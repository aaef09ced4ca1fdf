"""llm-foundry YAML migration, interpolation, LionW and the inverse-sqrt schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from foundry_train.config import load_config
from foundry_train.config.interpolation import resolve_interpolations
from foundry_train.optim import DecoupledLionW, InverseSqrtWithWarmupScheduler

LLMFOUNDRY_YAML = """
variables:
  data_local: ./my-copy-c4
  data_remote:
  max_seq_len: 2048
  global_seed: 17
  run_name: mpt-test
max_seq_len: ${variables.max_seq_len}
run_name: ${variables.run_name}-v2
model:
  name: mpt_causal_lm
  init_device: meta
  d_model: 768
  n_heads: 12
  n_layers: 12
  expansion_ratio: 4
  max_seq_len: ${variables.max_seq_len}
  vocab_size: 50368
tokenizer:
  name: EleutherAI/gpt-neox-20b
  kwargs: {model_max_length: "${variables.max_seq_len}"}
train_loader:
  name: text
  dataset:
    local: ${variables.data_local}
    remote: ${variables.data_remote}
    split: train
    shuffle: true
    max_seq_len: ${variables.max_seq_len}
    shuffle_seed: ${variables.global_seed}
  drop_last: true
  num_workers: 8
  pin_memory: true
scheduler: {name: cosine_with_warmup, t_warmup: 100ba, alpha_f: 0.1}
optimizer: {name: decoupled_adamw, lr: 6.0e-4, betas: [0.9, 0.95], eps: 1.0e-08, weight_decay: 0.0}
algorithms:
  gradient_clipping: {clipping_type: norm, clipping_threshold: 1.0}
max_duration: 4800ba
eval_first: false
global_train_batch_size: 256
seed: ${variables.global_seed}
device_train_microbatch_size: 16
precision: amp_bf16
fsdp_config: {sharding_strategy: FULL_SHARD, mixed_precision: PURE, verbose: false}
callbacks: {speed_monitor: {window_size: 10}, lr_monitor: {}, runtime_estimator: {}}
icl_tasks: eval/yamls/tasks.yaml
"""


def test_migrate_llmfoundry_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from foundry_train.cli import main

    src = tmp_path / "lf.yaml"
    src.write_text(LLMFOUNDRY_YAML)
    out = tmp_path / "ours.yaml"
    assert main(["migrate", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    cfg = load_config(out)  # the result validates
    assert cfg.run_name == "mpt-test-v2" and cfg.max_seq_len == 2048 and cfg.seed == 17
    assert (
        cfg.model.name == "mpt" and cfg.model.preset == "125m" and cfg.model.init_device == "meta"
    )
    assert cfg.tokenizer.kwargs == {"model_max_length": 2048}
    assert cfg.train_loader.dataset is not None and cfg.train_loader.dataset.local == "./my-copy-c4"
    assert cfg.train_loader.shuffle_seed == 17
    assert cfg.gradient_clipping is not None and cfg.gradient_clipping.clipping_threshold == 1.0
    assert cfg.fsdp_config is not None and cfg.fsdp_config.mixed_precision == "PURE"
    for unmapped in (
        "eval_first",
        "callbacks.runtime_estimator",
        "icl_tasks",
        "train_loader.pin_memory",
    ):
        assert unmapped in printed
    assert "callbacks.runtime_estimator" in out.read_text()  # listed in the file too
    assert main(["migrate", str(src), str(out)]) == 2  # refuses to overwrite


def test_interpolation_types_and_unresolved() -> None:
    doc = yaml.safe_load(
        "a: 3\nb: ${a}\nc: x-${a}-${missing}\nd: {e: '${variables.v}'}\nvariables: {v: [1, 2]}"
    )
    out, unresolved = resolve_interpolations(doc)
    assert out["b"] == 3 and out["d"]["e"] == [1, 2]
    assert out["c"] == "x-3-${missing}" and unresolved == ["missing"]


def test_lionw_step_matches_the_update_rule() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = DecoupledLionW([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.tensor([0.3, -0.1, 0.0])
    p.grad = g.clone()
    opt.step()
    # m = 0: update = sign(0.1 * g); decay p *= 1 - 0.01
    want = torch.tensor([1.0, -2.0, 0.5]) * (1 - 0.01) - 0.1 * torch.sign(0.1 * g)
    torch.testing.assert_close(p.detach(), want)
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.01 * g)
    p.grad = -g.clone()
    before = p.detach().clone()
    opt.step()
    c = 0.9 * (0.01 * g) + 0.1 * (-g)
    torch.testing.assert_close(p.detach(), before * (1 - 0.01) - 0.1 * torch.sign(c))


def test_inverse_sqrt_schedule() -> None:
    from types import SimpleNamespace

    sched = InverseSqrtWithWarmupScheduler("4ba", "16ba")

    def at(batch: int) -> float:
        return sched(SimpleNamespace(timestamp=SimpleNamespace(batch=batch)))  # type: ignore[arg-type]

    # warmup as composer's: 0 at batch 0, t / t_warmup; then sqrt(16 / (t - 4 + 16)): 1 where
    # warmup ends (it used to drop from 1 to sqrt(t_scale / t_warmup) there when t_warmup > t_scale)
    assert [at(b) for b in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert at(16) == pytest.approx(math.sqrt(16 / 28)) and at(52) == pytest.approx(0.5)
    long_warmup = InverseSqrtWithWarmupScheduler("1000ba", "100ba")
    before = long_warmup(SimpleNamespace(timestamp=SimpleNamespace(batch=999)))  # type: ignore[arg-type]
    after = long_warmup(SimpleNamespace(timestamp=SimpleNamespace(batch=1000)))  # type: ignore[arg-type]
    assert before == pytest.approx(0.999) and after == pytest.approx(1.0)


def test_configured_but_missing_logger_is_a_clear_error() -> None:
    import importlib.util

    from foundry_train.config.root import LoggersConfig
    from foundry_train.errors import FoundryError
    from foundry_train.loggers import build_tracking_loggers

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(FoundryError, match=r"loggers.wandb is configured but the 'wandb' package"):
        build_tracking_loggers(LoggersConfig.model_validate({"wandb": {"project": "p"}}))


def test_nan_guard_stops_with_a_clear_error() -> None:
    from types import SimpleNamespace

    from foundry_train.callbacks.monitors import LossSpikeGuard
    from foundry_train.config.root import LossSpikeConfig
    from foundry_train.errors import FoundryError

    guard = LossSpikeGuard(LossSpikeConfig.model_validate({"window": 2}))
    logged: list[dict] = []
    logger = SimpleNamespace(log_metrics=logged.append)

    def step(batch: int, loss: float) -> None:
        state = SimpleNamespace(
            total_loss_dict={"loss/train/total": loss}, timestamp=SimpleNamespace(batch=batch)
        )
        guard.batch_end(state, logger)  # type: ignore[arg-type]

    step(1, 2.0)
    step(2, 2.0)
    step(3, 9.0)  # > 3x the running mean: a spike, logged
    assert logged and logged[0]["loss_spike/ratio"] == pytest.approx(4.5)
    with pytest.raises(FoundryError, match="loss became nan at batch 4"):
        step(4, float("nan"))


def test_decoupled_adamw_matches_composers_update() -> None:
    """Ours (torch AdamW kernels) takes the same steps as composer's per-parameter loop,
    including the decay scaled by lr / initial lr when a schedule lowers lr."""
    from composer.optim import DecoupledAdamW as ComposerDecoupledAdamW
    from foundry_train.optim import DecoupledAdamW

    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    ours_p = [torch.nn.Parameter(t.clone()) for t in start]
    ref_p = [torch.nn.Parameter(t.clone()) for t in start]
    kw = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 1e-3}
    ours = DecoupledAdamW(ours_p, **kw)  # type: ignore[arg-type]
    ref = ComposerDecoupledAdamW(ref_p, **kw)  # type: ignore[arg-type]
    for step in range(6):
        grads = [torch.randn_like(t) for t in start]
        for opt, params in ((ours, ours_p), (ref, ref_p)):
            for group in opt.param_groups:
                group["lr"] = 1e-2 * (1.0 - 0.15 * step)  # what a scheduler does
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(ours_p, ref_p, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours_p[0].detach(), start[0])  # the steps moved the weights
