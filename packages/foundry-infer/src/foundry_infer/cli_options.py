"""The ``foundry-infer`` command line's shared option groups (model, sampling, serve, bench).

``--dtype`` means the same everywhere: the weights' type (auto: bfloat16 for torch on CUDA,
float32 for torch on CPU; an ONNX export's own type, float32 or float16).
"""

from __future__ import annotations

import argparse
import os

__all__ = [
    "DTYPES",
    "add_bench_options",
    "add_dtype_option",
    "add_model_options",
    "add_sampling_options",
    "add_serve_options",
]

DTYPES = ["auto", "float32", "bfloat16", "float16"]


def add_dtype_option(p: argparse.ArgumentParser, text: str | None = None) -> None:
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help=text
        or "weights' type (auto: bfloat16 for torch on CUDA, float32 on CPU; an ONNX export's own)",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="HF model directory or ONNX directory")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: onnx for ONNX directories, torch otherwise",
    )
    p.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="torch device (cpu, cuda) for --backend torch",
    )
    p.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="ONNX Runtime provider; auto picks CUDA when onnxruntime-gpu has it",
    )
    add_dtype_option(p)
    add_engine_option(p)


def add_engine_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["auto", "static", "dynamic"],
        default="auto",
        help="torch path: static (slot KV cache, CUDA graphs on a GPU; MPT and Llama), dynamic "
        "(any architecture); auto: static on CUDA for MPT and Llama, else dynamic",
    )
    p.add_argument(
        "--compile-decode",
        action="store_true",
        help="with --engine static: decode layers through torch.compile, inside the CUDA graphs "
        "(off by default: it adds a compile of each batch size at start-up; on one H100 it "
        "took MPT-1B batch-1 decode from 512.7 to 618.8 tokens/s, see the README's GPU figures)",
    )


def add_sampling_options(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new,
        metavar="N",
        help=f"most tokens to generate (default: {max_new})",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="0 for greedy; default from generation_config.json (greedy if absent)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        metavar="P",
        help="nucleus sampling mass (default: generation_config.json's, else 1.0)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help="sample among the K likeliest tokens (default: generation_config.json's, else all)",
    )
    p.add_argument("--seed", type=int, default=None, metavar="N", help="random seed for sampling")


# serve's integer limits: flag, default, help
_SERVE_LIMITS: tuple[tuple[str, int | None, str], ...] = (
    (
        "--max-batch-size",
        None,
        "requests decoded together, the static engine's cache slots (default: 64 on CUDA, "
        "fewer where their cache would take over 60%% of the free GPU memory; 8 on CPU)",
    ),
    ("--max-queue", 64, "waiting requests before 429 (default: 64)"),
    (
        "--max-prompt-tokens",
        None,
        "longest prompt accepted (default: the model's context length minus one)",
    ),
    ("--max-new-tokens", 1024, "cap on a request's max_tokens (default: 1024)"),
    (
        "--max-model-len",
        None,
        "context length served: prompt plus new tokens (default: the model's positions)",
    ),
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TCP port: give a whole number from 1 to 65535"
        )
    return value


def add_serve_options(srv: argparse.ArgumentParser) -> None:
    """``serve``: the address, the API key and the batching limits."""
    srv.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="bind address (default: 127.0.0.1, loopback only)",
    )
    srv.add_argument(
        "--port", type=_port, default=8000, metavar="PORT", help="TCP port (default: 8000)"
    )
    srv.add_argument(
        "--served-model-name",
        "--model-name",
        dest="model_name",
        default=None,
        metavar="NAME",
        help="name clients use (default: MODEL's folder name); --model-name is an alias",
    )
    srv.add_argument(
        "--api-key",
        default=os.environ.get("FOUNDRY_INFER_API_KEY"),
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' (env FOUNDRY_INFER_API_KEY)",
    )
    for flag, default, text in _SERVE_LIMITS:
        srv.add_argument(flag, type=int, default=default, metavar="N", help=text)
    srv.add_argument(
        "--log-level",
        default="info",
        metavar="LEVEL",
        help="uvicorn log level: debug, info (default), warning, error",
    )


def add_bench_options(bench: argparse.ArgumentParser) -> None:
    """``bench``: the model, the backends and the sizes timed."""
    bench.add_argument("model", metavar="MODEL", help="HF model directory (or an ONNX directory)")
    bench.add_argument(
        "--backends",
        default=None,
        metavar="LIST",
        help="comma-separated, of torch, onnx, onnx-int8 (default: all three; onnx for an ONNX MODEL)",
    )
    bench.add_argument(
        "--batch-sizes",
        default="1,2,4,8",
        metavar="LIST",
        help="comma-separated batch sizes (default: 1,2,4,8)",
    )
    bench.add_argument(
        "--prompt-tokens", type=int, default=32, metavar="N", help="prompt length (default: 32)"
    )
    bench.add_argument(
        "--new-tokens", type=int, default=32, metavar="N", help="tokens generated (default: 32)"
    )
    bench.add_argument(
        "--onnx-dir", default=None, metavar="DIR", help="use this fp32 export instead of exporting"
    )
    bench.add_argument(
        "--int8-dir", default=None, metavar="DIR", help="use this int8 export instead of exporting"
    )
    bench.add_argument(
        "--json", default=None, metavar="FILE", help="also write the rows to this JSON file"
    )
    bench.add_argument(
        "--device", default="cpu", metavar="DEVICE", help="torch device (cpu, cuda) for torch"
    )
    bench.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda"],
        default="cpu",
        help="ONNX Runtime provider for onnx backends (default: cpu)",
    )
    add_dtype_option(bench)
    add_engine_option(bench)
    bench.add_argument(
        "--peak-bandwidth",
        type=float,
        default=None,
        metavar="B/S",
        help="memory bandwidth for batch 1's fraction of the limit (default: from the GPU's "
        "name, 4.8e12 for an H200, 3.35e12 for an H100 SXM)",
    )
