"""Bad input gives one clear paragraph (exit status 2, no traceback) and never partial output."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from foundry_data import FoundryError, read_manifest


def _fails(cli, *args) -> str:
    code, stdout, stderr = cli(*args)
    assert code == 2, (stdout, stderr)
    assert stderr.startswith("error: ") and "Traceback" not in stderr
    assert stderr.count("\n") == 1  # one paragraph
    return stderr


def _convert_args(source, out, tokenizer, *extra):
    return ("convert", source, out, "--tokenizer", tokenizer, "--concat-tokens", "32",
            "--workers", "1", "--no-progress", *extra)  # fmt: skip


def test_missing_source(cli, tokenizer_dir, tmp_path):
    err = _fails(cli, *_convert_args(tmp_path / "nope.jsonl", tmp_path / "o", tokenizer_dir))
    assert "nope.jsonl" in err and "does not exist" in err
    err = _fails(cli, *_convert_args(str(tmp_path / "*.jsonl"), tmp_path / "o", tokenizer_dir))
    assert "no files match" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _fails(cli, *_convert_args(empty, tmp_path / "o", tokenizer_dir))
    assert "holds no .txt, .json, .jsonl, .parquet or .csv files" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["data.parquet", "corpus.csv", "sub/dir/data.jsonl", "~/nope"])
def test_a_missing_file_name_fails_at_once_without_asking_the_hub(
    cli, tokenizer_dir, tmp_path, monkeypatch, name
):
    # A relative name with a file extension (or a path shape) that does not exist is a missing
    # path, not a hub dataset id: the error comes at once (it used to wait ~26 s for the hub).
    import time

    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    err = _fails(cli, *_convert_args(name, tmp_path / "o", tokenizer_dir))
    assert time.perf_counter() - start < 5
    assert f"source {name!r} does not exist" in err
    assert not (tmp_path / "o").exists()


def test_the_location_rule() -> None:
    from foundry_data.locations import location_kind

    assert location_kind("allenai/c4") == "hub"
    assert location_kind("gpt2") == "hub"
    assert location_kind("Qwen/Qwen2.5-0.5B") == "hub"  # a dot in a hub id is no extension
    assert location_kind("data.parquet") == "missing"
    assert location_kind("./c4") == "missing"
    assert location_kind("/no/such/dir") == "missing"
    assert location_kind(__file__) == "path"


def test_unknown_hub_dataset(cli, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    err = _fails(cli, *_convert_args("no-such-org/no-such-dataset", tmp_path / "o", tokenizer_dir))
    assert "no-such-org/no-such-dataset" in err and "Hugging Face dataset" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.tmp-*"))


def test_malformed_json_line_names_file_and_line(cli, tokenizer_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    lines = [json.dumps({"text": f"document number {i} " * 20}) for i in range(50)]
    lines[36] = '{"text": "unterminated'
    src.write_text("\n".join(lines) + "\n")
    err = _fails(cli, *_convert_args(src, tmp_path / "o", tokenizer_dir))
    assert f"{src}:37: malformed JSON" in err
    # The conversion had written samples before it met the bad line: nothing may remain.
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.tmp-*"))


def test_malformed_line_in_a_worker_process(cli, tokenizer_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n[1, 2]\n')
    args = _convert_args(src, tmp_path / "o", tokenizer_dir, "--workers", "2")  # last one wins
    err = _fails(cli, *args)
    assert f"{src}:2: a JSON list, not an object" in err


def test_missing_text_column_lists_the_columns(cli, tokenizer_dir, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"body": "x", "title": "y"}) + "\n")
    err = _fails(cli, *_convert_args(src, tmp_path / "o", tokenizer_dir))
    assert f"{src}:1" in err and "'body', 'title'" in err and "--text-column" in err

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a"], "n": [1]}), tmp_path / "d.parquet")
    err = _fails(cli, *_convert_args(tmp_path / "d.parquet", tmp_path / "o", tokenizer_dir))
    assert "'content', 'n'" in err


def test_unknown_tokenizer(cli, corpus_dir, tmp_path, monkeypatch):
    err = _fails(cli, *_convert_args(corpus_dir, tmp_path / "o", tmp_path / "no-tokenizer"))
    assert "tokenizer directory" in err and "does not exist" in err
    # No hub here: go offline at once instead of waiting out huggingface_hub's retries.
    # (huggingface_hub reads HF_HUB_OFFLINE when imported, so set its constant too.)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    err = _fails(cli, *_convert_args(corpus_dir, tmp_path / "o", "no-such-org/no-such-tokenizer"))
    assert "unknown tokenizer 'no-such-org/no-such-tokenizer'" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.tmp-*"))


def test_existing_output_needs_overwrite(cli, corpus_dir, tokenizer_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = _fails(cli, *_convert_args(corpus_dir, out, tokenizer_dir))
    assert "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"
    code, _, stderr = cli(*_convert_args(corpus_dir, out, tokenizer_dir, "--overwrite"))
    assert code == 0, stderr
    assert not (out / "keep.txt").exists() and read_manifest(out).num_samples > 0


def test_bad_options(cli, corpus_dir, tokenizer_dir, tmp_path):
    assert "unknown --compression 'lzma'" in _fails(
        cli, *_convert_args(corpus_dir, tmp_path / "o", tokenizer_dir, "--compression", "lzma")
    )
    assert "unknown --hashes md9" in _fails(
        cli, *_convert_args(corpus_dir, tmp_path / "o", tokenizer_dir, "--hashes", "md9")
    )
    assert "--shard-size" in _fails(
        cli, *_convert_args(corpus_dir, tmp_path / "o", tokenizer_dir, "--shard-size", "lots")
    )
    assert "fewer than one sample" in _fails(
        cli, "convert", corpus_dir, tmp_path / "o", "--tokenizer", tokenizer_dir,
        "--concat-tokens", "100000000", "--workers", "1", "--no-progress",
    )  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_unreachable_object_store(cli, corpus_dir, tokenizer_dir, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    err = _fails(cli, *_convert_args(corpus_dir, "s3://bucket/prefix", tokenizer_dir))
    assert "cannot reach the object store for s3://bucket/prefix" in err
    assert f"S3_ENDPOINT_URL=http://127.0.0.1:{port}" in err


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FoundryError, match="no foundry-data manifest"):
        read_manifest(tmp_path)
    (tmp_path / "foundry_manifest.json").write_text('{"kind": "pretraining"}')
    with pytest.raises(FoundryError, match="not a valid foundry-data manifest"):
        read_manifest(tmp_path)


def test_train_tokenizer_refuses_existing_output(cli, corpus_dir, tokenizer_dir):
    err = _fails(cli, "train-tokenizer", corpus_dir, tokenizer_dir, "--vocab-size", "500")
    assert "already exists" in err


def test_trained_tokenizer_loads_and_round_trips(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "def f(x):\n    return x  # naïve 🎉 東京\n"
    assert len(tok) == 700
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
