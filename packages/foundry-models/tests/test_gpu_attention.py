"""GPU checks of attn_impl="flash" and "triton" against the `torch` reference (outputs, gradients).

Each kernel's error against an fp32 reference must stay within a small multiple of the error of
PyTorch's own low-precision SDPA on the same inputs (FlashAttention's test criterion).
"""

from __future__ import annotations

import pytest
import torch
from foundry_models import AttentionUnavailableError, MPTForCausalLM, preset_config
from foundry_models.attention import alibi_slopes, attention, choose_impl, packed_attention
from foundry_models.attention.flash import flash_status

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CASES = {
    "causal_d128": {"d": 128},
    "alibi_d64": {"d": 64, "alibi": True},
    "gqa_window_alibi": {"d": 128, "kv": 2, "alibi": True, "window": 100},
    "mqa_packed_alibi": {"d": 64, "kv": 1, "alibi": True, "packed": True},
    "packed_window_odd_len": {"d": 128, "t": 333, "packed": True, "window": 50},
    "noncausal_gqa_alibi": {"d": 64, "kv": 4, "alibi": True, "causal": False},
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl", ["flash", "flash_op", "triton"])
def test_kernel_matches_torch_reference(impl, case, dtype, monkeypatch):
    """`flash_op`: flash-attn-4 through foundry's custom ops (attention/flash_op.py)."""
    c = CASES[case]
    monkeypatch.setenv("FOUNDRY_FA4_CUSTOM_OP", "1" if impl == "flash_op" else "0")
    impl = "flash" if impl == "flash_op" else impl
    torch.manual_seed(0)
    b, t, h, d = 2, c.get("t", 512), 8, c["d"]
    kv = c.get("kv", h)
    q = torch.randn(b, t, h, d, device="cuda")
    k = torch.randn(b, t, kv, d, device="cuda")
    v = torch.randn(b, t, kv, d, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    upstream = torch.randn(b, t, h, d, device="cuda", generator=g)

    def run(name, run_dtype):
        h_ = q.shape[2]
        slopes = alibi_slopes(h_, device="cuda") if c.get("alibi") else None
        seq_id = None
        if c.get("packed"):
            pos = torch.arange(t, device="cuda")
            seq_id = ((pos >= t // 3).long() + (pos >= t // 2).long()).expand(b, t)
        args = [x.detach().to(run_dtype).requires_grad_() for x in (q, k, v)]
        out = attention(
            *args,
            impl=name,
            causal=c.get("causal", True),
            alibi_slopes=slopes,
            window=c.get("window"),
            sequence_id=seq_id,
            alibi_bias_max=8.0 if c.get("alibi") else None,
        )
        grads = torch.autograd.grad(out, args, upstream.to(run_dtype))
        return [out.float()] + [x.float() for x in grads]

    try:
        got = run(impl, dtype)
    except AttentionUnavailableError as exc:
        pytest.skip(str(exc))
    ref = run("torch", torch.float32)
    low = run("torch", dtype)
    for name, a, r, lo in zip(("out", "dq", "dk", "dv"), got, ref, low, strict=True):
        err = (a - r).abs().max().item()
        base = (lo - r).abs().max().item()
        assert err <= 3 * base + 1e-3, f"{impl} {name}: error {err:.2e} vs SDPA's {base:.2e}"


@pytest.mark.parametrize("impl", ["flash", "triton", "auto"])
def test_model_trains_with_impl_like_torch(impl):
    overrides = {"d_model": 256, "n_heads": 4, "max_seq_len": 256, "vocab_size": 1000}
    torch.manual_seed(0)
    reference = preset_config("debug", attn_config={"attn_impl": "torch"}, **overrides)
    ref = MPTForCausalLM(reference).cuda()
    model = MPTForCausalLM(preset_config("debug", attn_config={"attn_impl": impl}, **overrides))
    model.load_state_dict(ref.state_dict())
    model.cuda()
    x = torch.randint(0, 1000, (2, 256), device="cuda")
    losses = []
    for m in (ref, model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            try:
                loss = m(input_ids=x, labels=x).loss
            except AttentionUnavailableError as exc:
                pytest.skip(str(exc))
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 2e-2
    for (name, a), b in zip(ref.named_parameters(), model.parameters(), strict=True):
        scale = a.grad.abs().max().item() + 1e-6
        assert (a.grad - b.grad).abs().max().item() <= 0.05 * scale, name


def test_auto_picks_flash_where_it_runs_else_triton():
    backend, why = flash_status(torch.cuda.current_device())
    choice = choose_impl("auto")
    if backend is not None:
        assert choice.impl == "flash" and choice.reason == why  # e.g. "flash-attn-4, sm90"
    else:
        assert choice.impl == "triton" and why in choice.reason
    assert choose_impl("auto", "cuda", torch.float32).impl == "triton"  # flash takes fp16/bf16


def test_auto_under_torch_compile_matches_eager():
    config = preset_config("debug", d_model=256, n_heads=4, max_seq_len=256, vocab_size=1000)
    torch.manual_seed(0)
    model = MPTForCausalLM(config).cuda()
    x = torch.randint(0, 1000, (2, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(input_ids=x, labels=x).loss
        compiled = torch.compile(model)(input_ids=x, labels=x).loss
    compiled.backward()
    assert abs(eager.item() - compiled.item()) < 1e-2


def test_flash_custom_op_compiles_the_model_in_one_graph(monkeypatch):
    """With flash-attn-4's custom ops a compiled MPT (ALiBi) traces without a graph break (plain
    flash-attn-4 breaks the graph at each attention call) and trains like eager."""
    if flash_status(torch.cuda.current_device())[0] != "fa4":
        pytest.skip("needs flash-attn-4 on this GPU")
    monkeypatch.setenv("FOUNDRY_FA4_CUSTOM_OP", "1")
    overrides = {"d_model": 256, "n_heads": 4, "max_seq_len": 256, "vocab_size": 1000}
    config = preset_config("debug", attn_config={"attn_impl": "flash", "alibi": True}, **overrides)
    torch.manual_seed(0)
    model = MPTForCausalLM(config).cuda()
    x = torch.randint(0, 1000, (2, 256), device="cuda")
    torch._dynamo.reset()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(input_ids=x, labels=x)
        eager = model(input_ids=x, labels=x).loss
        compiled = torch.compile(model)(input_ids=x, labels=x).loss
    compiled.backward()
    assert abs(eager.item() - compiled.item()) < 1e-2
    assert explained.graph_break_count == 0, explained.break_reasons


PACKED = {
    "mha_alibi": {"kv": 8, "alibi": True},
    "mha_alibi_window": {"kv": 8, "alibi": True, "window": 100},
    "gqa": {"kv": 2},
}


@pytest.mark.parametrize("case", sorted(PACKED))
def test_packed_qkv_gradient_matches_the_split_path(case, monkeypatch):
    """flash_packed.py: flash-attn-4 writing dq, dk and dv into one packed buffer gives the
    gradient that the split q/k/v path (flash_attn_func, then the split's concatenation) gives."""
    if flash_status(torch.cuda.current_device())[0] != "fa4":
        pytest.skip("needs flash-attn-4 on this GPU")
    monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", "1")
    c = PACKED[case]
    b, t, h, d, kv = 2, 512, 8, 64, c["kv"]
    torch.manual_seed(0)
    qkv = torch.randn(b, t, (h + 2 * kv) * d, device="cuda", dtype=torch.bfloat16)
    upstream = torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16)
    options = {
        "impl": "flash",
        "alibi_slopes": alibi_slopes(h, device="cuda") if c.get("alibi") else None,
        "window": c.get("window"),
        "alibi_bias_max": 8.0 if c.get("alibi") else None,
    }
    packed_in = qkv.clone().requires_grad_()
    out = packed_attention(packed_in, h, kv, d, **options)
    assert out is not None, "the packed path did not apply to a plain flash-attn-4 call"
    (grad,) = torch.autograd.grad(out, packed_in, upstream)
    split_in = qkv.clone().requires_grad_()
    q, k, v = split_in.split([h * d, kv * d, kv * d], dim=-1)
    shapes = ((b, t, h, d), (b, t, kv, d), (b, t, kv, d))
    q, k, v = (x.reshape(s) for x, s in zip((q, k, v), shapes, strict=True))
    ref = attention(q, k, v, **options)
    (ref_grad,) = torch.autograd.grad(ref, split_in, upstream)
    assert torch.equal(out, ref)
    for name, part, ref_part in zip(
        ("dq", "dk", "dv"),
        grad.split([h * d, kv * d, kv * d], dim=-1),
        ref_grad.split([h * d, kv * d, kv * d], dim=-1),
        strict=True,
    ):
        scale = ref_part.float().abs().max().item()
        err = (part.float() - ref_part.float()).abs().max().item()
        assert err <= 1e-2 * scale, f"{name}: {err:.3e} against a largest gradient of {scale:.3e}"


def test_compiled_model_with_packed_qkv_trains_like_the_split_path(monkeypatch):
    if flash_status(torch.cuda.current_device())[0] != "fa4":
        pytest.skip("needs flash-attn-4 on this GPU")
    from foundry_models.attention import flash_packed

    calls = []
    real = flash_packed.packed_flash_attention
    monkeypatch.setattr(
        flash_packed, "packed_flash_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    overrides = {"d_model": 256, "n_heads": 4, "max_seq_len": 256, "vocab_size": 1000}
    config = preset_config("debug", attn_config={"attn_impl": "flash", "alibi": True}, **overrides)
    torch.manual_seed(0)
    x = torch.randint(0, 1000, (2, 256), device="cuda")
    losses, grads = [], []
    for packed in ("1", "0"):
        monkeypatch.setenv("FOUNDRY_FLASH_PACKED_QKV", packed)
        torch.manual_seed(0)
        model = MPTForCausalLM(config).cuda()
        torch._dynamo.reset()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.compile(model)(input_ids=x, labels=x).loss
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.float() for p in model.parameters()])
        if packed == "1":
            assert calls, "the compiled model did not take the packed path"
            calls.clear()
    assert not calls, "FOUNDRY_FLASH_PACKED_QKV=0 still took the packed path"
    assert abs(losses[0] - losses[1]) < 1e-3
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max().item() <= 2e-2 * (b.abs().max().item() + 1e-6)
