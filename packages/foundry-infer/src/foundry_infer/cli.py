"""The ``foundry-infer`` command line: generate, chat, export-onnx, serve, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FoundryError, user_error_message
from .model_location import resolve_model_location

if TYPE_CHECKING:
    from .engines import Engine
    from .model_dir import GenerationDefaults
    from .sampling import SamplingParams

__all__ = ["build_parser", "main"]

_EPILOG = """examples:
  foundry-infer generate ./my-model --prompt "Once upon a time" --max-new-tokens 64
  foundry-infer chat ./my-model --temperature 0.7
  foundry-infer export-onnx ./my-model ./my-model-onnx --int8
  foundry-infer serve ./my-model-onnx --port 8000 --api-key "$KEY"
  foundry-infer bench ./my-model --batch-sizes 1,4,8
"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
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


def _add_sampling_options(p: argparse.ArgumentParser, max_new: int) -> None:
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


def _root_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="foundry-infer",
        description="Generate, chat, export to ONNX (with KV cache) and serve causal LMs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"foundry-infer {__version__}",
        help="print the package name and version, then exit",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _root_parser()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_[0].lower() + help_[1:].rstrip("."),
            description=help_,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    gen = command(
        "generate",
        "Complete a prompt, streaming tokens as they come.",
        'foundry-infer generate ./model --prompt "Hello" --max-new-tokens 32 --seed 1',
    )
    _add_model_options(gen)
    gen.add_argument("--prompt", required=True, help="prompt text, or - to read it from stdin")
    _add_sampling_options(gen, 128)

    chat = command(
        "chat",
        "Interactive chat with the tokenizer's chat template (/exit, /reset).",
        "foundry-infer chat ./model --system 'You are terse.'",
    )
    _add_model_options(chat)
    chat.add_argument("--system", default=None, help="system message")
    _add_sampling_options(chat, 256)

    exp = command(
        "export-onnx",
        "Export an HF causal LM to ONNX with a key/value cache.",
        "foundry-infer export-onnx ./model ./model-onnx --int8",
    )
    exp.add_argument("model_dir", metavar="MODEL_DIR", help="HF model directory")
    exp.add_argument("out", metavar="OUT", help="output directory (must not exist)")
    exp.add_argument("--int8", action="store_true", help="dynamic int8 weight quantisation (CPU)")
    exp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    exp.add_argument(
        "--opset", type=int, default=18, metavar="N", help="ONNX opset version (default: 18)"
    )

    srv = command(
        "serve",
        "Serve an OpenAI-compatible HTTP API (completions, chat, streaming).",
        "foundry-infer serve ./model-onnx --port 8000 --api-key secret",
    )
    _add_model_options(srv)
    _add_serve_options(srv)

    bench = command(
        "bench",
        "Time to first token, per-token latency, throughput vs batch size.",
        "foundry-infer bench ./model --batch-sizes 1,2,4,8 --json bench.json",
    )
    _add_bench_options(bench)
    return parser


# serve's integer limits: flag, default, help
_SERVE_LIMITS: tuple[tuple[str, int | None, str], ...] = (
    ("--max-batch-size", 8, "requests decoded together (default: 8)"),
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


def _add_serve_options(srv: argparse.ArgumentParser) -> None:
    """``serve``: the address, the API key and the batching limits."""
    srv.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="bind address (default: 127.0.0.1, loopback only)",
    )
    srv.add_argument(
        "--port", type=int, default=8000, metavar="PORT", help="TCP port (default: 8000)"
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
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="torch weights' type (auto: bfloat16 on CUDA, float32 on CPU); ONNX is float32",
    )
    srv.add_argument(
        "--log-level",
        default="info",
        metavar="LEVEL",
        help="uvicorn log level: debug, info (default), warning, error",
    )


def _add_bench_options(bench: argparse.ArgumentParser) -> None:
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


def _sampling(args: argparse.Namespace, defaults: GenerationDefaults) -> SamplingParams:
    """Command-line sampling options, falling back to the model's generation_config.json."""
    from .sampling import SamplingParams

    temperature = args.temperature
    if temperature is None:
        temperature = defaults.temperature if defaults.do_sample else 0.0
    return SamplingParams(
        temperature=temperature,
        top_p=args.top_p if args.top_p is not None else defaults.top_p,
        top_k=args.top_k if args.top_k is not None else defaults.top_k,
        seed=args.seed,
    )


def _open(args: argparse.Namespace) -> tuple[Engine, Any, GenerationDefaults]:
    from .engines import load_engine
    from .model_dir import load_tokenizer, read_generation_defaults

    engine = load_engine(args.model, args.backend, device=args.device, provider=args.provider)
    tokenizer = load_tokenizer(args.model)
    return engine, tokenizer, read_generation_defaults(args.model, tokenizer)


def _cmd_generate(args: argparse.Namespace) -> None:
    from .chat import stream_reply

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    engine, tokenizer, defaults = _open(args)
    ids = list(tokenizer(prompt).input_ids)

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    start = time.perf_counter()
    _, count = stream_reply(
        engine, tokenizer, ids, _sampling(args, defaults), args.max_new_tokens, defaults, write
    )
    elapsed = time.perf_counter() - start
    write("\n")
    print(f"[{engine.name}] {count} tokens generated in {elapsed:.2f} s", file=sys.stderr)


def _cmd_chat(args: argparse.Namespace) -> None:
    from .chat import chat_loop

    engine, tokenizer, defaults = _open(args)
    chat_loop(
        engine,
        tokenizer,
        defaults,
        _sampling(args, defaults),
        args.max_new_tokens,
        system=args.system,
    )


def _cmd_export(args: argparse.Namespace) -> None:
    from .onnx_export import export_onnx

    report = export_onnx(
        args.model_dir, args.out, int8=args.int8, overwrite=args.overwrite, opset=args.opset
    )
    print(f"exported {args.model_dir} -> {report.out_dir} ({report.onnx_bytes / 1e6:.1f} MB)")
    print(f"max abs diff vs torch (fp32 graph): {report.max_abs_diff:.3g}")
    if report.int8_max_abs_diff is not None:
        print(
            f"max abs diff vs torch (int8 graph): {report.int8_max_abs_diff:.3g}; "
            f"top-1 agreement on the check batch: {report.int8_top1_agreement:.0%}"
        )


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serving import run_server

    run_server(args)


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import BACKENDS, format_table, run_bench
    from .model_dir import detect_model_kind

    kind = detect_model_kind(args.model)
    backends = (
        args.backends.split(",")
        if args.backends
        else (list(BACKENDS) if kind == "hf" else ["onnx"])
    )
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise FoundryError(f"unknown backend(s) {unknown}. Choose from {', '.join(BACKENDS)}.")
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",")]
    except ValueError as exc:
        raise FoundryError(
            f"--batch-sizes must be integers like 1,2,4,8, got {args.batch_sizes!r}."
        ) from exc
    print(
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens per sequence",
        file=sys.stderr,
    )
    rows = run_bench(
        args.model,
        backends=backends,
        batch_sizes=sizes,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        onnx_dir=args.onnx_dir,
        int8_dir=args.int8_dir,
    )
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")


_COMMANDS = {
    "generate": _cmd_generate,
    "chat": _cmd_chat,
    "export-onnx": _cmd_export,
    "serve": _cmd_serve,
    "bench": _cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if isinstance(getattr(args, "model", None), str):  # a directory or a hub id
            args.model = resolve_model_location(args.model)
        _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except Exception as exc:  # any Foundry package's user error, or a bad path: no traceback
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
