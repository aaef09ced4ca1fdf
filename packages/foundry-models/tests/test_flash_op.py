"""flash-attn-4's custom ops (attention/flash_op.py) on CPU: registration, fake shapes, autograd
wiring and a graph without breaks. The kernels themselves run only on a GPU
(tests/test_gpu_attention.py)."""

from __future__ import annotations

import pytest
import torch
from foundry_models.attention.flash_op import custom_op_enabled, fa4_attention


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=torch.bfloat16, requires_grad=True)


def test_the_ops_are_registered_with_their_schemas():
    forward = str(torch.ops.foundry.fa4_forward.default._schema)
    backward = str(torch.ops.foundry.fa4_backward.default._schema)
    assert "SymInt? window_left" in forward or "int? window_left" in forward, forward
    assert forward.endswith("-> (Tensor, Tensor)"), forward
    assert backward.endswith("-> (Tensor, Tensor, Tensor)"), backward


@pytest.mark.parametrize("alibi", [None, (8, 8.0)])
def test_fake_shapes_and_gradients_follow_the_inputs(alibi):
    q, k, v = _meta(2, 64, 8, 32), _meta(2, 64, 2, 32), _meta(2, 64, 2, 48)
    out = fa4_attention(q, k, v, causal=True, window=None, softmax_scale=None, alibi=alibi)
    assert out.shape == (2, 64, 8, 48) and out.dtype == torch.bfloat16
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None
    assert (q.grad.shape, k.grad.shape, v.grad.shape) == (q.shape, k.shape, v.shape)


def test_compile_traces_through_attention_in_one_graph():
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, _inputs: list) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    def block(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        q, k, v = (x @ w).unflatten(-1, (3, 4, 16)).unbind(2)
        y = fa4_attention(q, k, v, causal=True, window=16, softmax_scale=0.25, alibi=(4, 8.0))
        return y.flatten(2) @ w[:, :64].T

    torch._dynamo.reset()
    x = torch.empty(2, 32, 64, device="meta", dtype=torch.bfloat16)
    w = torch.empty(64, 192, device="meta", dtype=torch.bfloat16)
    out = torch.compile(block, backend=record, fullgraph=True)(x, w)
    assert out.shape == (2, 32, 64)
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any("fa4_forward" in t for t in targets), targets


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv("FOUNDRY_FA4_CUSTOM_OP", raising=False)
    assert not custom_op_enabled()
    monkeypatch.setenv("FOUNDRY_FA4_CUSTOM_OP", "1")
    assert custom_op_enabled()


def test_packed_qkv_path_is_cuda_flash_attn_4_only(monkeypatch):
    """packed_attention() declines (None: the caller splits q/k/v) off flash-attn-4 on CUDA; it
    is on by default and FOUNDRY_FLASH_PACKED_QKV=0 turns it off; tests/test_gpu_attention.py
    checks it on a GPU."""
    from foundry_models.attention import packed_attention
    from foundry_models.attention.flash_packed import packed_enabled

    monkeypatch.delenv("FOUNDRY_FLASH_PACKED_QKV", raising=False)
    assert packed_enabled()  # on by default since measured (DATASHEET, 2026-12-06)
    qkv = torch.randn(1, 16, 3 * 32)
    assert packed_attention(qkv, 2, 2, 16, impl="flash") is None  # CPU
    assert packed_attention(qkv, 2, 2, 16, impl="torch") is None
    for off in ("0", "false", " OFF "):
        monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", off)
        assert not packed_enabled(), off
    monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", "1")
    assert packed_enabled()


def test_packed_path_applies_to_plain_attention_options_only(monkeypatch):
    """packed_for() names the attn_config options that keep the packed path off (the start-up
    line says whether it runs)."""
    from foundry_models.attention.flash_packed import packed_for
    from foundry_models.options import AttentionOptions

    monkeypatch.delenv("FOUNDRY_FLASH_PACKED_QKV", raising=False)
    monkeypatch.delenv("FOUNDRY_FA4_CUSTOM_OP", raising=False)
    assert packed_for(AttentionOptions(), 12)
    assert packed_for(AttentionOptions(kv_n_heads=12), 12)
    assert packed_for(AttentionOptions(alibi=False, kv_n_heads=4), 12)  # GQA without ALiBi
    for off in (
        {"kv_n_heads": 4},  # ALiBi with grouped KV heads: flash.py repeats the heads
        {"rope": True, "alibi": False},
        {"qk_ln": True},
        {"attn_pdrop": 0.1},
        {"attn_uses_sequence_id": True},
    ):
        assert not packed_for(AttentionOptions(**off), 12), off
    monkeypatch.setenv("FOUNDRY_FA4_CUSTOM_OP", "1")
    assert not packed_for(AttentionOptions(), 12)
    monkeypatch.delenv("FOUNDRY_FA4_CUSTOM_OP")
    monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", "0")
    assert not packed_for(AttentionOptions(), 12)


def test_mpt_attention_reads_the_packing_options_once():
    """MPTAttention keeps q/k/v split for RoPE, qk-LN and ALiBi with grouped KV heads, whatever
    the call; plain ALiBi multi-head attention may pack."""
    from foundry_models import MPTConfig
    from foundry_models.blocks import MPTAttention

    shape = {"d_model": 64, "n_heads": 4, "n_layers": 1, "max_seq_len": 16, "vocab_size": 32}

    def packs(**attn):
        return MPTAttention(MPTConfig(**shape, attn_config=attn), 0).packs_qkv

    assert packs() and packs(kv_n_heads=4) and packs(alibi=False, kv_n_heads=2)
    assert not packs(kv_n_heads=2)
    assert not packs(rope=True, alibi=False)
    assert not packs(qk_ln=True)
