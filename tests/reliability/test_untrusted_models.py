"""Untrusted model directories: remote code and pickled weights never run unless asked.

Two planted directories, each loaded by every package that reads models or tokenizers:
- ``remote-code``: config.json and tokenizer_config.json with an ``auto_map`` naming a Python file
  in the directory; importing that file creates a marker file.
- ``pickled-weights``: a Llama config.json beside a ``pytorch_model.bin`` whose pickle runs a shell
  command (creating a marker) when unpickled without ``weights_only``.
Each loader must refuse (or ignore the payload), and the marker must never appear. A positive
control at the end shows both payloads are live: trust_remote_code=True, and a plain
``torch.load(weights_only=False)``, do create their markers.

The composer-checkpoint side (a pickle planted in a training checkpoint, refused by autoresume,
load_path and export-hf, full and sharded) is foundry-train's tests/test_checkpoint_safety.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

EVIL_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")
from transformers import PretrainedConfig, PreTrainedTokenizerFast

class EvilConfig(PretrainedConfig):
    model_type = "foundry_evil"

class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def remote_code_dir(tmp_path: Path, tiny_llama_dir: Path) -> tuple[Path, Path]:
    marker = tmp_path / "remote-code-ran"
    out = tmp_path / "remote-code"
    shutil.copytree(tiny_llama_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(
        model_type="foundry_evil",
        architectures=["EvilForCausalLM"],
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilConfig"},
    )
    (out / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    tok_config["tokenizer_class"] = "EvilTokenizer"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (out / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    return out, marker


@pytest.fixture
def pickled_weights_dir(tmp_path: Path, tiny_llama_dir: Path) -> tuple[Path, Path]:
    from safetensors.torch import load_file

    marker = tmp_path / "pickle-ran"
    out = tmp_path / "pickled-weights"
    shutil.copytree(tiny_llama_dir, out)
    weights = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.save({**weights, "payload": _Payload(marker)}, out / "pytorch_model.bin")
    return out, marker


def _refused(call, *errors: type[BaseException]) -> str:
    with pytest.raises(errors) as info:
        call()
    return str(info.value)


def test_remote_code_is_never_executed_unless_asked(remote_code_dir, tmp_path: Path) -> None:
    import foundry_data.errors
    import foundry_eval.errors
    import foundry_infer.errors
    import foundry_train.errors
    from foundry_data.tokenizer_loading import load_tokenizer as data_tokenizer
    from foundry_eval.config import ModelConfig as EvalModel
    from foundry_eval.model_loading import load_model as eval_model
    from foundry_eval.model_loading import load_tokenizer as eval_tokenizer
    from foundry_infer.engines import load_engine
    from foundry_infer.model_dir import load_tokenizer as infer_tokenizer
    from foundry_train.config.sections import ModelConfig as TrainModel
    from foundry_train.model import build_composer_model

    path, marker = remote_code_dir
    cfg = EvalModel(path=str(path))
    message = _refused(
        lambda: eval_model(cfg, torch.device("cpu")), foundry_eval.errors.FoundryError
    )
    assert str(path) in message
    _refused(lambda: eval_tokenizer(cfg), foundry_eval.errors.FoundryError)
    _refused(lambda: load_engine(str(path), "torch"), foundry_infer.errors.FoundryError)
    with contextlib.suppress(foundry_infer.errors.FoundryError):  # refusing is fine too
        infer_tokenizer(str(path))
    _refused(lambda: data_tokenizer(str(path)), foundry_data.errors.FoundryError)
    hf = TrainModel(name="hf_causal_lm", pretrained_model_name_or_path=str(path), pretrained=True)
    _refused(lambda: build_composer_model(hf, 32), foundry_train.errors.FoundryError)
    assert not marker.exists(), "a loader executed code shipped inside a model directory"

    # Positive control: asked explicitly, transformers does run it (so the payload is live).
    from transformers import AutoConfig

    AutoConfig.from_pretrained(str(path), trust_remote_code=True)
    assert marker.read_text() == "remote code ran"


def test_pickled_weights_are_never_unpickled_unsafely(pickled_weights_dir) -> None:
    from foundry_eval.config import ModelConfig as EvalModel
    from foundry_eval.model_loading import load_model as eval_model
    from foundry_infer.engines import load_engine
    from foundry_models import import_hf
    from foundry_train.config.sections import ModelConfig as TrainModel
    from foundry_train.model import build_composer_model

    path, marker = pickled_weights_dir
    hf = TrainModel(name="hf_causal_lm", pretrained_model_name_or_path=str(path), pretrained=True)
    loaders = {
        "foundry-eval": lambda: eval_model(EvalModel(path=str(path)), torch.device("cpu")),
        "foundry-infer": lambda: load_engine(str(path), "torch"),
        "foundry-train": lambda: build_composer_model(hf, 32),
        "foundry-models": lambda: import_hf(str(path)),
    }
    for name, load in loaders.items():
        with pytest.raises(Exception):  # noqa: B017 (any refusal; clear errors: tests below)
            load()
        assert not marker.exists(), f"{name} unpickled a weights file with weights_only=False"

    torch.load(path / "pytorch_model.bin", weights_only=False)  # positive control
    assert marker.exists()


def test_refused_pickled_weights_are_a_clear_error_in_eval(pickled_weights_dir) -> None:
    import foundry_eval.errors
    from foundry_eval.config import ModelConfig as EvalModel
    from foundry_eval.model_loading import load_model as eval_model

    path, _ = pickled_weights_dir
    message = _refused(
        lambda: eval_model(EvalModel(path=str(path)), torch.device("cpu")),
        foundry_eval.errors.FoundryError,
    )
    assert str(path) in message


def test_refused_pickled_weights_are_a_clear_error_in_train(pickled_weights_dir) -> None:
    import foundry_train.errors
    from foundry_train.config.sections import ModelConfig as TrainModel
    from foundry_train.model import build_composer_model

    path, _ = pickled_weights_dir
    hf = TrainModel(name="hf_causal_lm", pretrained_model_name_or_path=str(path), pretrained=True)
    _refused(lambda: build_composer_model(hf, 32), foundry_train.errors.FoundryError)


def test_refused_pickled_weights_are_a_clear_error_in_infer(pickled_weights_dir, capsys) -> None:
    from foundry_infer.cli import main

    path, marker = pickled_weights_dir
    code = main(["generate", str(path), "--prompt", "hello", "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert not marker.exists()


def test_refused_pickled_weights_are_a_clear_error_in_infer_export_onnx(
    pickled_weights_dir, tmp_path: Path, capsys
) -> None:
    from foundry_infer.cli import main

    path, marker = pickled_weights_dir
    code = main(["export-onnx", str(path), str(tmp_path / "onnx")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert str(path) in errors[0] and "refused" in errors[0]
    assert not marker.exists() and not (tmp_path / "onnx").exists()


def _duplicate_entry_checkpoint(out: Path, first: bytes, second: bytes) -> Path:
    """A torch zip checkpoint holding ``data.pkl`` twice (zip allows duplicate names)."""
    with zipfile.ZipFile(io.BytesIO(first)) as src, zipfile.ZipFile(out, "w") as dst:
        pickle_name = next(n for n in src.namelist() if n.endswith("data.pkl"))
        other = zipfile.ZipFile(io.BytesIO(second))
        other_pickle = other.read(next(n for n in other.namelist() if n.endswith("data.pkl")))
        for name in src.namelist():
            if name == pickle_name:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Duplicate name" is the point here
                    dst.writestr(name, src.read(name))
                    dst.writestr(name, other_pickle)
            else:
                dst.writestr(name, src.read(name))
    return out


def test_checkpoint_with_a_duplicated_pickle_entry_cannot_smuggle_code(tmp_path: Path) -> None:
    """A zip with two data.pkl entries: the scanner and torch.load must read the same one."""
    from foundry_train.checkpointing.safety import scan_checkpoint
    from foundry_train.errors import CheckpointSecurityError

    marker = tmp_path / "smuggled"
    clean, evil = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.zeros(2)}, clean)
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, evil)
    refused = []
    for order, (a, b) in {"evil-first": (evil, clean), "evil-last": (clean, evil)}.items():
        path = _duplicate_entry_checkpoint(tmp_path / f"{order}.pt", a.getvalue(), b.getvalue())
        try:
            scan_checkpoint(path)
        except CheckpointSecurityError:
            refused.append(order)  # refused: nothing is loaded
            continue
        # passed the scan: loading it the way composer does must not run the payload
        torch.load(path, map_location="cpu", weights_only=False)
        assert not marker.exists(), f"{order}: the scanner read a different data.pkl than torch"
    assert refused, "the payload was seen in neither order"
