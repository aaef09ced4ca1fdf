"""Very long documents are tokenized in pieces with exactly the tokens of the whole document.

The tokenizer is the project's own (``foundry-data train-tokenizer`` on the corpus: a byte-level
BPE). Equality is checked on text written to be hard for the cut: runs of spaces, tabs and
newlines, spaces at the edges, non-breaking and ideographic spaces, contractions, digits, CJK,
right-to-left script and emoji, cut every few hundred characters. The memory test converts one
50 MB line in a real ``foundry-data convert`` process; it peaked at 5.5-6.3 GB before documents
were split (over 1 GB from a 10 MB line), and must stay under 1 GB.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRICKY = [
    "a  b", "a   \n\n  b", " leading", "trailing ", "it's", "they'll've", "x\t\ty", "1234 5678",
    "a\xa0 b", "\u3000 c", "end.\n", "\n\n", "  ", " ", "東京の天気", " Привет,", " مرحبا", "🎉🚀",
    "don't  stop", "a \u2028 b", "(x) = [y];", "\r\n", "Naïve café",
]  # fmt: skip


def _tricky_document(documents: list[str], chars: int) -> str:
    """Real text mixed with the tricky fragments, joined by spaces, tabs or nothing."""
    rng = random.Random(0)
    words = " ".join(documents).split(" ")
    parts: list[str] = []
    size = 0
    while size < chars:
        part = rng.choice(TRICKY) if rng.random() < 0.3 else rng.choice(words)
        parts.append(part + rng.choice(["", " ", "  ", "\t", "\n", " \n "]))
        size += len(parts[-1])
    return "".join(parts)


def _tokenizer(tokenizer_dir: Path):
    from foundry_data.backend_tokenizer import load_backend_tokenizer
    from foundry_data.tokenize_worker import Tokenization, make_inline_tokenizer

    tok = load_backend_tokenizer(str(tokenizer_dir))
    spec = Tokenization(tok.backend_json, "text", (), ())
    return tok, make_inline_tokenizer(spec)


def test_long_document_pieces_give_the_tokens_of_the_whole(
    tokenizer_dir: Path, documents: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from foundry_data import long_documents, tokenize_worker
    from foundry_data.records import Records

    tok, inline = _tokenizer(tokenizer_dir)
    assert inline.splits  # the project's byte-level BPE is cut
    text = _tricky_document(documents, 300_000)
    monkeypatch.setattr(tokenize_worker, "PIECE_CHARS", 500)
    monkeypatch.setattr(tokenize_worker, "BATCH_CHARS", 4000)
    parts = list(long_documents.pieces(text, 500))
    assert "".join(parts) == text and len(parts) > 400
    whole = tok.encode_plain(text)
    unit = Records(({"text": text},), ("tricky",))
    assert list(inline.tokenize(unit, len(text)).tokens) == whole
    # the test can tell: cutting at arbitrary places changes the tokens
    naive = [i for k in range(0, len(text), 500) for i in tok.encode_plain(text[k : k + 500])]
    assert naive != whole


def test_converted_long_document_matches_the_whole_encoding(
    tokenizer_dir: Path, documents: list[str], tmp_path: Path, monkeypatch, cli, mds
) -> None:
    from foundry_data import tokenize_worker

    tok, _ = _tokenizer(tokenizer_dir)
    text = _tricky_document(documents, 100_000)
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    monkeypatch.setattr(tokenize_worker, "PIECE_CHARS", 1000)  # one worker: tokenized inline
    out = tmp_path / "out"
    code, _, err = cli("convert", src, out, "--tokenizer", tokenizer_dir, "--concat-tokens", 64,
                       "--workers", 1, "--no-progress")  # fmt: skip
    assert code == 0, err
    whole = [*tok.encode_plain(text), tok.eos_token_id]
    stored = [int(t) for t in mds.tokens(out)]
    assert stored == whole[: len(stored)] and len(whole) - len(stored) < 64


def test_other_tokenizers_are_not_cut(tokenizer_dir: Path) -> None:
    from foundry_data.long_documents import splits_exactly

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    assert splits_exactly(json.dumps(spec))
    changes = [
        {"normalizer": {"type": "Lowercase"}},
        {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}},
        {"added_tokens": [*spec["added_tokens"], {**spec["added_tokens"][0], "content": "a b"}]},
        {"added_tokens": [{**spec["added_tokens"][0], "rstrip": True}]},
    ]
    for change in changes:
        assert not splits_exactly(json.dumps({**spec, **change})), change


_PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stdout + done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_a_50_mb_line_converts_in_under_1_gb(
    tokenizer_dir: Path, documents: list[str], tmp_path: Path
) -> None:
    text = " ".join(" ".join(documents).split())  # real words on one line
    line = (text * (50_000_000 // len(text) + 1))[:50_000_000]
    src = tmp_path / "line.txt"
    src.write_text(line + "\n", encoding="utf-8")
    command = [
        sys.executable, "-c", textwrap.dedent(_PEAK), sys.executable, "-m", "foundry_data",
        "convert", str(src), str(tmp_path / "out"), "--tokenizer", str(tokenizer_dir),
        "--concat-tokens", "2048", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    code, peak_kib = map(int, done.stdout.split())
    assert code == 0, done.stderr[-3000:]
    assert "converted 1 documents" in done.stderr
    assert peak_kib < 1 << 20, f"peak RSS {peak_kib / 1024:.0f} MiB"
