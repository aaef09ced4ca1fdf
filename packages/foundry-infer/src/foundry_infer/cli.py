"""The ``foundry-infer`` command line: generate, chat, export-onnx, serve, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_options import (
    add_bench_options,
    add_dtype_option,
    add_model_options,
    add_sampling_options,
    add_serve_options,
)
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
    add_model_options(gen)
    gen.add_argument("--prompt", required=True, help="prompt text, or - to read it from stdin")
    add_sampling_options(gen, 128)

    chat = command(
        "chat",
        "Interactive chat with the tokenizer's chat template (/exit, /reset).",
        "foundry-infer chat ./model --system 'You are terse.'",
    )
    add_model_options(chat)
    chat.add_argument("--system", default=None, help="system message")
    add_sampling_options(chat, 256)

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
    add_dtype_option(exp, "graph's type: float32 (auto) or float16 (for ONNX Runtime on CUDA)")

    srv = command(
        "serve",
        "Serve an OpenAI-compatible HTTP API (completions, chat, streaming).",
        "foundry-infer serve ./model-onnx --port 8000 --api-key secret",
    )
    add_model_options(srv)
    add_serve_options(srv)

    bench = command(
        "bench",
        "Time to first token, per-token latency, throughput vs batch size.",
        "foundry-infer bench ./model --batch-sizes 1,2,4,8 --json bench.json",
    )
    add_bench_options(bench)
    return parser


def _sampling(args: argparse.Namespace, defaults: GenerationDefaults) -> SamplingParams:
    """Command-line sampling options, falling back to the model's generation_config.json."""
    from .sampling import SamplingParams

    temperature = args.temperature
    note = ""
    if temperature is None:
        asked = [f"--{k.replace('_', '-')}" for k in ("top_p", "top_k", "seed")
                 if getattr(args, k, None) is not None]  # fmt: skip
        if defaults.do_sample or asked:
            # sampling options without --temperature ask for sampling: the model's temperature
            temperature = defaults.temperature
            if asked and not defaults.do_sample:
                note = (f"sampling at temperature {temperature:g} (the model's default), since "
                        f"{', '.join(asked)} was given; --temperature 0 decodes greedily")  # fmt: skip
        else:
            temperature = 0.0
    params = SamplingParams(
        temperature=temperature,
        top_p=args.top_p if args.top_p is not None else defaults.top_p,
        top_k=args.top_k if args.top_k is not None else defaults.top_k,
        seed=args.seed,
    )
    if note:  # once the options are known to be valid
        print(note, file=sys.stderr)
    return params


def _open(args: argparse.Namespace) -> tuple[Engine, Any, GenerationDefaults]:
    from .engines import load_engine
    from .model_dir import load_tokenizer, read_generation_defaults

    engine = load_engine(
        args.model,
        args.backend,
        device=args.device,
        provider=args.provider,
        dtype=args.dtype,
        engine=args.engine,
        max_batch_size=1,
        compile_decode=args.compile_decode,
    )
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
        args.model_dir,
        args.out,
        int8=args.int8,
        overwrite=args.overwrite,
        opset=args.opset,
        dtype=args.dtype,
    )
    print(f"exported {args.model_dir} -> {report.out_dir} ({report.onnx_bytes / 1e6:.1f} MB)")
    kind = "fp16" if args.dtype == "float16" else "fp32"
    print(f"max abs diff vs torch ({kind} graph): {report.max_abs_diff:.3g}")
    if report.int8_max_abs_diff is not None:
        print(
            f"max abs diff vs torch (int8 graph): {report.int8_max_abs_diff:.3g}; "
            f"top-1 agreement on the check batch: {report.int8_top1_agreement:.0%}"
        )


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serving import run_server

    run_server(args)


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import BACKENDS, BenchOptions, format_table, run_bench
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
    options = BenchOptions(
        args.device,
        args.provider,
        args.dtype,
        args.engine,
        _peak_bandwidth(args),
        compile_decode=args.compile_decode,
    )
    rows = run_bench(
        args.model,
        options=options,
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


def _peak_bandwidth(args: argparse.Namespace) -> float | None:
    """--peak-bandwidth, else the GPU's from its name; says on stderr which it uses."""
    from .bench import peak_bandwidth_for

    if args.peak_bandwidth is not None:
        print(f"peak bandwidth {args.peak_bandwidth:.3g} B/s (--peak-bandwidth)", file=sys.stderr)
        return float(args.peak_bandwidth)
    if not str(args.device).startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(torch.device(args.device))
    found = peak_bandwidth_for(name)
    if found is None:
        print(f"no peak bandwidth known for {name!r}; pass --peak-bandwidth", file=sys.stderr)
        return None
    print(f"peak bandwidth {found[0]:.3g} B/s ({found[1]}, from {name!r})", file=sys.stderr)
    return found[0]


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
