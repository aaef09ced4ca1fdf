"""Loading the tokenizer named by ``--tokenizer``, with errors a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_data.errors import FoundryError, first_line
from foundry_data.locations import location_kind

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

__all__ = ["LoadedTokenizer", "load_tokenizer", "looks_like_local_path", "whole_documents"]


@dataclass(frozen=True)
class LoadedTokenizer:
    """A Hugging Face tokenizer and what conversions need to know about it."""

    hf: PreTrainedTokenizerBase
    name: str
    """Absolute path for local tokenizers, the hub name otherwise (recorded in manifests)."""

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def eos_token_id(self) -> int | None:
        return _optional_int(self.hf.eos_token_id)

    @property
    def bos_token_id(self) -> int | None:
        return _optional_int(self.hf.bos_token_id)

    @property
    def pad_token_id(self) -> int | None:
        return _optional_int(self.hf.pad_token_id)

    def backend_json(self) -> str:
        """The Rust (``tokenizers``) tokenizer serialized, for worker processes, with truncation
        and padding off: conversions tokenize whole documents, whatever the tokenizer was saved
        with for model inputs."""
        from tokenizers import Tokenizer

        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is None:
            raise FoundryError(
                f"tokenizer {self.name!r} has no fast (Rust `tokenizers`) implementation, which "
                "foundry-data needs for fast multi-process conversion. Convert it once with "
                "`transformers.AutoTokenizer.from_pretrained(name, use_fast=True)` and "
                "`save_pretrained(dir)`, then pass that directory."
            )
        return whole_documents(Tokenizer.from_str(backend.to_str())).to_str()

    def check_backend_agrees(self) -> None:
        """Workers tokenize with the Rust backend alone; make sure it gives what transformers
        gives (a few tokenizers add Python-side processing, which workers would miss)."""
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self.backend_json())
        special = " ".join(str(t) for t in self.hf.all_special_tokens[:3])
        for probe in (
            "Hello world! 123  spaced\tout\nnew line",
            f" leading space, naïve café, 東京 🎉 {special} after",
        ):
            ours = backend.encode(probe, add_special_tokens=False).ids
            theirs = list(self.hf(probe, add_special_tokens=False)["input_ids"])
            if ours != theirs:
                raise FoundryError(
                    f"tokenizer {self.name!r} tokenizes differently in its Rust backend than "
                    "through transformers (it adds Python-side processing), so foundry-data's "
                    "worker processes cannot reproduce it. Save it as a plain fast tokenizer "
                    "(tokenizer.json) or choose another tokenizer."
                )

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added by the tokenizer."""
        return list(self.hf.encode(text, add_special_tokens=False))


def whole_documents(backend: Tokenizer) -> Tokenizer:
    """``backend`` with truncation and padding switched off (a tokenizer saved for model inputs
    may have them on; a conversion must neither cut documents nor pad them)."""
    backend.no_truncation()
    backend.no_padding()
    return backend


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def looks_like_local_path(spec: str) -> bool:
    """True when ``spec`` can only be meant as a path on this machine (not a hub name).

    The rule is :func:`foundry_data.locations.location_kind`'s, shared by every source and model
    location this package takes.
    """
    return location_kind(spec) != "hub"


def load_tokenizer(spec: str) -> LoadedTokenizer:
    """Load a tokenizer from a local directory or a Hugging Face Hub name.

    Raises:
        FoundryError: the tokenizer does not exist or cannot be loaded.
    """
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FoundryError(
                f"--tokenizer {spec!r} is a file; pass the directory that holds it (with "
                "tokenizer.json / tokenizer_config.json), such as one made by "
                "`foundry-data train-tokenizer`."
            )
        name = str(path.resolve())
    elif looks_like_local_path(spec):
        raise FoundryError(
            f"tokenizer directory {spec!r} does not exist. Pass an existing tokenizer directory "
            "(e.g. one made by `foundry-data train-tokenizer`) or a Hugging Face Hub name such as "
            "'gpt2'."
        )
    else:
        name = spec
    try:
        hf = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors, ...
        where = "the directory" if path.exists() else "the Hugging Face Hub (or its local cache)"
        reason = first_line(exc, empty=type(exc).__name__)
        raise FoundryError(
            f"unknown tokenizer {spec!r}: it could not be loaded from {where} ({reason}). Pass a "
            "directory that AutoTokenizer loads (e.g. one made by `foundry-data "
            "train-tokenizer`) or a hub name that is reachable or cached."
        ) from None
    return LoadedTokenizer(hf=hf, name=name)
