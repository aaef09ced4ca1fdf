"""The foundry-infer command line, run in-process through ``main``."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
from foundry_infer import FoundryError, OrtEngine, SamplingParams
from foundry_infer.cli import main


def test_generate_streams_same_text_from_hf_and_onnx(trained_llama_dir, llama_onnx_dir, capsys):
    texts = []
    for model in (trained_llama_dir, llama_onnx_dir):
        assert (
            main(
                [
                    "generate",
                    str(model),
                    "--prompt",
                    "def main(",
                    "--max-new-tokens",
                    "16",
                    "--temperature",
                    "0",
                ]
            )
            == 0
        )
        out, err = capsys.readouterr()
        texts.append(out)
        assert "tokens generated in" in err
    assert texts[0] == texts[1] and texts[0].strip()


def test_generate_sampling_is_reproducible_with_seed(llama_onnx_dir, capsys):
    args = [
        "generate",
        str(llama_onnx_dir),
        "--prompt",
        "class ",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-p",
        "0.9",
        "--top-k",
        "50",
        "--seed",
        "3",
    ]
    outs = []
    for _ in range(2):
        assert main(args) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_chat_reads_turns_and_streams_replies(llama_onnx_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("def engine\n\nclass Batch\n/exit\nnever read\n"))
    assert (
        main(["chat", str(llama_onnx_dir), "--max-new-tokens", "8", "--system", "Be brief."]) == 0
    )
    out = capsys.readouterr().out
    # stdin is not a TTY: each turn is marked, the user's line echoed, a blank line between turns
    assert out.startswith("user> def engine\nassistant> ")
    assert "\n\nuser> class Batch\nassistant> " in out and out.endswith("\n\n")
    assert out.count("assistant> ") == 2 and "never read" not in out


def test_export_onnx_int8_cli_for_gpt2_then_generate(gpt2_dir, tmp_path, capsys):
    out_dir = tmp_path / "gpt2-int8"
    assert main(["export-onnx", str(gpt2_dir), str(out_dir), "--int8"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff vs torch (fp32 graph)" in printed and "int8 graph" in printed
    assert OrtEngine(out_dir, provider="cpu").manifest.quantization == "int8"
    assert not list(tmp_path.glob(".gpt2-int8.tmp-*"))  # no half-written output left behind
    assert main(["generate", str(out_dir), "--prompt", "x", "--max-new-tokens", "4"]) == 0


def test_bench_reports_rows(llama_onnx_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                str(llama_onnx_dir),
                "--batch-sizes",
                "1,3",
                "--prompt-tokens",
                "8",
                "--new-tokens",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(r["tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["per_token_ms"] > 0 for r in rows)
    assert "tokens/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "/no/such/model", "--prompt", "x"], "does not exist"),
        (["generate", "{tmp}", "--prompt", "x"], "neither a Hugging Face"),
        (["export-onnx", "{hf}", "{onnx}"], "already exists"),
        # --overwrite onto the source deleted the model being exported (it became the export)
        (["export-onnx", "{hf}", "{hf}", "--overwrite"], "is the source model"),
        (["generate", "{onnx}", "--prompt", "x", "--top-p", "2"], "top_p"),
        (["generate", "{onnx}", "--prompt", "x", "--max-new-tokens", "100000"], "exceeds"),
        (["generate", "{onnx}", "--backend", "torch", "--prompt", "x"], "--backend torch"),
        (["bench", "{onnx}", "--backends", "tpu"], "unknown backend"),
        (["serve", "{onnx}", "--host", "999.1.1.1"], "not an address of this machine"),
    ],
)
def test_user_errors_are_one_paragraph_exit_2(
    argv, message, trained_llama_dir, llama_onnx_dir, tmp_path, capsys
):
    values = {"tmp": str(tmp_path), "hf": str(trained_llama_dir), "onnx": str(llama_onnx_dir)}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("port", ["99999", "0", "eighty"])
def test_serve_refuses_a_port_outside_1_to_65535(port, llama_onnx_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(llama_onnx_dir), "--port", port])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"'{port}' is not a TCP port: give a whole number from 1 to 65535" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["generate", "chat", "export-onnx", "serve", "bench"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_chat_drops_oldest_turns_when_history_outgrows_the_context(llama_onnx_dir, capsys):
    from foundry_infer import load_tokenizer, read_generation_defaults
    from foundry_infer.chat import chat_loop, fit_history

    engine = OrtEngine(llama_onnx_dir, provider="cpu")  # 256 positions
    tokenizer = load_tokenizer(llama_onnx_dir)
    defaults = read_generation_defaults(llama_onnx_dir, tokenizer)
    turns = [f"def function_number_{i}(self, engine, tokenizer, defaults):" for i in range(8)]
    chat_loop(
        engine,
        tokenizer,
        defaults,
        SamplingParams(),
        40,
        system="You write Python.",
        stdin=io.StringIO("\n".join(turns) + "\n"),
    )
    out, err = capsys.readouterr()
    assert "dropped the" in err and "system message is kept" in err
    assert out.count("\n") >= 8  # every turn was answered; the session did not end
    messages = [{"role": "system", "content": "S"}]
    for i, turn in enumerate(turns):
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": f"r{i}"}]
    messages.append({"role": "user", "content": "last"})
    ids, dropped = fit_history(tokenizer, messages, 40, 256)
    assert dropped > 0 and len(ids) + 40 <= 256
    assert messages[0]["content"] == "S" and messages[-1]["content"] == "last"
    assert messages[1]["role"] == "user"  # a turn goes with its reply
    with pytest.raises(FoundryError, match="too long"):
        fit_history(tokenizer, [{"role": "user", "content": "word " * 300}], 40, 256)


def test_generate_reports_the_tokens_it_generated(llama_onnx_dir, tokenizer, capsys):
    from foundry_infer import SequenceState, generate_tokens, load_tokenizer

    engine = OrtEngine(llama_onnx_dir, provider="cpu")
    ids = load_tokenizer(llama_onnx_dir)("def main(").input_ids
    eos = frozenset({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")})
    expected = len(list(generate_tokens(engine, SequenceState(ids, 40, eos_token_ids=eos))))
    argv = ["generate", str(llama_onnx_dir), "--prompt", "def main(", "--max-new-tokens", "40"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"] {expected} tokens generated in " in err  # sampled tokens, not re-tokenized text


def test_onnx_output_folders_follow_the_umask(llama_onnx_dir, llama_int8_dir, gpt2_dir, tmp_path):
    from foundry_infer import export_onnx

    old = os.umask(0o022)
    try:
        out = tmp_path / "gpt2-onnx"
        export_onnx(gpt2_dir, out, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.onnx").stat().st_mode) == 0o644
    want = 0o777 & ~old  # the session's fixtures were written under the test run's umask
    for folder in (llama_onnx_dir, llama_int8_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == want, oct(folder.stat().st_mode)


def test_serve_flags_name_context_and_dtype(trained_llama_dir, llama_onnx_dir):
    import torch
    from foundry_infer.cli import build_parser
    from foundry_infer.server import APIError
    from foundry_infer.serving import build_service

    def service(*flags):
        return build_service(build_parser().parse_args(["serve", *map(str, flags)]))

    served = service(
        trained_llama_dir,
        "--served-model-name",
        "mine",
        "--max-model-len",
        64,
        "--dtype",
        "bfloat16",
    )
    try:
        assert served.settings.model_name == "mine" and served.max_positions == 64
        assert served.engine.dtype == torch.bfloat16
        served.check_prompt([1] * 50, 14, "prompt")  # 64 positions: fits
        with pytest.raises(APIError) as refused:
            served.check_prompt([1] * 50, 15, "prompt")
        assert refused.value.code == "context_length_exceeded"
    finally:
        served.close()
    alias = service(llama_onnx_dir, "--model-name", "old-flag")
    try:
        assert alias.settings.model_name == "old-flag" and alias.max_positions == 256
    finally:
        alias.close()
    with pytest.raises(FoundryError, match="float32"):
        service(llama_onnx_dir, "--dtype", "float16")
    with pytest.raises(FoundryError, match="256 positions"):
        service(llama_onnx_dir, "--max-model-len", 1000)


def test_sampling_options_without_temperature_sample(llama_onnx_dir, capsys):
    """--top-p, --top-k or --seed without --temperature ask for sampling: the model's default
    temperature, said on stderr (they were silently ignored: greedy decoding, the same text for
    every seed); --temperature 0 stays greedy."""
    base = ["generate", str(llama_onnx_dir), "--prompt", "class ", "--max-new-tokens", "12"]
    texts = set()
    for seed in ("1", "2", "3", "4"):
        assert main([*base, "--top-k", "50", "--seed", seed]) == 0
        captured = capsys.readouterr()
        assert "sampling at temperature 1" in captured.err and "--top-k, --seed" in captured.err
        texts.add(captured.out)
    assert len(texts) > 1  # the seeds draw different texts
    assert main([*base, "--top-k", "50", "--seed", "1", "--temperature", "0"]) == 0
    greedy = capsys.readouterr()
    assert main(base) == 0
    assert capsys.readouterr().out == greedy.out and "sampling at" not in greedy.err
