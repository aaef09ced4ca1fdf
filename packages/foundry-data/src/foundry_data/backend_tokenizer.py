"""The tokenizer a pretraining conversion runs: the Rust (``tokenizers``) tokenizer alone.

Pretraining conversion tokenizes with the Rust tokenizer that transformers wraps (worker
processes cannot run Python-side tokenizer code fast), and needs a few facts besides: the EOS
token, the special token ids and the vocabulary size for the manifest.

Usually those come from loading the tokenizer with transformers (:func:`load_tokenizer`), which
also checks that the Rust tokenizer on its own tokenizes as transformers does. Loading
transformers imports torch, which costs seconds of CPU. A tokenizer directory that holds a plain
``tokenizers`` tokenizer, one that transformers would load from ``tokenizer.json`` without changing
it (such as every tokenizer ``foundry-data train-tokenizer`` writes), is read here with
``tokenizers`` alone instead: same tokenizer, same facts, without transformers.
:func:`read_plain_tokenizer` says which directories qualify; anything it is not sure of goes
through transformers. ``tests/test_backend_tokenizer.py`` checks both paths agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_data.tokenizer_loading import load_tokenizer, whole_documents

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["BackendTokenizer", "load_backend_tokenizer", "read_plain_tokenizer"]

GENERIC_CLASSES = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})
"""transformers' tokenizer classes that wrap ``tokenizer.json`` with no model-specific code."""

NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_EXTRA_SPECIAL_TOKENS = ("additional_special_tokens", "extra_special_tokens")
_NEUTRAL_KEYS = frozenset(
    {
        *NAMED_SPECIAL_TOKENS,
        *_EXTRA_SPECIAL_TOKENS,
        "tokenizer_class",
        "backend",
        "added_tokens_decoder",
        "chat_template",
        "clean_up_tokenization_spaces",
        "model_max_length",
        "model_input_names",
        "padding_side",
        "truncation_side",
    }
)
"""``tokenizer_config.json`` keys that leave the Rust tokenizer as it is (special tokens are
checked to be in it already). Any other key may make transformers change it."""
_ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")


@dataclass(frozen=True)
class BackendTokenizer:
    """The Rust tokenizer (serialized) and what a pretraining conversion records about it."""

    name: str
    """Absolute path for local tokenizers, the hub name otherwise (recorded in manifests)."""
    backend_json: str
    vocab_size: int
    eos_token: str | None
    eos_token_id: int | None
    bos_token_id: int | None
    pad_token_id: int | None

    @cached_property
    def _encoder(self) -> Tokenizer:
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.backend_json)

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added by the tokenizer."""
        ids: list[int] = self._encoder.encode(text, add_special_tokens=False).ids
        return ids


def load_backend_tokenizer(spec: str) -> BackendTokenizer:
    """The tokenizer named by ``--tokenizer`` (a directory or a hub name), for pretraining.

    Raises:
        FoundryError: the tokenizer cannot be loaded, has no Rust implementation, or tokenizes
            differently in Rust than through transformers.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        plain = read_plain_tokenizer(path)
        if plain is not None:
            return plain
    tok = load_tokenizer(spec)
    tok.check_backend_agrees()
    eos = tok.hf.eos_token
    return BackendTokenizer(
        name=tok.name,
        backend_json=tok.backend_json(),
        vocab_size=tok.vocab_size,
        eos_token=eos if isinstance(eos, str) else None,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def read_plain_tokenizer(path: Path) -> BackendTokenizer | None:
    """The tokenizer in directory ``path`` read with ``tokenizers`` alone, or None unless
    transformers is sure to load its ``tokenizer.json`` unchanged: a generic tokenizer class, no
    model ``config.json`` beside it (transformers may then pick model-specific code), no
    ``special_tokens_map.json``, only config keys that leave the Rust tokenizer alone, and every
    special or added token of the config already in ``tokenizer.json`` with the same settings."""
    config = _read_json(path / "tokenizer_config.json")
    if (
        not isinstance(config, dict)
        or not (path / "tokenizer.json").is_file()
        or (path / "config.json").exists()
        or (path / "special_tokens_map.json").exists()
        or config.get("tokenizer_class") not in GENERIC_CLASSES
        or not set(config) <= _NEUTRAL_KEYS
    ):
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception:  # malformed: transformers' loader reports it properly
        return None
    added = {int(i): _added_token_fields(t) for i, t in backend.get_added_tokens_decoder().items()}
    named = _named_tokens(config)
    if named is None or not _tokens_present(config, named, added):
        return None
    ids = {key: backend.token_to_id(content) for key, content in named.items()}
    return BackendTokenizer(
        name=str(path.resolve()),
        backend_json=whole_documents(backend).to_str(),
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
        eos_token=named.get("eos_token"),
        eos_token_id=ids.get("eos_token"),
        bos_token_id=ids.get("bos_token"),
        pad_token_id=ids.get("pad_token"),
    )


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _added_token_fields(token: Any) -> dict[str, object]:
    return {name: getattr(token, name) for name in _ADDED_TOKEN_FIELDS}


def _token_content(value: object) -> str | None:
    """A special token of the config: a string, or an AddedToken as a dict; None otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        content = value.get("content")
        if isinstance(content, str):
            return content
    return None


def _named_tokens(config: dict[str, Any]) -> dict[str, str] | None:
    """``{"eos_token": "<|endoftext|>", ...}`` for the named special tokens set; None when one is
    set to something this module does not read."""
    named: dict[str, str] = {}
    for key in NAMED_SPECIAL_TOKENS:
        value = config.get(key)
        if value is None:
            continue
        content = _token_content(value)
        if content is None:
            return None
        named[key] = content
    return named


def _tokens_present(
    config: dict[str, Any], named: dict[str, str], added: dict[int, dict[str, object]]
) -> bool:
    """Whether every token the config names is an added token of the Rust tokenizer already (so
    transformers adds none), with the settings the config gives it."""
    contents = {str(fields["content"]) for fields in added.values()}
    extra: list[object] = []
    for key in _EXTRA_SPECIAL_TOKENS:
        value = config.get(key)
        if isinstance(value, dict):
            extra += list(value.values())
        elif isinstance(value, list):
            extra += value
        elif value is not None:
            return False
    extra_contents = [_token_content(v) for v in extra]
    if any(c is None or c not in contents for c in [*named.values(), *extra_contents]):
        return False
    declared = config.get("added_tokens_decoder", {})
    if not isinstance(declared, dict):
        return False
    for index, fields in declared.items():
        if not str(index).isdigit() or not isinstance(fields, dict):
            return False
        have = added.get(int(str(index)))
        if have is None or any(fields.get(name) != have[name] for name in _ADDED_TOKEN_FIELDS):
            return False
    return True
