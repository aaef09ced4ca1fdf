"""`foundry-data convert-finetuning`: prompt/response and chat records round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from foundry_data import (
    FINETUNING_COLUMNS,
    IGNORE_INDEX,
    decode_finetuning_sample,
    read_manifest,
)
from transformers import AutoTokenizer

MAX = 256


def _records(documents: list[str]) -> tuple[list[dict], list[dict]]:
    pairs = [{"prompt": d[:200], "response": d[200:400]} for d in documents if len(d) > 400]
    chats = [
        {
            "messages": [
                {"role": "system", "content": "Answer from the source code."},
                {"role": "user", "content": d[:120]},
                {"role": "assistant", "content": d[120:220]},
                {"role": "user", "content": "And then? Très bien, continue 🙂"},
                {"role": "assistant", "content": d[220:300]},
            ]
        }
        for d in documents[:5]
    ]
    return pairs, chats


@pytest.fixture(scope="module")
def sft_source(tmp_path_factory: pytest.TempPathFactory, documents: list[str]) -> Path:
    pairs, chats = _records(documents)
    extra = [
        {
            "prompt": "p " * 40,
            "response": "a very long answer " * 200,
        },  # over MAX: truncated/dropped
        {"prompt": "Nothing to learn here", "response": ""},  # empty: left out
    ]
    path = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for record in pairs + chats + extra:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _convert(cli, source, out, tokenizer_dir, *extra):
    code, stdout, stderr = cli(
        "convert-finetuning", source, out, "--tokenizer", tokenizer_dir,
        "--max-seq-len", MAX, "--no-progress", *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return stdout


def test_prompts_and_responses_round_trip(cli, mds, sft_source, tokenizer_dir, documents, tmp_path):
    out = tmp_path / "sft-mds"
    stdout = _convert(cli, sft_source, out, tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs, chats = _records(documents)
    samples = mds.samples(out)
    manifest = read_manifest(out)

    assert manifest.kind == "finetuning" and manifest.columns == FINETUNING_COLUMNS
    info = manifest.finetuning
    assert info is not None
    assert info.num_prompt_response_records == len(pairs) + 2
    assert info.num_chat_records == len(chats)
    assert (info.num_truncated, info.num_dropped, info.num_empty) == (1, 0, 1)
    assert manifest.num_samples == len(samples) == len(pairs) + len(chats) + 1
    assert "1 truncated" in stdout and "1 left out as empty" in stdout

    eos = tok.eos_token
    for record, sample in zip(pairs, samples, strict=False):
        (turn,) = sample["turns"]
        assert tok.decode(turn["input_ids"]) == record["prompt"]
        assert tok.decode(turn["labels"]) == record["response"] + eos
        decoded = decode_finetuning_sample(sample)
        n_prompt = len(turn["input_ids"])
        assert decoded.input_ids.tolist() == turn["input_ids"] + turn["labels"]
        assert (decoded.labels[:n_prompt] == IGNORE_INDEX).all()
        assert np.array_equal(decoded.labels[n_prompt:], decoded.input_ids[n_prompt:])

    for record, sample in zip(chats, samples[len(pairs) :], strict=False):
        turns = sample["turns"]
        assert len(turns) == 2
        rendered = tok.apply_chat_template(record["messages"], tokenize=False)
        pieces = [tok.decode(t[k]) for t in turns for k in ("input_ids", "labels")]
        assert "".join(pieces) == rendered + eos
        assistant = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert pieces[1] == assistant[0] + "<|im_end|>\n"
        assert pieces[3] == assistant[1] + "<|im_end|>\n" + eos
        decoded = decode_finetuning_sample(sample)
        targets = tok.decode(decoded.input_ids[decoded.labels != IGNORE_INDEX].tolist())
        assert targets == pieces[1] + pieces[3]
        last_only = decode_finetuning_sample(sample, target_responses="last")
        assert (
            tok.decode(last_only.input_ids[last_only.labels != IGNORE_INDEX].tolist()) == pieces[3]
        )

    truncated = samples[-1]
    assert len(decode_finetuning_sample(truncated)) == MAX


def test_overlong_records_can_be_dropped(cli, mds, sft_source, tokenizer_dir, tmp_path):
    out = tmp_path / "dropped"
    stdout = _convert(cli, sft_source, out, tokenizer_dir, "--overlong", "drop")
    info = read_manifest(out).finetuning
    assert info is not None and (info.num_truncated, info.num_dropped, info.num_empty) == (0, 1, 1)
    assert "1 dropped as too long" in stdout
    assert all(len(decode_finetuning_sample(s)) <= MAX for s in mds.samples(out))


def test_custom_columns_from_parquet(cli, mds, tokenizer_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    questions = [f"What is {i} + {i}?" for i in range(20)]
    answers = [f"It is {2 * i}." for i in range(20)]
    pq.write_table(pa.table({"q": questions, "a": answers}), tmp_path / "qa.parquet")
    out = tmp_path / "qa"
    _convert(cli, tmp_path / "qa.parquet", out, tokenizer_dir,
             "--prompt-column", "q", "--response-column", "a")  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    samples = mds.samples(out)
    assert [tok.decode(s["turns"][0]["input_ids"]) for s in samples] == questions


def test_decode_reads_the_older_llm_foundry_layout():
    sample = {
        "input_ids": np.array([5, 6, 7], dtype=np.int64).tobytes(),
        "labels": np.array([8, 9], dtype=np.int64).tobytes(),
    }
    decoded = decode_finetuning_sample(sample)
    assert decoded.input_ids.tolist() == [5, 6, 7, 8, 9]
    assert decoded.labels.tolist() == [IGNORE_INDEX] * 3 + [8, 9]
    with pytest.raises(ValueError, match="untokenized"):
        decode_finetuning_sample({"prompt": "x", "response": "y"})


def test_bad_chat_records_are_reported(cli, tokenizer_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        )
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
        + "\n"
    )
    code, _, stderr = cli("convert-finetuning", path, tmp_path / "o", "--tokenizer", tokenizer_dir,
                          "--max-seq-len", "64", "--no-progress")  # fmt: skip
    assert code == 2
    assert f"{path}:2" in stderr and "must end with an 'assistant' message" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "o").exists()

    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    code, _, stderr = cli("convert-finetuning", path, tmp_path / "o", "--tokenizer", tokenizer_dir,
                          "--max-seq-len", "64", "--no-progress")  # fmt: skip
    assert code == 2 and "'question', 'answer'" in stderr and "--prompt-column" in stderr


def test_chat_template_errors_are_one_paragraph(cli, tokenizer_dir, tmp_path):
    """A template with a syntax error, or one that raises for a record (common for roles it does
    not support), is reported with the record's place, not as a jinja traceback."""
    path = tmp_path / "chat.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    path.write_text(json.dumps({"messages": chat}) + "\n")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }}{% endfor }")
    raising = tmp_path / "raising.jinja"
    raising.write_text("{{ raise_exception('this template takes no user role') }}")
    for template, message in [(broken, "the chat template failed"),
                              (raising, "this template takes no user role")]:  # fmt: skip
        code, _, stderr = cli("convert-finetuning", path, tmp_path / "o", "--tokenizer",
                              tokenizer_dir, "--max-seq-len", "64", "--chat-template", template,
                              "--no-progress")  # fmt: skip
        assert code == 2 and message in stderr and f"{path}:1" in stderr, stderr
        assert "Traceback" not in stderr
        assert not (tmp_path / "o").exists()


def test_a_prompt_filling_max_seq_len_is_counted_as_too_long(cli, tokenizer_dir, tmp_path):
    """With --overlong truncate, a record whose prompt alone fills --max-seq-len keeps no response:
    it is counted as dropped (too long), not as empty."""
    path = tmp_path / "long.jsonl"
    rows = [
        {"prompt": "word " * 40, "response": "yes"},  # the prompt alone is too long
        {"prompt": "hi", "response": ""},  # empty
        {"prompt": "hi", "response": "ok"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    code, stdout, stderr = cli("convert-finetuning", path, out, "--tokenizer", tokenizer_dir,
                               "--max-seq-len", "8", "--overlong", "truncate",
                               "--no-progress")  # fmt: skip
    assert code == 0, stderr
    assert "1 dropped as too long" in stdout and "1 left out as empty" in stdout, stdout
    only_long = tmp_path / "only.jsonl"
    only_long.write_text(json.dumps(rows[0]) + "\n")
    code, _, stderr = cli("convert-finetuning", only_long, tmp_path / "o2", "--tokenizer",
                          tokenizer_dir, "--max-seq-len", "8", "--overlong", "truncate",
                          "--no-progress")  # fmt: skip
    assert code == 2 and "1 too long" in stderr and "0 empty" in stderr, stderr
    assert "use --overlong truncate" not in stderr  # the option already in effect
