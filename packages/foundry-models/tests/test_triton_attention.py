"""The Triton attention kernels against a plain PyTorch reference, on outputs and q/k/v gradients.

CPU: every case runs through Triton's interpreter in ONE child process started with
``TRITON_INTERPRET=1`` in its environment (the variable must be set before triton is imported, and
setting it in this process would leak into every other test). The child is this file run as a
script; it prints one JSON line of errors per case, and the parametrised tests below assert on them.

GPU (``@pytest.mark.gpu``): the same cases at realistic sizes in bf16 and fp16, in this process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, replace

import pytest
import torch

pytest.importorskip("triton")

from foundry_models.attention.triton_function import triton_attention  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    batch: int = 2
    seq_len: int = 40
    heads: int = 2
    kv_heads: int = 2
    head_dim: int = 16
    causal: bool = True
    alibi: bool = False
    window: int | None = None
    packed: bool = False
    fused_qkv: bool = False
    softmax_scale: float | None = None


# Tiny sizes for the interpreter (its tiles are 32x16 / 16x32): ragged ends (40 and 70 are not
# tile multiples), several tiles per row so the mask-free middle ranges run too (window 50 leaves
# fully visible tiles inside the window).
CASES = [
    Case("causal"),
    Case("causal_alibi", seq_len=70, alibi=True),
    Case("gqa_alibi", heads=4, kv_heads=2, seq_len=70, alibi=True),
    Case("mqa", heads=4, kv_heads=1, seq_len=70),
    Case("window_wide_alibi", seq_len=70, window=50, alibi=True),
    Case("window_narrow", window=7),
    Case("window_one", seq_len=70, window=1),
    Case("packed_gqa_alibi", heads=4, kv_heads=2, seq_len=70, packed=True, alibi=True),
    Case("everything", heads=4, kv_heads=1, seq_len=70, alibi=True, window=30, packed=True),
    Case("noncausal_alibi_packed", causal=False, alibi=True, packed=True),
    Case("head_dim_24_alibi", head_dim=24, alibi=True),
    Case("head_dim_64_gqa", batch=1, heads=4, kv_heads=2, head_dim=64),
    Case("fused_qkv_scale", fused_qkv=True, alibi=True, softmax_scale=0.3),
]

# Per-dtype tolerances on max|err| / max|reference| (outputs; gradients get twice as much).
TOLERANCE = {torch.float32: 2e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def alibi_slopes(heads: int) -> torch.Tensor:
    """MPT's ALiBi slopes (alibi_bias_max = 8) for ``heads`` heads."""
    padded = 2 ** math.ceil(math.log2(heads))
    slopes = 1.0 / torch.pow(2.0, torch.arange(1, padded + 1) * (8.0 / padded))
    if padded != heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:heads]
    return slopes.float()


def packed_ids(batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted segment ids like a packed batch: 1 to 4 documents per row at random boundaries."""
    rows = []
    for _ in range(batch):
        cuts = torch.randint(1, seq_len, (3,), generator=generator)
        rows.append((torch.arange(seq_len)[:, None] >= cuts[None, :]).sum(1))
    return torch.stack(rows)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    slopes: torch.Tensor | None,
    window: int | None,
    sequence_id: torch.Tensor | None,
    softmax_scale: float | None,
) -> torch.Tensor:
    """Materialised mask + bias + softmax in fp32; shapes as triton_attention."""
    batch, seq_len, heads, head_dim = q.shape
    group = heads // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(group, dim=1), vf.repeat_interleave(group, dim=1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    scores = qf @ kf.transpose(-1, -2) * scale
    pos = torch.arange(seq_len, device=q.device)
    dist = pos[None, :] - pos[:, None]  # j - i
    visible = torch.ones(batch, 1, seq_len, seq_len, dtype=torch.bool, device=q.device)
    if causal:
        visible &= dist <= 0
    if window is not None:
        visible &= -dist <= window  # i - j <= window: the package's one convention
    if sequence_id is not None:
        visible &= (sequence_id[:, :, None] == sequence_id[:, None, :])[:, None]
    if slopes is not None:
        bias = dist.float() if causal else -dist.abs().float()
        scores = scores + slopes.float().view(1, heads, 1, 1) * bias
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(-1) @ vf).transpose(1, 2)


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b, t, h, hk, d = case.batch, case.seq_len, case.heads, case.kv_heads, case.head_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = rand(b, t, h, d), rand(b, t, hk, d), rand(b, t, hk, d)
    return {
        "q": q,
        "k": k,
        "v": v,
        "grad": rand(b, t, h, d),
        "slopes": alibi_slopes(h).to(device) if case.alibi else None,
        "sequence_id": packed_ids(b, t, gen).to(device) if case.packed else None,
    }


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return (
        (got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6)
    ).item()


def strided_leaves(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """q, k, v as views of one fused (B, T, (H + 2 Hkv) * D) leaf, as an MPT block's QKV split
    produces them (token stride (H + 2 Hkv) * D, not H * D); gradients reach them through it."""
    b, t, h, d = q.shape
    fused = torch.cat([x.flatten(2) for x in (q, k, v)], dim=-1).requires_grad_(True)
    parts = fused.split([h * d, k.shape[2] * d, k.shape[2] * d], dim=-1)
    views = [p.unflatten(-1, (-1, d)) for p in parts]
    for view in views:
        view.retain_grad()
    assert views[0].stride(1) == fused.shape[-1] and not views[0].is_contiguous()
    return dict(zip("qkv", views, strict=True))


def case_errors(case: Case, dtype: torch.dtype, device: str) -> dict[str, float]:
    """Run triton_attention and the reference forward and backward; relative error per tensor."""
    inputs = make_inputs(case, dtype, device)
    if case.fused_qkv:
        leaves = strided_leaves(inputs["q"], inputs["k"], inputs["v"])
    else:
        leaves = {n: inputs[n].detach().clone().requires_grad_(True) for n in ("q", "k", "v")}
    ref_leaves = {n: inputs[n].detach().float().requires_grad_(True) for n in ("q", "k", "v")}
    options = {
        "causal": case.causal,
        "window": case.window,
        "sequence_id": inputs["sequence_id"],
        "softmax_scale": case.softmax_scale,
    }
    out = triton_attention(**leaves, alibi_slopes=inputs["slopes"], **options)
    out.backward(inputs["grad"])
    ref = reference_attention(**ref_leaves, slopes=inputs["slopes"], **options)
    ref.backward(inputs["grad"].float())
    errors = {"out": relative_error(out, ref)}
    for name in ("q", "k", "v"):
        got, want = leaves[name].grad, ref_leaves[name].grad
        assert got is not None and want is not None, f"no gradient reached {name}"
        errors[f"d{name}"] = relative_error(got, want)
    assert out.dtype == dtype and out.shape == inputs["q"].shape
    return errors


def assert_close_enough(errors: dict[str, float], dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    bad = {n: e for n, e in errors.items() if not e <= (tol if n == "out" else 2 * tol)}
    assert not bad, f"errors above tolerance {tol} (x2 for gradients): {bad} (all: {errors})"


# ---------------------------------------------------------------- CPU, through the interpreter

INTERPRETER_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# fp32 everywhere; fp16 on one case (numpy's float16 matmuls are slow).
INTERPRETER_RUNS = [(c.name, "float32") for c in CASES] + [("everything", "float16")]


def _interpreter_child() -> None:
    """Entry point of the child process (TRITON_INTERPRET=1 is already in its environment)."""
    torch.set_num_threads(1)
    by_name = {c.name: c for c in CASES}
    results = {}
    for name, dtype in INTERPRETER_RUNS:
        try:
            results[f"{name}-{dtype}"] = case_errors(
                by_name[name], INTERPRETER_DTYPES[dtype], "cpu"
            )
        except Exception as exc:  # reported per case by the parent
            results[f"{name}-{dtype}"] = {"exception": f"{type(exc).__name__}: {exc}"}
    print("RESULTS " + json.dumps(results))


@pytest.fixture(scope="session")
def interpreter_results() -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--interpreter-child"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"interpreter child failed:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.mark.parametrize(("name", "dtype"), INTERPRETER_RUNS)
def test_interpreter_matches_reference(interpreter_results: dict, name: str, dtype: str) -> None:
    errors = interpreter_results[f"{name}-{dtype}"]
    assert "exception" not in errors, errors.get("exception")
    assert set(errors) == {"out", "dq", "dk", "dv"}
    assert_close_enough(errors, INTERPRETER_DTYPES[dtype])


def test_reference_agrees_with_sdpa() -> None:
    """The test's reference itself, against SDPA with an explicit additive mask (CPU, fp32)."""
    case = Case("check", heads=4, kv_heads=2, alibi=True, window=9, packed=True)
    inputs = make_inputs(case, torch.float32, "cpu")
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    ref = reference_attention(
        q,
        k,
        v,
        causal=True,
        slopes=inputs["slopes"],
        window=9,
        sequence_id=inputs["sequence_id"],
        softmax_scale=None,
    )
    pos = torch.arange(case.seq_len)
    i, j = pos[:, None], pos[None, :]
    ids = inputs["sequence_id"]
    allowed = (j <= i) & (i - j <= 9) & (ids[:, :, None] == ids[:, None, :])
    bias = inputs["slopes"].view(1, -1, 1, 1) * (j - i).float()
    mask = bias.masked_fill(~allowed[:, None], float("-inf"))
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.repeat_interleave(2, 2).transpose(1, 2),
        v.repeat_interleave(2, 2).transpose(1, 2),
        attn_mask=mask,
    ).transpose(1, 2)
    torch.testing.assert_close(ref, sdpa, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- input checks (no kernel runs)


def _tensors(t: int = 8, s: int = 8, h: int = 4, hk: int = 2, d: int = 16, device: str = "cpu"):
    return (
        torch.randn(1, t, h, d, device=device),
        torch.randn(1, s, hk, d, device=device),
        torch.randn(1, s, hk, d, device=device),
    )


@pytest.mark.parametrize(
    ("kwargs", "shapes", "message"),
    [
        ({}, {"s": 12}, "T == S"),
        ({}, {"hk": 3}, "multiple of the number of key/value heads"),
        ({"window": -1}, {}, "window must be a non-negative int"),
        ({"window": 4, "causal": False}, {}, "causal attention only"),
        ({"alibi_slopes": torch.ones(3)}, {}, "alibi_slopes must have shape"),
        ({"sequence_id": torch.zeros(1, 7, dtype=torch.long)}, {}, "sequence_id must be"),
        ({}, {"d": 512}, "head dims up to"),
    ],
)
def test_bad_inputs_are_rejected_clearly(kwargs: dict, shapes: dict, message: str) -> None:
    q, k, v = _tensors(**shapes)
    with pytest.raises(ValueError, match=message):
        triton_attention(q, k, v, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error without a GPU")
def test_cpu_tensors_without_interpreter_say_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="attn_impl='torch'"):
        triton_attention(*_tensors())


# ---------------------------------------------------------------- GPU, realistic sizes

GPU_CASES = [
    replace(c, batch=2, seq_len=1000 + 24 * i, head_dim=64 if i % 2 else 128)
    for i, c in enumerate(CASES)
    if c.name not in ("head_dim_24_alibi", "head_dim_64_gqa")
] + [
    Case("head_dim_80", batch=2, seq_len=777, heads=8, kv_heads=8, head_dim=80, alibi=True),
    Case("gpu_gqa_window", batch=2, seq_len=2048, heads=16, kv_heads=4, head_dim=128, window=300),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[c.name for c in GPU_CASES])
def test_gpu_matches_reference(case: Case, dtype: torch.dtype) -> None:
    assert_close_enough(case_errors(case, dtype, "cuda"), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_float32_matches_reference() -> None:
    case = Case("fp32", batch=2, seq_len=513, heads=4, kv_heads=2, head_dim=64, alibi=True)
    assert_close_enough(case_errors(case, torch.float32, "cuda"), torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_autocast_runs_in_the_autocast_dtype() -> None:
    case = Case("amp", batch=2, seq_len=300, heads=4, kv_heads=2, head_dim=64, alibi=True)
    inputs = make_inputs(case, torch.float32, "cuda")
    q, k, v = (inputs[n].requires_grad_(True) for n in ("q", "k", "v"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = triton_attention(q, k, v, alibi_slopes=inputs["slopes"])
    assert out.dtype == torch.bfloat16
    out.float().backward(inputs["grad"])
    assert q.grad is not None and q.grad.dtype == torch.float32
    ref = reference_attention(
        q.detach(), k.detach(), v.detach(), causal=True, slopes=inputs["slopes"], window=None,
        sequence_id=None, softmax_scale=None,
    )  # fmt: skip
    assert relative_error(out, ref) <= TOLERANCE[torch.bfloat16]


if __name__ == "__main__" and "--interpreter-child" in sys.argv:
    _interpreter_child()
elif __name__ == "__main__":
    print(json.dumps([asdict(c) for c in CASES], indent=1))
