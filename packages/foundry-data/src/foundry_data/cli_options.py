"""The options and examples of each ``foundry-data`` command (cli.py builds the parser)."""

from __future__ import annotations

import argparse

__all__ = [
    "CONVERT_EXAMPLES",
    "FINETUNING_EXAMPLES",
    "INSPECT_EXAMPLES",
    "TOKENIZER_EXAMPLES",
    "add_convert_args",
    "add_finetuning_args",
    "add_inspect_args",
    "add_tokenizer_args",
]

CONVERT_EXAMPLES = """\
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

FINETUNING_EXAMPLES = """\
examples:
  # records like {"prompt": "...", "response": "..."} or {"messages": [{"role": ..., ...}]}
  foundry-data convert-finetuning sft.jsonl sft-mds/ --tokenizer my-tokenizer/ --max-seq-len 2048

  # drop (instead of truncate) samples longer than 1024 tokens; columns named differently
  foundry-data convert-finetuning qa.parquet qa-mds/ --tokenizer gpt2 --max-seq-len 1024 \\
      --overlong drop --prompt-column question --response-column answer
"""

TOKENIZER_EXAMPLES = """\
examples:
  foundry-data train-tokenizer docs/ my-tokenizer/ --vocab-size 8000
  foundry-data train-tokenizer corpus.jsonl tok32k/ --vocab-size 32000 --text-column body
"""

INSPECT_EXAMPLES = """\
examples:
  foundry-data inspect data/mds/
  foundry-data inspect s3://bucket/pretrain --sample 10 --max-chars 500
  foundry-data inspect sft-mds/ --json
"""


def add_source_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--subset",
        default=None,
        metavar="NAME",
        help="hub dataset configuration (e.g. 'en' for c4)",
    )
    p.add_argument(
        "--split", default="train", metavar="NAME", help="hub dataset split (default: train)"
    )


def add_output_args(p: argparse.ArgumentParser) -> None:
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
        metavar="CODEC",
        help="shard compression: zstd (default), zstd:LEVEL, gz, bz2, br, snappy, or none",
    )
    p.add_argument(
        "--hashes",
        default=None,
        metavar="LIST",
        help="comma-separated shard hashes checked when read (default: sha1,xxh64); none to skip",
    )
    p.add_argument(
        "--shard-size",
        default="64MiB",
        metavar="SIZE",
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


def add_conversion_args(p: argparse.ArgumentParser) -> None:
    """What ``convert`` and ``convert-finetuning`` both take: SOURCE, OUT and --tokenizer."""
    add_source_args(p)
    add_output_args(p)
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="TOKENIZER",
        help="tokenizer directory or Hugging Face name",
    )


def add_convert_args(p: argparse.ArgumentParser) -> None:
    """``convert``: SOURCE, OUT, --tokenizer and the packing options."""
    add_conversion_args(p)
    p.add_argument(
        "--concat-tokens", type=int, required=True, metavar="N", help="tokens per sample"
    )
    p.add_argument(
        "--text-column",
        default="text",
        metavar="NAME",
        help="column holding the text (default: text)",
    )
    p.add_argument(
        "--bos-text",
        default="",
        metavar="TEXT",
        help="text put before every document (default: none)",
    )
    p.add_argument(
        "--eos-text",
        default=None,
        metavar="TEXT",
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
        metavar="N",
        help="tokenizer processes (default: all cores); any count gives the same bytes",
    )
    p.add_argument(
        "--txt-unit",
        choices=["file", "line"],
        default="file",
        help="a .txt file is one document (file, default) or one per line (line)",
    )


def add_finetuning_args(p: argparse.ArgumentParser) -> None:
    """``convert-finetuning``: SOURCE, OUT, --tokenizer and the record options."""
    add_conversion_args(p)
    p.add_argument(
        "--max-seq-len", type=int, required=True, metavar="N", help="longest sample, in tokens"
    )
    p.add_argument(
        "--overlong",
        choices=["truncate", "drop"],
        default="truncate",
        help="what to do with longer samples (default: truncate); both are counted",
    )
    p.add_argument(
        "--prompt-column", default="prompt", metavar="NAME", help="prompt column (default: prompt)"
    )
    p.add_argument(
        "--response-column",
        default="response",
        metavar="NAME",
        help="response column (default: response)",
    )
    p.add_argument(
        "--messages-column",
        default="messages",
        metavar="NAME",
        help="chat messages column (default: messages)",
    )
    p.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE",
        help="a Jinja chat template to use instead of the tokenizer's",
    )


def add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    """``train-tokenizer``: SOURCE, OUT and the vocabulary options."""
    add_source_args(p)
    p.add_argument("out", metavar="OUT", help="directory to save the tokenizer in")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=32000,
        metavar="N",
        help="vocabulary size (default: 32000)",
    )
    p.add_argument(
        "--min-frequency",
        type=int,
        default=2,
        metavar="N",
        help="least count for a merge (default: 2)",
    )
    p.add_argument(
        "--text-column",
        default="text",
        metavar="NAME",
        help="column holding the text (default: text)",
    )
    p.add_argument(
        "--txt-unit",
        choices=["file", "line"],
        default="file",
        help="a .txt file is one document (file, default) or one per line (line)",
    )
    p.add_argument("--no-chat-template", action="store_true", help="save no chat template")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_inspect_args(p: argparse.ArgumentParser) -> None:
    """``inspect``: DATASET and what to show."""
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or object-store URL")
    p.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="INDEX",
        help="index of the sample to decode (default: 0)",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=2000,
        metavar="N",
        help="longest decoded text shown (default: 2000)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="TOKENIZER",
        help="decode with this tokenizer instead of the manifest's",
    )
    p.add_argument("--json", action="store_true", help="print the manifest and counts as JSON")
