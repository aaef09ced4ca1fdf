"""Tokenizing very long documents in pieces whose tokens are exactly those of the whole document.

The Rust tokenizer holds a whole document's encoding at once (ids, token strings, offsets, masks:
on the order of a hundred bytes per token), so one 50 MB line used to take gigabytes. A long
document is cut into pieces at places where the tokenizer's pre-tokenizer splits anyway, so
encoding the pieces one after another gives the same ids as encoding the whole.

Where that holds: a byte-level BPE (GPT-2's ``ByteLevel`` pre-tokenizer with its regex, as
``foundry-data train-tokenizer`` writes) and no normalizer. That regex matches
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``: a space can
only start a match, never follow a non-space inside one, so between a non-whitespace character
and the ASCII space after it there is always a match boundary, and no alternative looks behind
it. Each piece after the first starts with that space, so ``add_prefix_space`` adds nothing to it.
Added tokens are matched before pre-tokenization: splitting is exact only when none contains
whitespace (a match could then straddle the cut) and none strips the whitespace around it. Any
other tokenizer (a normalizer, a ``Split`` or ``Metaspace`` pre-tokenizer, ...) gets its
documents whole, as before.

Standard library only: the tokenization workers import this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

__all__ = ["PIECE_CHARS", "pieces", "splits_exactly"]

PIECE_CHARS = 1 << 20
"""Documents longer than this many characters are tokenized in pieces of about this size."""

# Unicode White_Space, which the pre-tokenizer's regex calls \s (str.isspace is checked too).
_WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _is_space(char: str) -> bool:
    return char in _WHITESPACE or char.isspace()


def splits_exactly(tokenizer_json: str) -> bool:
    """Whether documents of this tokenizer (its ``tokenizer.json`` text) may be cut before a
    space that follows a non-space without changing their tokens (see the module docstring)."""
    spec = json.loads(tokenizer_json)
    pre = spec.get("pre_tokenizer") or {}
    model = spec.get("model") or {}
    if spec.get("normalizer") is not None or pre.get("type") != "ByteLevel":
        return False
    if pre.get("use_regex", True) is not True or model.get("type") != "BPE":
        return False
    if model.get("dropout") not in (None, 0, 0.0):
        return False
    for token in spec.get("added_tokens") or []:
        content = str(token.get("content", ""))
        if token.get("lstrip") or token.get("rstrip") or any(map(_is_space, content)):
            return False
    return True


def _cut(text: str, start: int, limit: int) -> int:
    """The last place in ``(start, limit]`` before a space that follows a non-space, else the
    first after ``limit``; ``len(text)`` when there is none."""
    cut = text.rfind(" ", start + 1, limit + 1)
    while cut > start:
        if not _is_space(text[cut - 1]):
            return cut
        cut = text.rfind(" ", start + 1, cut)
    cut = text.find(" ", limit + 1)
    while cut != -1:
        if not _is_space(text[cut - 1]):
            return cut
        cut = text.find(" ", cut + 1)
    return len(text)


def pieces(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive pieces of about ``piece_chars`` characters (longer where no cut is
    found), each cut before a space that follows a non-space; together exactly ``text``."""
    start = 0
    while len(text) - start > piece_chars:
        cut = _cut(text, start, start + piece_chars)
        yield text[start:cut]
        start = cut
    if start < len(text) or not text:
        yield text[start:]
