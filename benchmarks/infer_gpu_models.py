"""Models and baselines of benchmarks/infer_gpu.py: 1B-class random-weight MPT and Llama.

The MPT is foundry's ``1b`` preset (foundry_models.MPTForCausalLM, random init) written as an HF
directory by ``foundry_models.export_hf``, the function behind ``foundry-train export-hf``'s
conversion (``to_native_state_dict``); the Llama is a transformers LlamaForCausalLM of about the
same size (24 layers, width 2048, 16 heads with 4 key/value heads, SwiGLU 5632). ``--tiny``
builds the ``debug`` preset and a 2-layer Llama instead, for a CPU smoke run. No hub access.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infer_common import _tokenizer

LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    vocab_size=50368,
)
LLAMA_TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    vocab_size=4096,
)


def build_models(work_dir: Path, tiny: bool, device: str) -> dict[str, Path]:
    """{"mpt": dir, "llama": dir}: bf16 HF directories, built once into ``work_dir``."""
    import torch

    root = work_dir / ("tiny" if tiny else "1b")
    dirs = {"mpt": root / "mpt", "llama": root / "llama"}
    if all(d.exists() for d in dirs.values()):
        return dirs
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    build = torch.device(device)
    dtype = torch.float32 if tiny else torch.bfloat16
    if not dirs["mpt"].exists():
        _build_mpt(dirs["mpt"], tokenizer, tiny, build, dtype)
    if not dirs["llama"].exists():
        _build_llama(dirs["llama"], tokenizer, tiny, build, dtype)
    return dirs


def _build_mpt(out: Path, tokenizer: Any, tiny: bool, device: Any, dtype: Any) -> None:
    import foundry_models
    import torch

    start = time.perf_counter()
    config = foundry_models.preset_config("debug" if tiny else "1b", vocab_size=50368)
    if tiny:
        config = foundry_models.preset_config("debug", vocab_size=4096, max_seq_len=256)
    torch.manual_seed(0)
    with device:
        model = foundry_models.MPTForCausalLM(config).eval()
    foundry_models.export_hf(model, out, tokenizer, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"MPT {params / 1e9:.2f}B -> {out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr
    )
    del model


def _build_llama(out: Path, tokenizer: Any, tiny: bool, device: Any, dtype: Any) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        **(LLAMA_TINY if tiny else LLAMA_1B),
        tie_word_embeddings=False,
        eos_token_id=eos,
        bos_token_id=eos,
    )
    torch.manual_seed(1)
    with device:
        model = LlamaForCausalLM(config).to(dtype).eval()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Llama {params / 1e9:.2f}B -> {out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr
    )
    del model


def decode_rate(stamps: list[float]) -> float:
    """Decode tokens/s from the times each token arrived: (n - 1) / (last - first)."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def hf_generate_rate(
    model: Any, prompt: list[int], new_tokens: int, warmup_tokens: int = 8, **gen: Any
) -> float:
    """transformers ``generate`` (greedy, exactly ``new_tokens``), decode tokens/s."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([prompt], device=model.device)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, **gen)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (compiles and records CUDA graphs, for the static cache)
            model.generate(
                ids, max_new_tokens=warmup_tokens, min_new_tokens=warmup_tokens, **kwargs
            )
        clock = Clock()
        model.generate(
            ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=clock, **kwargs
        )
    return decode_rate(clock.times[1:])  # times[0] is the prompt being "put"


def compiled_static_rate(
    hf_dir: Path,
    device: str,
    prompt: list[int],
    new_tokens: int,
    dtype: str = "bfloat16",
    compile_config: Any = None,
) -> tuple[float | str, str]:
    """transformers' documented fast path: ``generate(..., cache_implementation="static")``, which
    compiles the decoding forward itself (``get_compiled_call`` with the default ``CompileConfig``;
    prefill stays eager, so the static cache can mark its tensors as static addresses for CUDA
    graphs). Nothing is wrapped here, so nothing is compiled twice. transformers compiles only on
    cuda/xpu (and a few others): on a CPU this runs uncompiled and says so.

    Returns (decode tokens/s, how it compiled). The rate is a number only where compilation is
    seen: ``model._compiled_call`` exists after ``generate`` and dynamo counted new graphs; else
    it is a "not compiled" string, so an uncompiled run never lands in the compiled column.
    ``compile_config`` (a transformers ``CompileConfig``) replaces the default; with
    ``_compile_all_devices = True`` it compiles on a CPU too (what the tests use)."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    torch._dynamo.reset()  # our engine's or an earlier model's graphs must not count
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=getattr(torch, dtype))
    model = model.to(device).eval()
    if compile_config is not None:
        model.generation_config.compile_config = compile_config
    graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
    breaks = sum(counters["graph_break"].values())
    try:
        rate = hf_generate_rate(
            model, prompt, new_tokens, warmup_tokens=new_tokens, cache_implementation="static"
        )  # warm-up at the measured length: the same cache size, no recompile while timed
        graphs = counters["stats"]["unique_graphs"] - graphs
        skips = counters["inductor"]["cudagraph_skips"] - skips
        breaks = sum(counters["graph_break"].values()) - breaks
        has_call = getattr(model, "_compiled_call", None) is not None
        if not has_call or graphs == 0:
            seen = f"compiled call {'present' if has_call else 'absent'}, {graphs} dynamo graphs"
            return "not compiled (see hf_static_compile)", (
                f"none: no compilation seen on {model.device.type} ({seen} after generate);"
                " transformers auto-compiles on cuda/xpu only"
            )
        config = getattr(model, "_last_compile_config", None)  # set where generate compiled
        how = "explicit" if compile_config is not None else "auto"
        fields = ", ".join(
            f"{key}={getattr(config, key, '?')}"
            for key in ("mode", "fullgraph", "dynamic", "backend")
        )
        how += f" (transformers CompileConfig: {fields}); {graphs} dynamo graphs"
        how += f", {breaks} graph breaks, {skips} cudagraph skips"
        return rate, how
    finally:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def engine_rate(engine: Any, prompt: list[int], new_tokens: int) -> float:
    """Our engine, one request at a time, decode tokens/s measured like ``hf_generate_rate``."""
    from foundry_infer import SamplingParams, SequenceState, generate_tokens

    params = SamplingParams(ignore_eos=True)
    list(generate_tokens(engine, SequenceState(prompt, new_tokens, params)))  # warm-up, graphs
    stamps = []
    for _ in generate_tokens(engine, SequenceState(prompt, new_tokens, params)):
        stamps.append(time.perf_counter())
    return decode_rate(stamps)


@contextlib.contextmanager
def env_set(name: str, value: str) -> Iterator[None]:
    """Environment variable ``name`` set to ``value`` inside, restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def overlap_env(on: bool) -> contextlib.AbstractContextManager[None]:
    """``FOUNDRY_DECODE_OVERLAP`` set to 1 or 0 inside (its default is on for CUDA engines)."""
    from foundry_infer.slot_batch import OVERLAP_VARIABLE

    return env_set(OVERLAP_VARIABLE, "1" if on else "0")


def overlap_rate(engine: Any, prompt: list[int], new_tokens: int, on: bool = True) -> float:
    """:func:`engine_rate` with greedy steps queued one ahead (``on``) or one at a time."""
    with overlap_env(on):
        return engine_rate(engine, prompt, new_tokens)


def reference_run(model: Any, prompt: list[int], new_tokens: int) -> tuple[list[int], list[int]]:
    """Single-request eager path: greedy tokens, then the top-1 at each of their positions from
    one full forward over prompt + tokens (teacher forcing)."""
    import torch

    ids = torch.tensor([prompt], device=model.device)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        tokens = out[0, len(prompt) :].tolist()
        logits = model(out[:, :-1]).logits[0, len(prompt) - 1 :]
    return tokens, logits.argmax(-1).tolist()


def batched_top1(model: Any, prompts: list[list[int]], forced: list[list[int]]) -> list[list[int]]:
    """The control for bf16 noise: the same eager forward as :func:`reference_run`'s teacher
    forcing, but over every sequence in one batch (all have the same length, so no padding or
    mask differs): the top-1 at each decode position. Only the kernels' shapes change."""
    import torch

    ids = torch.tensor([p + f[:-1] for p, f in zip(prompts, forced, strict=True)])
    with torch.inference_mode():
        logits = model(ids.to(model.device)).logits[:, len(prompts[0]) - 1 :]
    return logits.argmax(-1).tolist()


def fp32_truth(
    hf_dir: Path, device: str, prompts: list[list[int]], forced: list[list[int]]
) -> tuple[list[list[int]], list[list[float]], list[list[float]]]:
    """The reference's own sequences (prompt + its greedy tokens) teacher-forced through the same
    weights loaded in float32, one forward per prompt: at each decode position the fp32 top-1,
    the top-1 minus top-2 logit gap, and one bf16 ulp at the top-1 logit's magnitude
    (2^(floor(log2|x|) - 7): bf16 keeps 8 significant bits). Frees the model before returning."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model = model.to(device).eval()
    tops, gaps, ulps = [], [], []
    with torch.inference_mode():
        for prompt, tokens in zip(prompts, forced, strict=True):
            ids = torch.tensor([prompt + tokens[:-1]], device=model.device)
            logits = model(ids).logits[0, len(prompt) - 1 :].float()
            best = logits.topk(2, dim=-1).values
            _, exponent = torch.frexp(best[:, 0])  # |x| = m * 2^e, m in [0.5, 1)
            tops.append(logits.argmax(-1).tolist())
            gaps.append((best[:, 0] - best[:, 1]).tolist())
            ulps.append(torch.ldexp(torch.ones_like(best[:, 0]), exponent - 8).tolist())
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return tops, gaps, ulps


def margin_stats(
    ours: list[list[int]], eager: list[list[int]], gaps: list[list[float]], ulps: list[list[float]]
) -> dict[str, Any]:
    """``eager_margin_median``: the median fp32 top-1 minus top-2 logit gap over all positions;
    ``agreement_where_margin_gt_ulp``: ours-vs-eager top-1 agreement over only the positions where
    that gap exceeds one bf16 ulp of the top-1 logit (elsewhere bf16 cannot tell the two apart, so
    a flip says nothing about the engine); ``positions_margin_gt_ulp``: the share of such ones."""
    import statistics

    flat = [
        (o, e, g, u)
        for row in zip(ours, eager, gaps, ulps, strict=True)
        for o, e, g, u in zip(*row, strict=True)
    ]
    clear = [o == e for o, e, g, u in flat if g > u]
    return {
        "eager_margin_median": statistics.median(g for _, _, g, _ in flat),
        "agreement_where_margin_gt_ulp": sum(clear) / len(clear) if clear else "n/a (none)",
        "positions_margin_gt_ulp": len(clear) / len(flat),
    }


def slot_engine_top1(
    engine: Any, prompts: list[list[int]], forced: list[list[int]]
) -> list[list[int]]:
    """Our engine on all prompts at once (prefill, then batched decode steps fed the reference
    tokens): its top-1 at each step."""
    tops: list[list[int]] = []
    for slot, prompt in enumerate(prompts):
        tops.append([int(engine.prefill(slot, prompt)[0].argmax())])
    positions = [len(p) for p in prompts]
    for t in range(len(forced[0]) - 1):
        logits = engine.decode([f[t] for f in forced], positions)
        for row, token in enumerate(logits.argmax(-1).tolist()):
            tops[row].append(token)
        positions = [p + 1 for p in positions]
    return tops


def greedy_tokens(engine: Any, prompt: list[int], new_tokens: int) -> list[int]:
    from foundry_infer import SamplingParams, SequenceState, generate_tokens

    seq = SequenceState(prompt, new_tokens, SamplingParams(ignore_eos=True))
    return list(generate_tokens(engine, seq))


def step_engine_top1(engine: Any, prompt: list[int], forced: list[int]) -> list[int]:
    """Any step engine (ONNX Runtime, torch dynamic) fed the prompt then ``forced``: top-1s."""
    import numpy as np

    ids = np.asarray([prompt])
    logits, past = engine.step(
        ids, np.ones_like(ids), np.arange(len(prompt))[None], engine.empty_past(1)
    )
    tops = [int(logits[0].argmax())]
    for t, token in enumerate(forced[:-1]):
        pos = len(prompt) + t
        logits, past = engine.step(
            np.asarray([[token]]), np.ones((1, pos + 1), np.int64), np.asarray([[pos]]), past
        )
        tops.append(int(logits[0].argmax()))
    return tops


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)
