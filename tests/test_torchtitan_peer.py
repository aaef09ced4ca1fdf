"""benchmarks/torchtitan_peer.py: the Llama-shaped MPT it trains is torchtitan's Llama 3 shape.

The Foundry YAML the benchmark writes is resolved the way `foundry-train` resolves it, the model
built on the meta device, and its parameters, FLOPs per token and dimensions compared with
torchtitan's Llama 3 at the same flavour: counted from the shape here, and, where torchtitan is
importable (the GPU host after `. .titan/setup.sh`), from torchtitan's own model.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "torchtitan_peer", ROOT / "benchmarks" / "torchtitan_peer.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


PEER = _peer()


def _mpt(shape_name: str, row: str, seq: int, tmp_path: Path) -> torch.nn.Module:
    from foundry_models import MPTForCausalLM
    from foundry_train.config import TrainConfig
    from foundry_train.model import resolve_model_config

    shape = PEER.SHAPES[shape_name]
    raw = PEER.foundry_config(shape, row, tmp_path, seq=seq, batch=8, steps=30, loss_chunk=8192)
    cfg = TrainConfig.model_validate(raw)
    config = resolve_model_config(cfg.model, cfg.max_seq_len)
    with torch.device("meta"):
        return MPTForCausalLM(config)


@pytest.mark.parametrize(("shape_name", "seq"), [("llama3-1b", 2048), ("tiny", 128)])
def test_mpt_is_the_llama3_shape(shape_name: str, seq: int, tmp_path: Path) -> None:
    from foundry_train.model import flops_per_token

    shape = PEER.SHAPES[shape_name]
    network = _mpt(shape_name, "bf16", seq, tmp_path)
    opts = network.config.options
    assert (opts.d_model, opts.n_layers, opts.n_heads, opts.kv_heads) == (
        shape.dim,
        shape.n_layers,
        shape.n_heads,
        shape.n_kv_heads,
    )
    assert (opts.ffn_hidden, opts.vocab_size, opts.max_seq_len) == (
        shape.ffn_hidden,
        shape.vocab_size,
        seq,
    )
    assert opts.attn.rope and not opts.attn.alibi and opts.attn.rope_theta == shape.rope_theta
    assert (opts.norm.norm_type, opts.ffn.ffn_type) == ("rmsnorm", "mptglu")
    assert opts.no_bias and not opts.tie_word_embeddings
    assert sum(p.numel() for p in network.parameters()) == shape.param_count()
    # the MFU of both runs is computed from shape.flops_per_token: Foundry's own count agrees
    assert flops_per_token(network, seq) == shape.flops_per_token(seq)


def test_llama3_1b_ffn_and_size() -> None:
    """Llama 3.2 1B's published FFN width (8192) and, untied, 1.50B parameters."""
    shape = PEER.SHAPES["llama3-1b"]
    assert shape.ffn_hidden == 8192
    assert round(shape.param_count() / 1e7) == 150


def test_fp8_row_sets_tensorwise_and_titan_skips_the_head(tmp_path: Path) -> None:
    shape = PEER.SHAPES["tiny"]
    fp8 = PEER.foundry_config(shape, "fp8", tmp_path, seq=128, batch=2, steps=20, loss_chunk=0)
    bf16 = PEER.foundry_config(shape, "bf16", tmp_path, seq=128, batch=2, steps=20, loss_chunk=0)
    assert fp8["fp8"] == {"recipe": "tensorwise"} and "fp8" not in bf16
    args = PEER.titan_args("tiny", "fp8", tmp_path, seq=128, batch=2, steps=20)
    joined = " ".join(args)
    assert "--model.converters quantize.linear.float8" in joined
    assert "--quantize.linear.float8.recipe_name tensorwise" in joined
    assert "--quantize.linear.float8.filter_fqns output" in joined
    assert "float8" not in " ".join(
        PEER.titan_args("tiny", "bf16", tmp_path, seq=128, batch=2, steps=20)
    )


def test_titan_log_line_of_the_last_step_is_read() -> None:
    # torchtitan 0.2.2's metrics line (components/metrics.py), colour printing off
    log = "\n".join(
        f"[titan] 2026-12-05 09:45:21,024 - root - INFO - step: {s:2}  loss:  6.66837  "
        f"grad_norm:  0.5217  memory: 41.25GiB(52.10%)  tps: {t:,}  tflops: 412.30  mfu: {m}%"
        for s, t, m in [(1, 1_234, "1.20"), (10, 61_000, "44.10"), (20, 62_500, "45.31")]
    )
    got = PEER.titan_result(log, 20)
    assert got["tokens_per_s"] == 62_500
    assert got["reported_mfu"] == pytest.approx(0.4531)
    assert got["peak_reserved_gib"] == 41.25
    with pytest.raises(ValueError, match="step 30"):
        PEER.titan_result(log, 30)


@pytest.mark.skipif(
    importlib.util.find_spec("torchtitan") is None, reason="torchtitan not installed (.titan/)"
)
def test_titan_model_has_the_same_parameters() -> None:
    from torchtitan.models.llama3 import Transformer, TransformerModelArgs

    for name in ("tiny", "llama3-1b"):
        s = PEER.SHAPES[name]
        args = TransformerModelArgs(
            dim=s.dim,
            n_layers=s.n_layers,
            n_heads=s.n_heads,
            n_kv_heads=s.n_kv_heads,
            vocab_size=s.vocab_size,
            multiple_of=s.multiple_of,
            ffn_dim_multiplier=s.ffn_dim_multiplier,
        )
        with torch.device("meta"):
            model = Transformer(args)
        assert sum(p.numel() for p in model.parameters()) == s.param_count()
        assert model.layers["0"].feed_forward.w1.out_features == s.ffn_hidden


def test_mixed_precision_option_sets_the_residual_stream_of_one_gpu(tmp_path: Path) -> None:
    """--mixed-precision none keeps torchtitan's one-GPU arithmetic (fp32 residual stream);
    PURE is the shipped YAMLs' setting, which one GPU without the wrapper computes in bf16."""
    from foundry_train.config import TrainConfig
    from foundry_train.run_plan import Machine, plan_run

    shape = PEER.SHAPES["tiny"]
    h100 = Machine(1, cuda=True, capability=(9, 0))
    plans = {}
    for mp in ("none", "PURE"):
        raw = PEER.foundry_config(
            shape, "bf16", tmp_path, seq=128, batch=2, steps=20, loss_chunk=0, mixed_precision=mp
        )
        plans[mp] = plan_run(TrainConfig.model_validate(raw), h100)
    assert plans["none"].residual_dtype is None and not plans["none"].fsdp
    assert plans["PURE"].residual_dtype == "bf16" and not plans["PURE"].fsdp
    assert PEER.parse_args(["--out-dir", "x"]).mixed_precision == "none"
