"""ONNX Runtime's GPU-serving paths that run on CPU too: IO binding and the float16 export."""

from __future__ import annotations

import numpy as np
import pytest
from foundry_infer import DecodeBatch, OrtEngine, SequenceState, TorchEngine, generate_tokens
from foundry_infer.cli import main
from foundry_infer.sampling import SamplingParams

PROMPTS = ["def export_onnx(", "class Scheduler:", "import numpy"]


def _run_joining(engine, tokenizer) -> dict[int, list[int]]:
    """Three sequences, the later ones joining mid-decode (the cache is reshaped each time)."""
    seqs = [
        SequenceState(tokenizer(p).input_ids, n, SamplingParams(ignore_eos=True))
        for p, n in zip(PROMPTS, (12, 5, 8), strict=True)
    ]
    batch = DecodeBatch(engine)
    got: dict[int, list[int]] = {i: [] for i in range(3)}
    for step in range(16):
        if step in (0, 2, 4):
            i = step // 2
            got[i].append(batch.prefill(seqs[i]))
        for seq, token in batch.step():
            got[seqs.index(seq)].append(token)
    return got


def test_io_binding_gives_the_plain_paths_tokens(llama_onnx_dir, tokenizer):
    plain = OrtEngine(llama_onnx_dir, provider="cpu")
    bound = OrtEngine(llama_onnx_dir, provider="cpu", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    ids = tokenizer(PROMPTS[0]).input_ids
    assert list(generate_tokens(bound, SequenceState(ids, 16))) == list(
        generate_tokens(plain, SequenceState(ids, 16))
    )
    # the cache comes back as device values (OrtValues), not numpy arrays
    _, past = bound.step(
        np.asarray([ids]),
        np.ones((1, len(ids)), np.int64),
        np.arange(len(ids))[None],
        bound.empty_past(1),
    )
    assert not isinstance(past[0], np.ndarray) and past[0].shape()[2] == len(ids)
    assert _run_joining(bound, tokenizer) == _run_joining(plain, tokenizer)


def _teacher_forced_top1(engine, reference, ids: list[int]) -> float:
    """Feed the same tokens to both; the share of steps whose top-1 next token agrees."""
    agree = []
    pasts = [engine.empty_past(1), reference.empty_past(1)]
    for t, token in enumerate(ids):
        step = (np.asarray([[token]]), np.ones((1, t + 1), np.int64), np.asarray([[t]]))
        tops = []
        for k, e in enumerate((engine, reference)):
            logits, pasts[k] = e.step(*step, pasts[k])
            tops.append(int(np.argmax(logits[0])))
        agree.append(tops[0] == tops[1])
    return float(np.mean(agree))


def test_float16_export_runs_and_agrees_with_torch(
    trained_llama_dir, tmp_path, tokenizer, corpus, capsys
):
    out = tmp_path / "fp16"
    assert main(["export-onnx", str(trained_llama_dir), str(out), "--dtype", "float16"]) == 0
    assert "fp16 graph" in capsys.readouterr().out
    half = OrtEngine(out, provider="cpu", io_binding=True)
    assert half.name == "onnxruntime-fp16-cpu" and half.manifest.dtype == "float16"
    ids = tokenizer(corpus[:400]).input_ids[:48]
    agreement = _teacher_forced_top1(half, TorchEngine(trained_llama_dir), ids)
    assert agreement >= 0.95, agreement
    assert main(["generate", str(out), "--prompt", "x", "--dtype", "float32"]) == 2
    assert "an ONNX export in float16" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--dtype", "bfloat16"], "float32 or float16"), (["--int8", "--dtype", "float16"], "--int8")],
)
def test_export_refuses_dtypes_onnx_cannot_take(
    trained_llama_dir, tmp_path, capsys, flags, message
):
    assert main(["export-onnx", str(trained_llama_dir), str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
