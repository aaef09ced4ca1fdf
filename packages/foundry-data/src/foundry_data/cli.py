"""The ``foundry-data`` command line: convert, convert-finetuning, train-tokenizer, inspect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from foundry_data.cli_options import (
    CONVERT_EXAMPLES,
    FINETUNING_EXAMPLES,
    INSPECT_EXAMPLES,
    TOKENIZER_EXAMPLES,
    add_convert_args,
    add_finetuning_args,
    add_inspect_args,
    add_tokenizer_args,
)
from foundry_data.errors import ConversionInterrupted, FoundryError, user_error_message

__all__ = ["build_parser", "main"]


def _root_parser() -> argparse.ArgumentParser:
    from foundry_data import __version__

    parser = argparse.ArgumentParser(
        prog="foundry-data",
        description="Turn raw text into streaming (MDS) datasets for language-model training.",
        epilog="Run `foundry-data COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"foundry-data {__version__}",
        help="print the package name and version, then exit",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _root_parser()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "convert",
        help="text -> pretraining MDS (fixed-length token samples)",
        description="Tokenize documents and pack them into samples of exactly "
        "--concat-tokens tokens (column 'tokens', int32), as llm-foundry does.",
        epilog=CONVERT_EXAMPLES,
        formatter_class=fmt,
    )
    add_convert_args(p)
    p.set_defaults(run=_run_convert)

    p = sub.add_parser(
        "convert-finetuning",
        help="prompt/response or chat records -> fine-tuning MDS",
        description="Tokenize prompt/response and chat (messages) records into "
        "llm-foundry's fine-tuning layout (column 'turns'), prompt and response kept "
        "apart so training masks the prompt.",
        epilog=FINETUNING_EXAMPLES,
        formatter_class=fmt,
    )
    add_finetuning_args(p)
    p.set_defaults(run=_run_convert_finetuning)

    p = sub.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer",
        description="Train a byte-level BPE tokenizer with the `tokenizers` library "
        "and save a directory that transformers.AutoTokenizer loads (EOS/BOS "
        "<|endoftext|>, pad <|pad|>, ChatML chat template).",
        epilog=TOKENIZER_EXAMPLES,
        formatter_class=fmt,
    )
    add_tokenizer_args(p)
    p.set_defaults(run=_run_train_tokenizer)

    p = sub.add_parser(
        "inspect",
        help="show a dataset's manifest, counts and a decoded sample",
        description="Show a dataset's manifest (tokenizer, sequence length, source), its sample "
        "and token counts, and one sample decoded to text.",
        epilog=INSPECT_EXAMPLES,
        formatter_class=fmt,
    )
    add_inspect_args(p)
    p.set_defaults(run=_run_inspect)
    return parser


def _conversion_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The options of :func:`_add_conversion_args`, as conversion-options keywords."""
    from foundry_data.mds_options import parse_compression, parse_hashes, parse_shard_size

    return {
        "source": args.source,
        "out": args.out,
        "tokenizer": args.tokenizer,
        "compression": parse_compression(args.compression),
        "hashes": parse_hashes(args.hashes),
        "shard_size": parse_shard_size(args.shard_size),
        "overwrite": args.overwrite,
        "local": args.local,
        "reader": args.reader,
        "subset": args.subset,
        "split": args.split,
        "progress": args.progress,
        "resume": args.resume,
    }


def _run_convert(args: argparse.Namespace) -> None:
    from foundry_data.pretraining import PretrainingOptions, convert_pretraining

    if args.workers < 0:
        raise FoundryError(f"--workers must be 0 (all cores) or more, not {args.workers}.")
    report = convert_pretraining(
        PretrainingOptions(
            seq_len=args.concat_tokens,
            text_column=args.text_column,
            bos_text=args.bos_text,
            eos_text=args.eos_text,
            wrap=not args.no_wrap,
            workers=args.workers,
            txt_unit=args.txt_unit,
            **_conversion_kwargs(args),  # type: ignore[arg-type]
        )
    )
    print(report.summary())


def _run_convert_finetuning(args: argparse.Namespace) -> None:
    from foundry_data.finetuning import FinetuningOptions, convert_finetuning

    report = convert_finetuning(
        FinetuningOptions(
            max_seq_len=args.max_seq_len,
            overlong=args.overlong,
            prompt_column=args.prompt_column,
            response_column=args.response_column,
            messages_column=args.messages_column,
            chat_template=args.chat_template,
            **_conversion_kwargs(args),  # type: ignore[arg-type]
        )
    )
    print(report.summary())


def _run_train_tokenizer(args: argparse.Namespace) -> None:
    from foundry_data.records import unit_texts
    from foundry_data.sources import iter_units, resolve_source
    from foundry_data.tokenizer_training import CHATML_TEMPLATE, train_bpe_tokenizer

    source = resolve_source(args.source, reader=args.reader, subset=args.subset, split=args.split)
    texts = (
        text
        for unit, _ in iter_units(source, text_column=args.text_column, txt_unit=args.txt_unit)
        for text in unit_texts(unit, args.text_column)
    )
    result = train_bpe_tokenizer(
        texts,
        Path(args.out),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        chat_template=None if args.no_chat_template else CHATML_TEMPLATE,
        overwrite=args.overwrite,
        show_progress=args.progress,
    )
    print(
        f"trained a byte-level BPE tokenizer with {result.vocab_size:,} tokens on "
        f"{result.num_documents:,} documents ({result.num_bytes:,} bytes) -> {result.out}"
    )


def _run_inspect(args: argparse.Namespace) -> None:
    from foundry_data.inspection import inspect_dataset

    print(
        inspect_dataset(
            args.dataset,
            sample_index=args.sample,
            max_chars=args.max_chars,
            tokenizer=args.tokenizer,
            as_json=args.json,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``foundry-data``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ConversionInterrupted as exc:
        print(exc.message, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was published; run the command again to redo it.", file=sys.stderr
        )
        return 130
    except Exception as exc:  # any Foundry package's user error, or a bad path: no traceback
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
