"""Fast by default: `compile: auto`, FSDP on one GPU, FP8 — the rule, the checks and a CPU run."""

from __future__ import annotations

import json

import pytest
import torch
from foundry_train.config import parse_config
from foundry_train.errors import ConfigError
from foundry_train.run_plan import Machine, fp8_problems, plan_run

H200 = (9, 0)


@pytest.fixture
def cfg_of(assets, h):
    return lambda **extra: parse_config(h.base_config(assets, None, **extra))


def _has_torchao() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


@pytest.mark.parametrize(
    ("machine", "fsdp", "expected"),
    [
        (Machine(1, cuda=False), None, ("none", "auto: no CUDA", False)),
        (Machine(1, cuda=True, capability=H200), None, ("model", "auto: one GPU", False)),
        (Machine(1, cuda=True, capability=H200), {}, ("model", "auto: one GPU", False)),
        (Machine(8, cuda=True, capability=H200), {}, ("blocks", "auto: 8 GPUs with FSDP", True)),
        (Machine(2, cuda=True, capability=H200), None, ("model", "auto: 2 GPUs with DDP", False)),
    ],
)
def test_compile_auto_and_fsdp_follow_the_datasheet_rule(cfg_of, machine, fsdp, expected) -> None:
    plan = plan_run(cfg_of(fsdp_config=fsdp), machine)
    assert (plan.compile, plan.compile_reason, plan.fsdp) == expected


def test_explicit_settings_win(cfg_of) -> None:
    one_gpu = Machine(1, cuda=True, capability=H200)
    cfg = cfg_of(compile="blocks", fsdp_config={"single_gpu": "wrap"})
    plan = plan_run(cfg, one_gpu)
    assert (plan.compile, plan.compile_reason, plan.fsdp) == ("blocks", "set in the config", True)
    assert plan_run(cfg_of(compile="none"), one_gpu).compile == "none"


def test_the_compile_mode_lever_reaches_torch_compile(cfg_of, monkeypatch) -> None:
    """FOUNDRY_TRAIN_COMPILE_MODE: named in the start-up line, passed to composer's
    compile_config (compile: model) and to each block's compile (blocks); refused if unknown."""
    from foundry_train import trainer
    from foundry_train.errors import FoundryError
    from foundry_train.run_plan import COMPILE_MODE_VARIABLE

    one_gpu = Machine(1, cuda=True, capability=H200)
    monkeypatch.delenv(COMPILE_MODE_VARIABLE, raising=False)
    plain = plan_run(cfg_of(), one_gpu)
    assert plain.compile_mode is None and trainer._compile_config(plain) == {}
    monkeypatch.setenv(COMPILE_MODE_VARIABLE, "max-autotune-no-cudagraphs")
    plan = plan_run(cfg_of(), one_gpu)
    assert trainer._compile_config(plan) == {"mode": "max-autotune-no-cudagraphs"}
    assert "compile: model (auto: one GPU), mode max-autotune-no-cudagraphs" in plan.line()
    assert plan_run(cfg_of(), Machine(1, cuda=False)).compile_mode is None  # nothing compiles
    blocks = plan_run(cfg_of(compile="blocks"), one_gpu)
    assert trainer._compile_config(blocks) is None

    seen: list[dict] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    network.fsdp_wrap_fn = lambda m: isinstance(m, torch.nn.Linear)
    assert trainer.compile_blocks(network, blocks.compile_mode) == 2
    assert seen == [{"mode": "max-autotune-no-cudagraphs"}] * 2
    for bad in ("reduce-overhead", "fast"):
        monkeypatch.setenv(COMPILE_MODE_VARIABLE, bad)
        with pytest.raises(FoundryError, match=f"FOUNDRY_TRAIN_COMPILE_MODE='{bad}'.*unset it"):
            plan_run(cfg_of(), one_gpu)


def test_fp8_needs_an_fp8_gpu(cfg_of) -> None:
    cfg = cfg_of(fp8={"recipe": "tensorwise"}, precision="amp_bf16")

    # torchao is an extra (foundry-train[fp8]); without it that is one more problem, named as such
    def problems(machine: Machine) -> list[str]:
        found = fp8_problems(cfg, machine)
        torchao = [p for p in found if "torchao is not installed" in p]
        assert len(torchao) == (0 if _has_torchao() else 1)
        return [p for p in found if p not in torchao]

    assert problems(Machine(1, cuda=True, capability=H200)) == []
    (cpu,) = problems(Machine(1, cuda=False))
    assert "needs a CUDA GPU of compute capability 8.9" in cpu and "--skip-hardware" in cpu
    (ampere,) = problems(Machine(1, cuda=True, capability=(8, 0)))
    assert "compute capability 8.0" in ampere
    with pytest.raises(ConfigError, match="fp8 needs precision: amp_bf16"):
        cfg_of(fp8={"recipe": "rowwise"}, precision="fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_validate_refuses_fp8_here_unless_hardware_checks_are_skipped(assets, h, tmp_path) -> None:
    path = h.write_config(
        tmp_path / "fp8.yaml", h.base_config(assets, None, precision="amp_bf16", fp8={})
    )
    refused = h.run_cli(["validate", str(path)])
    assert refused.returncode == 2, refused.stderr
    assert "fp8: FP8 training needs a CUDA GPU" in refused.stderr
    assert "Traceback" not in refused.stderr
    accepted = h.run_cli(["validate", str(path), "--skip-hardware"])
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU start-up line")
@pytest.mark.skipif(
    not _has_torchao(),
    reason="torchao is not in the workspace environment (importing it slows every transformers "
    "import); .ci/run runs this test with `uv run --with torchao==0.18.0`",
)
def test_fp8_trains_emulated_on_cpu_and_saves_full_precision_weights(assets, h, tmp_path) -> None:
    folder = tmp_path / "run"
    cfg = h.base_config(
        assets, folder, precision="amp_bf16", fp8={"recipe": "tensorwise"}, max_duration="4ba"
    )
    cfg["save_interval"] = "4ba"
    done = h.run_cli(["train", str(h.write_config(tmp_path / "c.yaml", cfg)), "--skip-hardware"])
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stderr.splitlines() if x.startswith("foundry-train: "))
    assert line.startswith(
        "foundry-train: attention: torch (no CUDA); compile: none (auto: no CUDA)"
    )
    assert "fsdp: off (no fsdp_config)" in line and "fp8: tensorwise" in line
    # 2 blocks x (Wqkv, out_proj, up_proj, down_proj): every block linear became a float8 one
    assert "fp8: 8 linear layers train through torchao float8" in done.stderr
    saved = (folder / "foundry_train_config.yaml").read_text()
    assert "compile: none" in saved  # the resolved choice, not 'auto'
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss/train/total"] for r in rows if "loss/train/total" in r]
    assert len(train_losses) == 4 and all(0 < x < 20 for x in train_losses)
    state = torch.load(folder / "ep0-ba4-rank0.pt", map_location="cpu", weights_only=False)
    weights = state["state"]["model"]
    wqkv = next(v for k, v in weights.items() if k.endswith("blocks.0.attn.Wqkv.weight"))
    assert wqkv.dtype == torch.float32  # float8 lives only inside the matmuls
    export = h.run_cli(["export-hf", str(folder / "ep0-ba4-rank0.pt"), str(tmp_path / "hf")])
    assert export.returncode == 0, export.stderr[-3000:]
    assert (tmp_path / "hf" / "config.json").is_file()


def test_activation_checkpointing_applies_on_one_gpu_without_the_fsdp_wrapper(cfg_of) -> None:
    """fsdp_config.activation_checkpointing (long context) applies on one GPU, which skips the wrapper."""
    one_gpu = Machine(1, cuda=True, capability=H200)
    plan = plan_run(cfg_of(fsdp_config={"activation_checkpointing": True}), one_gpu)
    assert not plan.fsdp and plan.act_ckpt_without_fsdp
    assert "activation checkpointing: each block" in plan.line()
    wrapped = plan_run(
        cfg_of(fsdp_config={"activation_checkpointing": True, "single_gpu": "wrap"}), one_gpu
    )
    assert wrapped.fsdp and not wrapped.act_ckpt_without_fsdp  # composer's FSDP does it
    assert not plan_run(cfg_of(fsdp_config={}), one_gpu).act_ckpt_without_fsdp


def _twin_mpts(**shape: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two tiny MPTs (two heads, expansion 2) with the same weights."""
    import foundry_models

    cfg = foundry_models.MPTConfig(n_heads=2, expansion_ratio=2, **shape)
    torch.manual_seed(0)
    first, second = foundry_models.MPTForCausalLM(cfg), foundry_models.MPTForCausalLM(cfg)
    second.load_state_dict(first.state_dict())
    return first, second


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_checkpointed_blocks_give_the_same_gradients_and_state_dict_keys(compiled: bool) -> None:
    """Compiled: `compile: model` on one GPU meets the checkpoint wrappers (dynamo traces them)."""
    from foundry_train.model import checkpoint_blocks

    plain, ckpt = _twin_mpts(d_model=32, n_layers=3, max_seq_len=16, vocab_size=64)
    assert checkpoint_blocks(ckpt) == 3
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    wrapped = [m for m in ckpt.modules() if type(m).__name__ == "CheckpointWrapper"]
    assert len(wrapped) == 3
    ids = torch.randint(0, 64, (2, 16))
    run = torch.compile(ckpt, backend="aot_eager") if compiled else ckpt
    run(input_ids=ids, labels=ids).loss.backward()
    plain(input_ids=ids, labels=ids).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_activation_cpu_offload_keeps_the_fsdp_wrapper_on_one_gpu(cfg_of) -> None:
    plan = plan_run(cfg_of(fsdp_config={"activation_cpu_offload": True}), Machine(1, True, H200))
    assert plan.fsdp and "activation_cpu_offload needs the wrapper" in plan.fsdp_reason


def test_one_gpu_without_the_wrapper_keeps_fsdp_mixed_precision_residual_dtype(cfg_of) -> None:
    """DEFAULT and PURE compute in bf16 under FSDP; one GPU without it casts the embedding's
    output instead, FULL keeps fp32, and nothing changes where the wrapper or a CPU runs."""
    one_gpu = Machine(1, cuda=True, capability=H200)

    def cfg(**extra):
        return cfg_of(**{"precision": "amp_bf16", **extra})

    for mp in ("DEFAULT", "PURE"):
        plan = plan_run(cfg(fsdp_config={"mixed_precision": mp}), one_gpu)
        assert plan.residual_dtype == "bf16", mp
        assert f"residual stream: bf16 (fsdp_config.mixed_precision {mp}" in plan.line()
    assert plan_run(cfg(fsdp_config={"mixed_precision": "FULL"}), one_gpu).residual_dtype is None
    fp16 = plan_run(cfg(fsdp_config={}, precision="amp_fp16"), one_gpu)
    assert fp16.residual_dtype == "fp16"
    assert plan_run(cfg(fsdp_config={}, precision="fp32"), one_gpu).residual_dtype is None
    assert plan_run(cfg(), one_gpu).residual_dtype is None  # no fsdp_config: plain autocast
    wrap = cfg(fsdp_config={"single_gpu": "wrap"})
    assert plan_run(wrap, one_gpu).residual_dtype is None  # FSDP's own bf16 weights do it
    assert plan_run(cfg(fsdp_config={}), Machine(8, True, H200)).residual_dtype is None
    assert plan_run(cfg(fsdp_config={}), Machine(1, cuda=False)).residual_dtype is None


def test_the_embedding_cast_gives_a_bf16_residual_stream_and_fp32_gradients() -> None:
    """Eager and compiled (`compile: model` traces the hook): the blocks see bf16, the weights
    and their gradients stay fp32, and the loss moves by bf16 rounding only."""
    from foundry_train.model import cast_embedding_output

    plain, cast = _twin_mpts(d_model=64, n_layers=2, max_seq_len=32, vocab_size=128)
    cast_embedding_output(cast, "bf16")
    seen: list[torch.dtype] = []
    cast.transformer.blocks[1].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].dtype)
    )
    ids = torch.randint(0, 128, (2, 32))

    def loss_of(model, compiled=False):
        run = torch.compile(model, backend="aot_eager") if compiled else model
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run(input_ids=ids, labels=ids).loss

    base = loss_of(plain)
    base.backward()
    eager = loss_of(cast)
    eager.backward()
    assert seen == [torch.bfloat16]  # the residual stream between blocks
    assert eager.item() != base.item() and abs(eager.item() - base.item()) < 0.02 * base.item()
    for (name, a), (_, b) in zip(plain.named_parameters(), cast.named_parameters(), strict=True):
        assert b.dtype == torch.float32 and b.grad is not None and b.grad.dtype == torch.float32
        scale = a.grad.abs().max().item() + 1e-6
        assert (a.grad - b.grad).abs().max().item() <= 0.1 * scale, name
    assert loss_of(cast, compiled=True).item() == pytest.approx(eager.item(), abs=1e-5)
