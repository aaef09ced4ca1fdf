"""`foundry-data convert` on real text: round trip, determinism, formats, separators."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from foundry_data import MANIFEST_NAME, PRETRAINING_COLUMNS, read_manifest
from foundry_data.backend_tokenizer import read_plain_tokenizer
from transformers import AutoTokenizer

SEQ = 128


def _byte_symbols() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), inverted."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), 256),
    ]
    symbols = dict(zip(printable, printable, strict=True))
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = 256 + extra
            extra += 1
    return {chr(code): b for b, code in symbols.items()}


_BYTES = _byte_symbols()


def _token_bytes(tok, ids: list[int]) -> bytes:
    """The exact bytes that ``ids`` stand for (special tokens as their text)."""
    special = set(tok.all_special_ids)
    out = bytearray()
    for i, piece in zip(ids, tok.convert_ids_to_tokens(ids), strict=True):
        out += piece.encode("utf-8") if i in special else bytes(_BYTES[c] for c in piece)
    return bytes(out)


def convert(cli, source, out, tokenizer_dir, *extra):
    code, stdout, stderr = cli(
        "convert", source, out, "--tokenizer", tokenizer_dir, "--concat-tokens", SEQ,
        "--no-progress", *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return stdout


def test_round_trip_gives_back_the_documents(
    cli, mds, corpus_dir, tokenizer_dir, documents, tmp_path
):
    out = tmp_path / "mds"
    stdout = convert(cli, corpus_dir, out, tokenizer_dir, "--workers", "1")
    assert "converted" in stdout and f"samples of {SEQ} tokens" in stdout

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    samples = mds.samples(out)
    assert samples and all(
        s["tokens"].dtype == np.int32 and s["tokens"].shape == (SEQ,) for s in samples
    )

    # Decoding every sample and joining them gives the documents with EOS after each one, up to
    # the tail that did not fill a last sample. Samples are cut between tokens, which may fall
    # inside a UTF-8 character, so the comparison is on bytes.
    expected = "".join(doc + tok.eos_token for doc in documents).encode("utf-8")
    joined = b"".join(_token_bytes(tok, s["tokens"].tolist()) for s in samples)
    manifest = read_manifest(out)
    all_tokens = tok.encode(expected.decode("utf-8"), add_special_tokens=False)
    tail = _token_bytes(tok, all_tokens[len(all_tokens) - manifest.num_dropped_tokens :])
    assert joined + tail == expected
    stored = np.concatenate([s["tokens"] for s in samples]).tolist()
    assert stored + all_tokens[len(stored) :] == all_tokens
    assert len(all_tokens) - len(stored) == manifest.num_dropped_tokens
    assert tok.decode(all_tokens) == expected.decode("utf-8")  # transformers' own decode agrees

    assert manifest.kind == "pretraining"
    assert manifest.seq_len == SEQ
    assert manifest.num_samples == len(samples)
    assert manifest.num_tokens == len(samples) * SEQ
    assert manifest.num_documents == len(documents)
    assert manifest.vocab_size == len(tok)
    assert manifest.eos_token_id == tok.eos_token_id
    assert manifest.separator is not None and manifest.separator.eos_tokens == [tok.eos_token_id]
    assert manifest.separator.wrap is True
    assert manifest.columns == PRETRAINING_COLUMNS
    assert manifest.tokenizer == str(tokenizer_dir.resolve())
    assert manifest.source.num_files == 2 and manifest.source.text_column == "text"
    assert manifest.compression == "zstd" and manifest.hashes == ["sha1", "xxh64"]
    assert {p.name for p in tmp_path.iterdir()} == {"mds"}  # no work folder left behind


def test_same_bytes_whatever_the_worker_count(cli, mds, corpus_dir, tokenizer_dir, tmp_path):
    trees = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        convert(cli, corpus_dir, out, tokenizer_dir, "--workers", workers, "--shard-size", "16KiB")
        trees.append(mds.tree(out))
    assert len([name for name in trees[0] if name.startswith("shard.")]) > 3
    assert trees[0] == trees[1] == trees[2]


def test_every_input_format_gives_the_same_samples(
    cli, mds, documents, corpus_dir, tokenizer_dir, tmp_path
):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(
        pa.table({"text": documents, "n": list(range(len(documents)))}), src / "d.parquet"
    )
    with open(src / "d.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(documents))
    (src / "d.json").write_text(json.dumps([{"text": d} for d in documents]), encoding="utf-8")
    txt = src / "txt"
    txt.mkdir()
    for i, d in enumerate(documents):
        (txt / f"{i:03d}.txt").write_text(d, encoding="utf-8")

    convert(cli, corpus_dir, tmp_path / "ref", tokenizer_dir, "--workers", "1")
    want = mds.tokens(tmp_path / "ref")
    sources = {
        "parquet": [src / "d.parquet"],
        "csv": [src / "d.csv"],
        "json": [src / "d.json"],
        "txt": [txt],
        "glob": [str(corpus_dir / "*.jsonl")],
        "datasets": [corpus_dir, "--reader", "datasets"],  # the code path hub names take
    }
    for name, args in sources.items():
        out = tmp_path / name
        convert(cli, args[0], out, tokenizer_dir, "--workers", "1", *args[1:])
        assert np.array_equal(mds.tokens(out), want), name
    assert read_manifest(tmp_path / "datasets").source.reader == "datasets"


def test_separators_and_no_wrap(cli, mds, corpus_dir, tokenizer_dir, documents, tmp_path):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out = tmp_path / "nowrap"
    convert(cli, corpus_dir, out, tokenizer_dir, "--workers", "1", "--no-wrap",
            "--bos-text", "<|im_start|>", "--eos-text", "<|im_end|>")  # fmt: skip
    bos, eos = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    samples = mds.samples(out)
    manifest = read_manifest(out)
    assert manifest.separator is not None
    assert manifest.separator.bos_tokens == [bos] and manifest.separator.eos_tokens == [eos]
    assert manifest.separator.wrap is False
    starts = {tok.decode(tok.encode(d, add_special_tokens=False)[:5]) for d in documents}
    for sample in samples:
        tokens = sample["tokens"].tolist()
        assert tokens[0] == bos  # every sample starts at a document start
        assert tok.decode(tokens[1:6]) in starts
    assert manifest.num_tokens + manifest.num_dropped_tokens == sum(
        len(tok.encode(d, add_special_tokens=False)) + 2 for d in documents
    )


def test_text_lines_without_compression_or_hashes(cli, tmp_path, tokenizer_dir, mds):
    src = tmp_path / "lines.txt"
    src.write_text(
        "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(300))
    )
    out = tmp_path / "mds"
    code, stdout, stderr = cli(
        "convert", src, out, "--tokenizer", tokenizer_dir, "--concat-tokens", "64",
        "--txt-unit", "line", "--compression", "none", "--hashes", "none", "--workers", "1",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert "300 documents" in stdout
    manifest = read_manifest(out)
    assert manifest.compression is None and manifest.hashes == []
    assert (out / MANIFEST_NAME).is_file() and (out / "shard.00000.mds").is_file()
    assert mds.tokens(out).shape == (manifest.num_tokens,)


def test_python_dash_m_runs_the_same_command():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "foundry_data", "convert", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--concat-tokens" in result.stdout and "examples:" in result.stdout


def test_inspect_shows_counts_and_a_decoded_sample(
    cli, corpus_dir, tokenizer_dir, tmp_path, documents
):
    out = tmp_path / "mds"
    convert(cli, corpus_dir, out, tokenizer_dir, "--workers", "1")
    code, stdout, stderr = cli("inspect", out, "--sample", "0", "--max-chars", "10000")
    assert code == 0, stderr
    manifest = read_manifest(out)
    assert f"{manifest.num_samples:,} x {SEQ} tokens" in stdout
    assert f"from {len(documents):,} documents" in stdout
    assert documents[0][:40] in stdout  # the first sample starts with the first document
    code, stdout, _ = cli("inspect", out, "--json")
    assert code == 0 and json.loads(stdout)["manifest"]["num_samples"] == manifest.num_samples


def test_inspect_out_of_range_sample(cli, corpus_dir, tokenizer_dir, tmp_path):
    out = tmp_path / "mds"
    convert(cli, corpus_dir, out, tokenizer_dir, "--workers", "1")
    code, _, stderr = cli("inspect", out, "--sample", "99999")
    assert code == 2 and "out of range" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("through_transformers", [False, True], ids=["plain", "transformers"])
def test_truncation_or_padding_saved_in_the_tokenizer_is_ignored(
    cli, mds, corpus_dir, tokenizer_dir, tmp_path, through_transformers
):
    """A tokenizer.json saved with truncation and padding switched on (as tokenizers prepared
    for model inputs often are) must neither cut documents nor pad them, whether it is read with
    `tokenizers` alone or through transformers (a config key the plain reader does not know)."""
    from tokenizers import Tokenizer

    padded = tmp_path / "padded-tokenizer"
    shutil.copytree(tokenizer_dir, padded)
    backend = Tokenizer.from_file(str(padded / "tokenizer.json"))
    backend.enable_truncation(max_length=16)
    backend.enable_padding(pad_id=1, pad_token="<|pad|>", length=64)
    backend.save(str(padded / "tokenizer.json"))
    if through_transformers:
        config = json.loads((padded / "tokenizer_config.json").read_text())
        config["split_special_tokens"] = False
        (padded / "tokenizer_config.json").write_text(json.dumps(config))
    assert (read_plain_tokenizer(padded) is None) == through_transformers

    convert(cli, corpus_dir, tmp_path / "ref", tokenizer_dir, "--workers", "1")
    want = mds.tokens(tmp_path / "ref")
    for workers in ("1", "2"):
        out = tmp_path / f"padded-{workers}"
        convert(cli, corpus_dir, out, padded, "--workers", workers)
        np.testing.assert_array_equal(mds.tokens(out), want)


def test_byte_order_marks_and_crlf_line_ends_are_not_text(cli, mds, tokenizer_dir, tmp_path):
    """A UTF-8 byte-order mark (Windows editors write one) is not part of the first document or
    the first CSV column's name, and `--txt-unit line` drops the \\r of CRLF line ends: the
    same tokens as the plain LF file without a mark."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lines = ["hello world", "the quick fox", "naïve café"]
    runs = {
        "plain.txt": ("\n".join(lines) + "\n").encode(),
        "marked.txt": b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n\r\n").encode(),
        "plain.csv": ("text,id\n" + "".join(f"{x},{i}\n" for i, x in enumerate(lines))).encode(),
        "marked.csv": b"\xef\xbb\xbf"
        + ("text,id\r\n" + "".join(f"{x},{i}\r\n" for i, x in enumerate(lines))).encode(),
    }
    decoded = {}
    for name, data in runs.items():
        src = tmp_path / name
        src.write_bytes(data)
        out = tmp_path / f"mds-{name}"
        code, _, stderr = cli("convert", src, out, "--tokenizer", tokenizer_dir,
                              "--concat-tokens", "1", "--txt-unit", "line", "--workers", "1",
                              "--no-progress")  # fmt: skip
        assert code == 0, stderr
        decoded[name] = tok.decode(mds.tokens(out).tolist())
    assert decoded["marked.txt"] == decoded["plain.txt"] == decoded["plain.csv"]
    assert decoded["marked.csv"] == decoded["plain.csv"]
    assert "\ufeff" not in decoded["marked.txt"] and "\r" not in decoded["marked.txt"]
    assert decoded["plain.txt"].startswith("hello world")
