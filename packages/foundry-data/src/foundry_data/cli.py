"""The ``foundry-data`` command line: convert, convert-finetuning, train-tokenizer, inspect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from foundry_data.errors import ConversionInterrupted, FoundryError, user_error_message

__all__ = ["build_parser", "main"]

_CONVERT_EXAMPLES = """\
examples:
  # a folder of .jsonl files, 2048-token samples, the tokenizer's EOS between documents
  foundry-data convert data/raw/ data/mds/ --tokenizer my-tokenizer/ --concat-tokens 2048

  # a glob of parquet files whose text is in column 'content', to an S3 bucket
  S3_ENDPOINT_URL=http://127.0.0.1:8333 foundry-data convert 'shards/*.parquet' \\
      s3://bucket/pretrain --tokenizer gpt2 --concat-tokens 2048 --text-column content

  # a Hugging Face dataset, read in streaming mode
  foundry-data convert allenai/c4 c4-mds/ --subset en --split validation \\
      --tokenizer EleutherAI/gpt-neox-20b --concat-tokens 2048

  # killed or Ctrl-C'd part-way? The same command again continues from the last finished shard
  # (same source files, tokenizer and options); --no-resume starts over instead
  foundry-data convert data/raw/ data/mds/ --tokenizer my-tokenizer/ --concat-tokens 2048
"""

_FINETUNING_EXAMPLES = """\
examples:
  # records like {"prompt": "...", "response": "..."} or {"messages": [{"role": ..., ...}]}
  foundry-data convert-finetuning sft.jsonl sft-mds/ --tokenizer my-tokenizer/ --max-seq-len 2048

  # drop (instead of truncate) samples longer than 1024 tokens; columns named differently
  foundry-data convert-finetuning qa.parquet qa-mds/ --tokenizer gpt2 --max-seq-len 1024 \\
      --overlong drop --prompt-column question --response-column answer
"""

_TOKENIZER_EXAMPLES = """\
examples:
  foundry-data train-tokenizer docs/ my-tokenizer/ --vocab-size 8000
  foundry-data train-tokenizer corpus.jsonl tok32k/ --vocab-size 32000 --text-column body
"""

_INSPECT_EXAMPLES = """\
examples:
  foundry-data inspect data/mds/
  foundry-data inspect s3://bucket/pretrain --sample 10 --max-chars 500
  foundry-data inspect sft-mds/ --json
"""


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a .txt/.json/.jsonl/.parquet/.csv file, a folder or glob of them, or a "
        "Hugging Face dataset name",
    )
    p.add_argument(
        "--reader",
        choices=["auto", "datasets"],
        default="auto",
        help="'auto': local files are read by foundry-data, hub names by the "
        "`datasets` library; 'datasets': local files through `datasets` too",
    )
    p.add_argument("--subset", default=None, help="hub dataset configuration (e.g. 'en' for c4)")
    p.add_argument("--split", default="train", help="hub dataset split (default: train)")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "out", metavar="OUT", help="output folder, or an object-store URL like s3://bucket/prefix"
    )
    p.add_argument(
        "--local",
        default=None,
        metavar="DIR",
        help="with a remote OUT: keep a local copy here (default: a temporary staging folder)",
    )
    p.add_argument(
        "--compression",
        default="zstd",
        help="shard compression: zstd (default), zstd:LEVEL, gz, bz2, br, snappy, or none",
    )
    p.add_argument(
        "--hashes",
        default=None,
        help="comma-separated shard hashes checked when read (default: sha1,xxh64); none to skip",
    )
    p.add_argument(
        "--shard-size",
        default="64MiB",
        help="most sample bytes per shard before compression (default: 64MiB)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start over even if a killed (or Ctrl-C'd) run of the same command left finished "
        "shards to continue from (by default it resumes them; local OUT only)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _add_conversion_args(p: argparse.ArgumentParser) -> None:
    """What ``convert`` and ``convert-finetuning`` both take: SOURCE, OUT and --tokenizer."""
    _add_source_args(p)
    _add_output_args(p)
    p.add_argument("--tokenizer", required=True, help="tokenizer directory or Hugging Face name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry-data",
        description="Turn raw text into streaming (MDS) datasets for language-model training.",
        epilog="Run `foundry-data COMMAND --help` for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "convert",
        help="text -> pretraining MDS (fixed-length token samples)",
        description="Tokenize documents and pack them into samples of exactly "
        "--concat-tokens tokens (column 'tokens', int32), as llm-foundry does.",
        epilog=_CONVERT_EXAMPLES,
        formatter_class=fmt,
    )
    _add_conversion_args(p)
    p.add_argument(
        "--concat-tokens", type=int, required=True, metavar="N", help="tokens per sample"
    )
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--bos-text", default="", help="text put before every document (default: none)")
    p.add_argument(
        "--eos-text",
        default=None,
        help="text put after every document (default: the tokenizer's EOS token; '' for none)",
    )
    p.add_argument(
        "--no-wrap",
        action="store_true",
        help="start every sample at a document start; drop the overflow instead of "
        "carrying it into the next sample",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tokenizer processes (default: all cores); any count gives the same bytes",
    )
    p.add_argument(
        "--txt-unit",
        choices=["file", "line"],
        default="file",
        help="a .txt file is one document (file, default) or one per line (line)",
    )
    p.set_defaults(run=_run_convert)

    p = sub.add_parser(
        "convert-finetuning",
        help="prompt/response or chat records -> fine-tuning MDS",
        description="Tokenize prompt/response and chat (messages) records into "
        "llm-foundry's fine-tuning layout (column 'turns'), prompt and response kept "
        "apart so training masks the prompt.",
        epilog=_FINETUNING_EXAMPLES,
        formatter_class=fmt,
    )
    _add_conversion_args(p)
    p.add_argument(
        "--max-seq-len", type=int, required=True, metavar="N", help="longest sample, in tokens"
    )
    p.add_argument(
        "--overlong",
        choices=["truncate", "drop"],
        default="truncate",
        help="what to do with longer samples (default: truncate); both are counted",
    )
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--response-column", default="response")
    p.add_argument("--messages-column", default="messages")
    p.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE",
        help="Jinja chat template to use instead of the tokenizer's",
    )
    p.set_defaults(run=_run_convert_finetuning)

    p = sub.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer",
        description="Train a byte-level BPE tokenizer with the `tokenizers` library "
        "and save a directory that transformers.AutoTokenizer loads (EOS/BOS "
        "<|endoftext|>, pad <|pad|>, ChatML chat template).",
        epilog=_TOKENIZER_EXAMPLES,
        formatter_class=fmt,
    )
    _add_source_args(p)
    p.add_argument("out", metavar="OUT", help="directory to save the tokenizer in")
    p.add_argument("--vocab-size", type=int, default=32000, help="vocabulary size (default: 32000)")
    p.add_argument(
        "--min-frequency", type=int, default=2, help="least count for a merge (default: 2)"
    )
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--txt-unit", choices=["file", "line"], default="file")
    p.add_argument("--no-chat-template", action="store_true", help="save no chat template")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(run=_run_train_tokenizer)

    p = sub.add_parser(
        "inspect",
        help="show a dataset's manifest, counts and a decoded sample",
        epilog=_INSPECT_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or object-store URL")
    p.add_argument(
        "--sample", type=int, default=0, help="index of the sample to decode (default: 0)"
    )
    p.add_argument("--max-chars", type=int, default=2000, help="longest decoded text shown")
    p.add_argument(
        "--tokenizer", default=None, help="decode with this tokenizer instead of the manifest's"
    )
    p.add_argument("--json", action="store_true", help="print the manifest and counts as JSON")
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
