"""Reading a plain tokenizer directory without transformers gives what transformers gives; any
directory transformers might change goes through transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from foundry_data.backend_tokenizer import (
    BackendTokenizer,
    load_backend_tokenizer,
    read_plain_tokenizer,
)
from foundry_data.tokenizer_loading import load_tokenizer

PROBES = [
    "def main():\n    return 42  # done\n",
    " leading space, naïve café, 東京 🎉 <|endoftext|> after <|im_start|>user",
]


def _through_transformers(path: Path) -> BackendTokenizer:
    tok = load_tokenizer(str(path))
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


def _assert_same(ours: BackendTokenizer, reference: BackendTokenizer) -> None:
    assert ours == reference  # name, JSON, vocab size, special tokens
    for text in PROBES:
        assert ours.encode_plain(text) == reference.encode_plain(text)


def test_a_trained_tokenizer_is_read_without_transformers(tokenizer_dir):
    plain = read_plain_tokenizer(tokenizer_dir)
    assert plain is not None
    _assert_same(plain, _through_transformers(tokenizer_dir))
    assert plain.eos_token == "<|endoftext|>"
    assert load_backend_tokenizer(str(tokenizer_dir)) == plain


def _variant(tokenizer_dir: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    edit(out, config)
    config_path.write_text(json.dumps(config))
    return out


def _with_added_tokens_decoder(out: Path, config: dict) -> None:
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    config["added_tokens_decoder"] = {
        str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in tokenizer["added_tokens"]
    }


def test_a_config_listing_the_same_added_tokens_is_still_plain(tokenizer_dir, tmp_path):
    path = _variant(tokenizer_dir, tmp_path, _with_added_tokens_decoder)
    plain = read_plain_tokenizer(path)
    assert plain is not None
    _assert_same(plain, _through_transformers(path))


def _new_special_token(out: Path, config: dict) -> None:
    config["pad_token"] = "<|not-in-the-vocabulary|>"


def _changed_added_token(out: Path, config: dict) -> None:
    _with_added_tokens_decoder(out, config)
    config["added_tokens_decoder"]["0"]["lstrip"] = True


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_new_special_token, id="special token transformers would add"),
        pytest.param(_changed_added_token, id="added token with other settings"),
        pytest.param(lambda out, c: c.update(add_prefix_space=True), id="unknown config key"),
        pytest.param(lambda out, c: c.update(tokenizer_class="GPT2Tokenizer"), id="model class"),
        pytest.param(lambda out, c: (out / "config.json").write_text("{}"), id="model config"),
        pytest.param(
            lambda out, c: (out / "special_tokens_map.json").write_text("{}"), id="tokens map"
        ),
    ],
)
def test_directories_transformers_may_change_go_through_transformers(tokenizer_dir, tmp_path, edit):
    path = _variant(tokenizer_dir, tmp_path, edit)
    assert read_plain_tokenizer(path) is None
    _assert_same(load_backend_tokenizer(str(path)), _through_transformers(path))


def test_pretraining_conversion_does_not_import_torch(corpus_dir, tokenizer_dir, tmp_path):
    """The point of the plain path and of foundry-data's own MDS writer: a conversion imports
    neither transformers nor streaming, each of which imports torch."""
    out = tmp_path / "out"
    script = (
        "import sys\n"
        "from foundry_data.cli import main\n"
        f"code = main(['convert', {str(corpus_dir)!r}, {str(out)!r}, '--tokenizer', "
        f"{str(tokenizer_dir)!r}, '--concat-tokens', '64', '--workers', '2', '--no-progress'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'streaming') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr
    assert (out / "index.json").is_file()
