"""The static engine's Triton decode attention (``FOUNDRY_DECODE_ATTENTION=triton``) on CPU.

Everything that runs the kernel does so in ONE child process started with ``TRITON_INTERPRET=1``
(the variable must be set before triton is imported, and setting it here would leak into other
tests): the kernel against an SDPA reference (GQA with a group that is not a power of two, ALiBi,
a cache that is a view, a position 0, several key blocks), then per model (MPT with ALiBi, the
Llama with grouped-query attention) the static engine's fp32 greedy tokens with SDPA and with the
kernel, alone, with sequences joining and leaving, and with ``compile_decode`` (MPT). The child
prints one JSON line; the tests below assert on it. The refusals run here, in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from foundry_infer.decode_attention import ATTENTION_VARIABLE  # noqa: E402
from foundry_infer.errors import FoundryError  # noqa: E402
from foundry_infer.slot_engine import SlotEngine  # noqa: E402

SUPPORT = Path(__file__).resolve().parents[3] / "tests" / "support"
PROMPTS = ["def export_onnx(", "class Scheduler:", "import numpy", "    return"]
LENGTHS = [24, 6, 14, 9]
# (batch, heads, kv heads, head dim, ALiBi, cache positions): group 3 pads to 4; positions span
# several key blocks (128 positions a block for a group of 1, 32 for a group of 4)
KERNEL_CASES = [(3, 4, 4, 16, True, 300), (2, 8, 2, 32, False, 100), (2, 6, 2, 16, False, 40)]


def _reference(q, new_kv, positions, cache, scale, slopes):
    """SDPA over the cache after an index_put of the new keys and values (fp32)."""
    b, h, _, d = q.shape
    kv_heads, length = cache.shape[2], cache.shape[3]
    cache = cache.clone()
    cache[:, torch.arange(b)[:, None], :, positions] = new_kv
    distance = torch.arange(length)[None, None, :] - positions[:, :, None]  # (B, 1, L)
    visible = (distance <= 0)[:, None]
    bias = 0.0 if slopes is None else slopes * distance[:, None].float()
    mask = torch.where(visible, bias, float("-inf"))
    group = h // kv_heads
    keys, values = (cache[i].repeat_interleave(group, 1) for i in (0, 1))
    out = torch.nn.functional.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2).reshape(b, 1, h * d), cache


def _kernel_errors() -> list[dict]:
    from foundry_infer.decode_attention import decode_attention

    torch.manual_seed(0)
    errors = []
    for b, h, kv_heads, d, alibi, length in KERNEL_CASES:
        q = torch.randn(b, h, 1, d)
        new_kv = torch.randn(b, 1, 2, kv_heads, d)
        positions = torch.tensor([[0]] + [[length - 1 - 23 * (i - 1)] for i in range(1, b)])
        cache = torch.randn(2, b + 1, kv_heads, length, d)[:, 1:]  # a view, as the engine's
        slopes = torch.rand(1, h, 1, 1) * 0.5 if alibi else None
        want, want_cache = _reference(q, new_kv, positions, cache, 0.3, slopes)
        got = decode_attention(q, new_kv, positions, cache, 0.3, slopes)
        errors.append(
            {
                "case": [b, h, kv_heads, d, alibi, length],
                "out": (got - want).abs().max().item(),
                "cache": (cache - want_cache).abs().max().item(),
            }
        )
    return errors


def _engine_tokens(path: str, choice: str, compile_decode: bool = False) -> dict:
    from foundry_infer import SequenceState, generate_tokens
    from foundry_infer.sampling import SamplingParams
    from joining import run_joining
    from transformers import AutoTokenizer

    os.environ[ATTENTION_VARIABLE] = choice
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = SlotEngine(path, max_batch_size=4, compile_decode=compile_decode)
    params = SamplingParams(ignore_eos=True)
    ids = [tokenizer(p).input_ids for p in PROMPTS]
    alone = [list(generate_tokens(engine, SequenceState(ids[0], 24, params)))]
    if compile_decode:
        return {"name": engine.name, "alone": alone}
    seqs = [SequenceState(i, n, params) for i, n in zip(ids, LENGTHS, strict=True)]
    batch = engine.new_batch()
    together = run_joining(batch, seqs, {0: [0, 1], 3: [2], 5: [3]}, 30)
    return {"name": engine.name, "alone": alone, "together": together}


def _interpreter_child(llama: str, mpt: str) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(SUPPORT))
    results: dict = {"kernel": _kernel_errors()}
    for model, path in (("llama", llama), ("mpt", mpt)):
        results[model] = {choice: _engine_tokens(path, choice) for choice in ("sdpa", "triton")}
    results["mpt-compiled"] = {c: _engine_tokens(mpt, c, True) for c in ("sdpa", "triton")}
    print("RESULTS " + json.dumps(results))


@pytest.fixture(scope="module")
def child(trained_llama_dir, mpt_dir) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    argv = [sys.executable, __file__, "--interpreter-child", str(trained_llama_dir), str(mpt_dir)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"interpreter child failed:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULTS ") :])


def test_kernel_matches_sdpa_after_an_index_put(child):
    for row in child["kernel"]:
        assert row["out"] < 1e-5 and row["cache"] == 0.0, row


@pytest.mark.parametrize("model", ["llama", "mpt", "mpt-compiled"])
def test_engine_gives_the_sdpa_greedy_tokens(child, model):
    sdpa, triton = child[model]["sdpa"], child[model]["triton"]
    assert triton["name"].endswith("-triton-attention") and "triton" not in sdpa["name"]
    assert len(sdpa["alone"][0]) == 24
    assert triton["alone"] == sdpa["alone"]
    assert triton.get("together") == sdpa.get("together")


def test_a_bad_or_impossible_choice_is_refused_when_the_engine_starts(
    trained_llama_dir, monkeypatch
):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(ATTENTION_VARIABLE, "flash")
    with pytest.raises(FoundryError, match="FOUNDRY_DECODE_ATTENTION='flash' is not a decode"):
        SlotEngine(trained_llama_dir, max_batch_size=2)
    monkeypatch.setenv(ATTENTION_VARIABLE, "triton")
    with pytest.raises(FoundryError, match="needs a CUDA device, and this engine runs on cpu"):
        SlotEngine(trained_llama_dir, max_batch_size=2)
    monkeypatch.setenv(ATTENTION_VARIABLE, "sdpa")
    assert SlotEngine(trained_llama_dir, max_batch_size=2).name == "torch-static-cpu"


if __name__ == "__main__" and sys.argv[1:2] == ["--interpreter-child"]:
    _interpreter_child(sys.argv[2], sys.argv[3])
