"""The typed manifest written beside ``index.json`` in every dataset foundry-data makes.

``index.json`` (streaming's own index) says how to read the shards; the manifest says what the
samples mean: which tokenizer made them, how long they are, which separators sit between
documents, where the text came from and how much of it there is. Trainers read it to check a
dataset against their model (vocabulary size, sequence length) before they start.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foundry_data.errors import FoundryError

__all__ = [
    "MANIFEST_NAME",
    "DatasetManifest",
    "FinetuningInfo",
    "SeparatorInfo",
    "SourceInfo",
    "is_remote",
    "read_manifest",
]

MANIFEST_NAME = "foundry_manifest.json"
"""File name of the manifest, in the same directory (or object-store prefix) as ``index.json``."""

MANIFEST_FORMAT_VERSION = 1


class _Model(BaseModel):
    # Unknown keys are ignored so that a manifest written by a newer foundry-data still reads.
    model_config = ConfigDict(extra="ignore", frozen=True)


class SeparatorInfo(_Model):
    """What sits between documents in a pretraining dataset."""

    bos_text: str = Field(description="Text tokenized and put before every document ('' = none).")
    eos_text: str = Field(description="Text tokenized and put after every document ('' = none).")
    bos_tokens: list[int] = Field(description="Token ids of bos_text.")
    eos_tokens: list[int] = Field(description="Token ids of eos_text.")
    wrap: bool = Field(
        description="True: a document's overflow continues in the next sample. False (--no-wrap): "
        "every sample starts at a document start and the overflow is dropped."
    )


class SourceInfo(_Model):
    """Where the text came from."""

    spec: str = Field(description="SOURCE as given on the command line.")
    reader: Literal["files", "datasets"] = Field(
        description="'files': local files read by foundry-data; 'datasets': the `datasets` library "
        "in streaming mode (hub names)."
    )
    num_files: int | None = Field(default=None, description="Number of local files read.")
    text_column: str | None = Field(default=None, description="Column holding the text.")
    subset: str | None = None
    split: str | None = None


class FinetuningInfo(_Model):
    """Fine-tuning specific counts."""

    max_seq_len: int
    overlong: Literal["truncate", "drop"]
    num_truncated: int = Field(description="Samples cut to max_seq_len.")
    num_dropped: int = Field(description="Records left out for being too long (--overlong drop).")
    num_empty: int = Field(
        description="Records left out for having nothing to learn: an empty response, or a "
        "prompt that fills max_seq_len on its own."
    )
    num_prompt_tokens: int
    num_response_tokens: int
    num_chat_records: int
    num_prompt_response_records: int


class DatasetManifest(_Model):
    """Everything a consumer needs to know about a foundry-data dataset.

    ``num_tokens`` counts the tokens stored in the samples. For pretraining that is exactly
    ``num_samples * seq_len``; for fine-tuning it is the sum of prompt and response tokens and
    ``seq_len`` is the longest a sample may be.
    """

    format_version: int = MANIFEST_FORMAT_VERSION
    kind: Literal["pretraining", "finetuning"]
    tokenizer: str = Field(
        description="Tokenizer name or absolute path, as AutoTokenizer loads it."
    )
    vocab_size: int = Field(description="len(tokenizer): base vocabulary plus added tokens.")
    seq_len: int
    eos_token_id: int | None
    bos_token_id: int | None
    pad_token_id: int | None = None
    separator: SeparatorInfo | None = Field(default=None, description="Pretraining only.")
    source: SourceInfo
    num_samples: int
    num_tokens: int
    num_documents: int = Field(description="Documents (records) read from the source.")
    num_dropped_tokens: int = Field(
        default=0,
        description="Pretraining: tokens left over at the end (fewer than seq_len) or cut by "
        "--no-wrap, and so not stored.",
    )
    columns: dict[str, str] = Field(description="MDS column name -> MDS encoding.")
    compression: str | None
    hashes: list[str]
    finetuning: FinetuningInfo | None = None
    foundry_data_version: str

    def to_json(self) -> str:
        """The manifest as indented JSON text (stable key order, so equal runs give equal bytes)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def is_remote(path: str) -> bool:
    """True for object-store URLs such as ``s3://bucket/prefix`` (anything with a scheme)."""
    scheme = urllib.parse.urlparse(path).scheme
    # A Windows drive letter parses as a one-letter scheme; that is a local path.
    return len(scheme) > 1


def write_manifest(manifest: DatasetManifest, directory: str | os.PathLike[str]) -> Path:
    """Write ``manifest`` into ``directory`` atomically (temp name, then rename)."""
    target = Path(directory) / MANIFEST_NAME
    tmp = target.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, target)
    return target


def parse_manifest(text: str, where: str) -> DatasetManifest:
    """Parse manifest JSON text; ``where`` names its origin in error messages."""
    try:
        return DatasetManifest.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise FoundryError(
            f"{where} is not a valid foundry-data manifest ({problems}). Recreate the dataset "
            "with `foundry-data convert` or `foundry-data convert-finetuning`."
        ) from None


def read_manifest(path_or_remote: str | os.PathLike[str]) -> DatasetManifest:
    """Read the manifest of a dataset.

    Args:
        path_or_remote: the dataset directory (the one holding ``index.json``), the manifest file
            itself, or an object-store URL such as ``s3://bucket/prefix`` (read with streaming's
            downloader; S3 honours ``S3_ENDPOINT_URL`` and the usual AWS credentials).

    Raises:
        FoundryError: the manifest is missing, unreadable or invalid.
    """
    spec = os.fspath(path_or_remote)
    if is_remote(spec):
        return _read_remote_manifest(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FoundryError(
            f"no foundry-data manifest at {path}. Point at a dataset directory made by "
            "`foundry-data convert` (it holds index.json and "
            f"{MANIFEST_NAME}); a directory without the manifest was not finished or was not "
            "made by foundry-data."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FoundryError(f"cannot read {path}: {exc.strerror}. Check its permissions.") from None
    return parse_manifest(text, str(path))


def _read_remote_manifest(remote: str) -> DatasetManifest:
    from foundry_data.object_store import download

    url = remote.rstrip("/")
    if not url.endswith(MANIFEST_NAME):
        url = f"{url}/{MANIFEST_NAME}"
    tmpdir = tempfile.mkdtemp(prefix="foundry-manifest-")
    local = os.path.join(tmpdir, MANIFEST_NAME)
    try:
        download(
            url,
            local,
            missing="no foundry-data manifest there. The dataset is missing or its conversion "
            "did not finish; run the conversion (again) to complete it.",
        )
        with open(local, encoding="utf-8") as f:
            return parse_manifest(f.read(), url)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
