"""``bench``: time to first token, per-token latency and throughput against batch size.

Each back end (torch, ONNX Runtime, ONNX Runtime int8) generates ``new_tokens`` tokens for
``batch`` random prompts of ``prompt_tokens`` tokens, with end-of-sequence ignored so every run
does the same work. One untimed warm-up run precedes each measurement (on CUDA it also
captures the static engine's CUDA graphs). At batch 1 a torch row also reports the fraction of
the memory-bandwidth limit reached: weight bytes read per decode step / time per step, against
``peak_bandwidth`` (bytes/s; by default from the GPU's name, see :func:`peak_bandwidth_for`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .engines import Engine, OrtEngine, load_engine
from .errors import FoundryError
from .generation import SequenceState, new_decode_batch
from .model_dir import detect_model_kind
from .onnx_export import export_onnx

__all__ = [
    "BenchOptions",
    "BenchRow",
    "bench_engine",
    "format_table",
    "peak_bandwidth_for",
    "run_bench",
]

BACKENDS = ("torch", "onnx", "onnx-int8")
# Peak memory bandwidth (bytes/s) by GPU name, checked in order; the first match wins.
PEAK_BANDWIDTH = (("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12))


def peak_bandwidth_for(device_name: str) -> tuple[float, str] | None:
    """(bytes/s, which card it is for) for a GPU name like 'NVIDIA H200', or None."""
    for key, peak in PEAK_BANDWIDTH:
        if key in device_name:
            return peak, key + (" SXM" if key == "H100" else "")
    return None


@dataclass(frozen=True)
class BenchOptions:
    """Where and how the torch and ONNX Runtime engines run."""

    device: str = "cpu"
    provider: str = "cpu"
    dtype: str = "auto"
    engine: str = "auto"
    peak_bandwidth: float | None = None  # bytes/s
    compile_decode: bool = False  # the static engine's torch.compile'd decode layers


@dataclass(frozen=True)
class BenchRow:
    backend: str
    batch: int
    ttft_ms: float  # until every sequence of the batch has its first token
    per_token_ms: float  # one decode step (all sequences advance one token)
    tokens_per_s: float  # generated tokens / total time, whole batch
    bandwidth_fraction: float | None = None  # batch 1: weight bytes per step / time / peak

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_engine(
    engine: Engine,
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    seed: int = 0,
    peak_bandwidth: float | None = None,
) -> BenchRow:
    """Measure one engine at one batch size (after one warm-up run)."""
    rng = np.random.default_rng(seed)
    vocab = engine.layout.vocab_size
    prompts = [rng.integers(0, vocab, prompt_tokens).tolist() for _ in range(batch)]
    _run(engine, prompts, new_tokens)  # warm-up
    ttft, steps, total = _run(engine, prompts, new_tokens)
    per_step = float(np.median(steps)) if steps else float("nan")
    weights = getattr(engine, "weight_bytes_per_token", None)
    fraction = None
    if batch == 1 and peak_bandwidth and callable(weights) and steps:
        fraction = float(weights()) / per_step / peak_bandwidth
    return BenchRow(
        backend=engine.name,
        batch=batch,
        ttft_ms=ttft * 1e3,
        per_token_ms=float(np.mean(steps)) * 1e3 if steps else float("nan"),
        tokens_per_s=batch * new_tokens / total,
        bandwidth_fraction=fraction,
    )


def _run(
    engine: Engine, prompts: list[list[int]], new_tokens: int
) -> tuple[float, list[float], float]:
    decode = new_decode_batch(engine)
    seqs = [SequenceState(prompt, new_tokens) for prompt in prompts]
    together = getattr(decode, "prefill_many", None)  # the static engine prefills in one forward
    start = time.perf_counter()
    if together is not None:
        together(seqs)
    else:
        for seq in seqs:
            decode.prefill(seq)
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
    options: BenchOptions | None = None,
) -> list[BenchRow]:
    """Benchmark the HF directory ``model_dir`` on each back end (exporting ONNX when needed)."""
    options = options or BenchOptions()
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="foundry-infer-bench-") as tmp:
        for backend in backends:
            engine = _open(
                backend, Path(model_dir), onnx_dir, int8_dir, Path(tmp), options, max(batch_sizes)
            )
            for batch in batch_sizes:
                row = bench_engine(
                    engine, batch, prompt_tokens, new_tokens, peak_bandwidth=options.peak_bandwidth
                )
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
    options: BenchOptions,
    largest_batch: int,
) -> Engine:
    if backend == "torch":
        return load_engine(
            model_dir,
            "torch",
            device=options.device,
            dtype=options.dtype,
            engine=options.engine,  # type: ignore[arg-type]
            max_batch_size=largest_batch,
            compile_decode=options.compile_decode,
        )
    int8 = backend == "onnx-int8"
    given = int8_dir if int8 else onnx_dir
    if given is None:
        if detect_model_kind(model_dir) == "onnx":
            given = model_dir
        else:
            given = tmp / backend
            half = options.dtype == "float16" and not int8
            export_onnx(model_dir, given, int8=int8, dtype="float16" if half else "float32")
    if options.provider not in ("auto", "cpu", "cuda"):
        raise FoundryError(f"unknown provider {options.provider!r}. Choose auto, cpu or cuda.")
    return OrtEngine(given, provider=options.provider)  # type: ignore[arg-type]


def format_table(rows: Sequence[BenchRow]) -> str:
    header = (
        f"{'backend':<32}{'batch':>6}{'TTFT ms':>10}{'ms/token':>10}{'tokens/s':>10}"
        f"{'of peak BW':>12}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        fraction = f"{r.bandwidth_fraction:.0%}" if r.bandwidth_fraction is not None else "-"
        lines.append(
            f"{r.backend:<32}{r.batch:>6}{r.ttft_ms:>10.1f}{r.per_token_ms:>10.2f}"
            f"{r.tokens_per_s:>10.1f}{fraction:>12}"
        )
    return "\n".join(lines)
