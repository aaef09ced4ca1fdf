"""``bench``: time to first token, per-token latency and throughput against batch size.

Each back end (torch, ONNX Runtime, ONNX Runtime int8) generates ``new_tokens`` tokens for
``batch`` random prompts of ``prompt_tokens`` tokens, with end-of-sequence ignored so every run
does the same work. One untimed warm-up run precedes each measurement.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .engines import Engine, OrtEngine, TorchEngine
from .generation import SequenceState, new_decode_batch
from .model_dir import detect_model_kind
from .onnx_export import export_onnx

__all__ = ["BenchRow", "bench_engine", "format_table", "run_bench"]

BACKENDS = ("torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class BenchRow:
    backend: str
    batch: int
    ttft_ms: float  # until every sequence of the batch has its first token
    per_token_ms: float  # one decode step (all sequences advance one token)
    tokens_per_s: float  # generated tokens / total time, whole batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_engine(
    engine: Engine, batch: int, prompt_tokens: int, new_tokens: int, seed: int = 0
) -> BenchRow:
    """Measure one engine at one batch size (after one warm-up run)."""
    rng = np.random.default_rng(seed)
    vocab = engine.layout.vocab_size
    prompts = [rng.integers(0, vocab, prompt_tokens).tolist() for _ in range(batch)]
    _run(engine, prompts, new_tokens)  # warm-up
    ttft, steps, total = _run(engine, prompts, new_tokens)
    return BenchRow(
        backend=engine.name,
        batch=batch,
        ttft_ms=ttft * 1e3,
        per_token_ms=float(np.mean(steps)) * 1e3 if steps else float("nan"),
        tokens_per_s=batch * new_tokens / total,
    )


def _run(
    engine: Engine, prompts: list[list[int]], new_tokens: int
) -> tuple[float, list[float], float]:
    decode = new_decode_batch(engine)
    start = time.perf_counter()
    for prompt in prompts:
        decode.prefill(SequenceState(prompt, new_tokens))
    ttft = time.perf_counter() - start
    steps = []
    while len(decode):
        t0 = time.perf_counter()
        decode.step()
        steps.append(time.perf_counter() - t0)
    return ttft, steps, time.perf_counter() - start


def run_bench(
    model_dir: str | Path,
    *,
    backends: Sequence[str] = BACKENDS,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    prompt_tokens: int = 32,
    new_tokens: int = 32,
    onnx_dir: str | Path | None = None,
    int8_dir: str | Path | None = None,
    report: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Benchmark the HF directory ``model_dir`` on each back end (exporting ONNX when needed)."""
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="foundry-infer-bench-") as tmp:
        for backend in backends:
            engine = _open(backend, Path(model_dir), onnx_dir, int8_dir, Path(tmp))
            for batch in batch_sizes:
                row = bench_engine(engine, batch, prompt_tokens, new_tokens)
                rows.append(row)
                if report is not None:
                    report(row)
            del engine
    return rows


def _open(
    backend: str,
    model_dir: Path,
    onnx_dir: str | Path | None,
    int8_dir: str | Path | None,
    tmp: Path,
) -> Engine:
    if backend == "torch":
        return TorchEngine(model_dir)
    int8 = backend == "onnx-int8"
    given = int8_dir if int8 else onnx_dir
    if given is None:
        if detect_model_kind(model_dir) == "onnx":
            given = model_dir
        else:
            given = tmp / backend
            export_onnx(model_dir, given, int8=int8)
    return OrtEngine(given, provider="cpu")


def format_table(rows: Sequence[BenchRow]) -> str:
    header = f"{'backend':<22}{'batch':>6}{'TTFT ms':>10}{'ms/token':>10}{'tokens/s':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.backend:<22}{r.batch:>6}{r.ttft_ms:>10.1f}{r.per_token_ms:>10.2f}"
            f"{r.tokens_per_s:>10.1f}"
        )
    return "\n".join(lines)
