"""The attention dispatcher and its `torch` reference, checked against a plain fp64 softmax."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_models import AttentionUnavailableError
from foundry_models.attention import alibi_slopes, attention
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor


@pytest.mark.parametrize(("heads", "bias_max"), [(4, 8), (6, 8), (12, 8), (16, 4), (20, 8)])
def test_alibi_slopes_match_transformers_mpt(heads, bias_max):
    hf = build_mpt_alibi_tensor(heads, 2, alibi_bias_max=bias_max)  # (H, 1, 2): slope * (j - 1)
    assert torch.allclose(alibi_slopes(heads, bias_max), -hf[:, 0, 0], rtol=1e-6)


def _reference(q, k, v, *, causal, slopes, window, seq_id, scale, pad):
    """Explicit softmax attention in fp64 with every rule written out element by element."""
    b, t, h, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    scale = scale if scale is not None else 1 / math.sqrt(d)
    out = torch.zeros(b, t, h, d, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // hkv)
            scores = (q[bi, :, hi].double() @ k[bi, :, kv].double().T) * scale  # (T, S)
            for i in range(t):
                pos = i + s - t
                for j in range(s):
                    ok = (not causal or j <= pos) and (window is None or abs(pos - j) <= window)
                    ok = ok and (seq_id is None or seq_id[bi, i] == seq_id[bi, j])
                    ok = ok and (pad is None or bool(pad[bi, j]))
                    if not ok:
                        scores[i, j] = -math.inf
                    elif slopes is not None:
                        scores[i, j] -= slopes[hi].item() * abs(pos - j)
            out[bi, :, hi] = torch.softmax(scores, dim=-1) @ v[bi, :, kv].double()
    return out


CASES = {
    "causal": {},
    "alibi": {"alibi": True},
    "gqa_window": {"kv_heads": 2, "window": 3},
    "mqa_alibi_packed": {"kv_heads": 1, "alibi": True, "packed": True},
    "decode_step": {"t": 3, "alibi": True},
    "padding_scale": {"pad": True, "scale": 0.3},
    "everything": {"kv_heads": 2, "alibi": True, "window": 4, "packed": True, "scale": 0.2},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_attention_matches_reference(name):
    c = CASES[name]
    gen = torch.Generator().manual_seed(0)
    b, s, h, d = 2, 11, 4, 8
    t = c.get("t", s)
    kv_heads = c.get("kv_heads", h)
    q = torch.randn(b, t, h, d, generator=gen)
    k = torch.randn(b, s, kv_heads, d, generator=gen)
    v = torch.randn(b, s, kv_heads, d, generator=gen)
    slopes = alibi_slopes(h) if c.get("alibi") else None
    seq_id = torch.tensor([[0] * 4 + [1] * 7, [0] * 8 + [1] * 3]) if c.get("packed") else None
    pad = None
    if c.get("pad"):
        pad = torch.ones(b, s, dtype=torch.bool)
        pad[1, :3] = False
    got = attention(
        q,
        k,
        v,
        impl="torch",
        alibi_slopes=slopes,
        window=c.get("window"),
        sequence_id=seq_id,
        softmax_scale=c.get("scale"),
        key_padding_mask=pad,
    )
    want = _reference(
        q,
        k,
        v,
        causal=True,
        slopes=slopes,
        window=c.get("window"),
        seq_id=seq_id,
        scale=c.get("scale"),
        pad=pad,
    )
    rows = slice(None) if pad is None else slice(0, 1)  # fully padded query rows are unspecified
    assert torch.allclose(got[rows].double(), want[rows], atol=1e-5)
    if pad is not None:
        assert torch.allclose(got[1, 3:].double(), want[1, 3:], atol=1e-5)
        assert torch.isfinite(got).all()


def test_shape_errors_are_clear():
    q = torch.randn(1, 4, 4, 8)
    with pytest.raises(ValueError, match="multiple of Hkv"):
        attention(q, torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))
    with pytest.raises(ValueError, match="sequence_id must be"):
        attention(q, q, q, sequence_id=torch.zeros(1, 3, dtype=torch.long))


def test_padding_dropout_and_cache_run_on_the_reference_whatever_the_impl():
    """The dispatcher's one fall-back: only `torch` takes a padding mask, dropout or a KV cache,
    so those calls run there even with impl='flash' (which cannot run on CPU at all)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 2, 8, generator=gen)
    pad = torch.tensor([[False, True, True, True]])
    want = attention(q, q, q, impl="torch", key_padding_mask=pad)
    got = attention(q, q, q, impl="flash", key_padding_mask=pad)
    assert torch.equal(got, want)
    k = torch.randn(1, 6, 2, 8, generator=gen)
    cached = attention(q, k, k, impl="triton")  # T < S: decoding with a KV cache
    assert torch.equal(cached, attention(q, k, k, impl="torch"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_flash_on_cpu_says_what_to_do():
    q = torch.randn(1, 4, 2, 8, dtype=torch.bfloat16)
    with pytest.raises(AttentionUnavailableError, match="attn_impl='torch'"):
        attention(q, q, q, impl="flash")


def test_varlen_layout_splits_rows_and_runs():
    from foundry_models.attention.flash import varlen_layout

    seq_id = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 2]])
    cu, longest = varlen_layout(seq_id)
    assert cu.tolist() == [0, 2, 5, 9, 10] and cu.dtype == torch.int32 and longest == 4


@pytest.mark.parametrize(("heads", "bias_max"), [(4, 8.0), (12, 8.0), (6, 4.0), (32, 16.0)])
def test_flash_recovers_slope_parameters_and_rejects_others(heads, bias_max):
    from foundry_models.attention.alibi import slope_parameters

    n, got = slope_parameters(alibi_slopes(heads, bias_max))
    assert n == heads and got == pytest.approx(bias_max)
    with pytest.raises(ValueError, match="MPT's formula"):
        slope_parameters(torch.linspace(0.1, 0.5, heads))
