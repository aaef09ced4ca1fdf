"""Generated malformed input for the three command lines that take configs and flags.

Hypothesis breaks a valid training config (``foundry-train validate``), a valid eval config
(``foundry-eval CONFIG.yaml``) and valid ``foundry-data`` command lines in many ways: wrong types,
out-of-range numbers, NaN and huge values, unknown and typo'd keys, deleted keys, sections
replaced by scalars, non-mapping documents, broken YAML, YAML tags that would build Python objects,
malformed dotted overrides, and bad paths and option values. Each CLI runs in this process through
its ``main()`` with stdout/stderr captured. The rule checked on every example: the command ends
with exit status 0 (the input happened to be valid) or 2 with a message starting ``error:`` (or
argparse's ``usage:`` for a malformed flag); never a traceback, never another exception; an
unknown key is named in the message; a failed conversion leaves no output and no work folder.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

EXAMPLES = 60
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run and in CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
_counter = itertools.count()

# --------------------------------------------------------------------------- generic mutations

JUNK_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**63, float("nan"), float("inf"), float("-inf"), -0.0, 1e-320]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "1ba", "-5ba", "0.0dur", "1e9ep", "auto", "none", "~", "../..", "🙂"]
    ),
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=2),
)
KEY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00.="),
    min_size=1,
    max_size=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and list indices) to a value inside ``node``."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn, base: dict[str, Any]) -> tuple[Any, list[str]]:
    """A broken copy of ``base`` and the unknown keys it was given (to be named in errors)."""
    doc: Any = copy.deepcopy(base)
    unknown: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "set", "set", "unknown", "typo", "delete", "scalar"]))
        paths = _paths(doc)
        if not isinstance(doc, dict) or not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if kind == "set":
            parent[path[-1]] = draw(JUNK_VALUES)
        elif kind == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind in ("unknown", "typo"):
            target = parent if isinstance(parent, dict) else doc
            if kind == "typo" and isinstance(path[-1], str):
                key = path[-1] + draw(st.sampled_from(["s", "_", "x"]))
            else:
                key = "zz_" + draw(KEY_TEXT)
            if key not in target:
                target[key] = draw(JUNK_VALUES)
                if target is doc or all(isinstance(p, str) for p in path[:-1]):
                    unknown.append(key)
        elif kind == "scalar":
            parent[path[-1]] = draw(st.sampled_from([1, "x", None, [], True]))
    if draw(st.integers(0, 9)) == 0:  # now and then the document is no mapping at all
        doc = draw(st.sampled_from([[1, 2], "just text", 42, None, [{"model": {}}]]))
        unknown = []
    return doc, unknown


BROKEN_YAML = st.sampled_from(
    [
        "model: [unclosed\n",
        "model:\n\t- tab indented\n",
        "a: b: c\n",
        "!!python/object/apply:os.system ['touch /tmp/foundry-yaml-pwned']\n",
        "model: !!python/name:os.system\n",
        "{{{{\n",
        "key: &a [*a]\n",
        "\x00\x01\x02",
        "- - - -\n",
    ]
)
OVERRIDES = st.lists(
    st.one_of(
        st.sampled_from(["=1", "novalue", "a..b=1", ".=2", "x=[unclosed", "model=3", "=", "a.=1"]),
        st.builds(lambda k, v: f"{k}={v}", KEY_TEXT, st.text(max_size=8)),
    ),
    max_size=2,
)


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:  # e.g. a NaN inside a key is still dumpable; anything else: repr
        return repr(doc)


def _run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """Run a CLI's main() in this process; exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return int(code), out.getvalue(), err.getvalue()


def _assert_clear(code: int, stderr: str, argv: list[str]) -> None:
    event(f"exit status {code}")
    assert "Traceback" not in stderr, (argv, stderr)
    assert code in (0, 2), (argv, code, stderr)
    if code == 2:
        assert stderr.startswith(("error: ", "usage: ")), (argv, stderr)


def _mentions(stderr: str, key: str) -> bool:
    return key in stderr or repr(key) in stderr or repr(key)[1:-1] in stderr


# --------------------------------------------------------------------------- foundry-train


@pytest.fixture(scope="module")
def train_base(tokenizer_dir: Path, pretrain_dir: Path) -> dict[str, Any]:
    return {
        "run_name": "fuzz",
        "max_seq_len": 32,
        "model": {"name": "mpt", "preset": "debug", "config_overrides": {"n_layers": 1}},
        "tokenizer": {"name": str(tokenizer_dir)},
        "train_loader": {"dataset": {"local": str(pretrain_dir)}, "shuffle": True},
        "optimizer": {"name": "decoupled_adamw", "lr": 3e-3, "betas": [0.9, 0.95]},
        "scheduler": {"name": "cosine_with_warmup", "t_warmup": "2ba"},
        "max_duration": "10ba",
        "global_train_batch_size": 8,
        "device_train_microbatch_size": 4,
        "precision": "fp32",
        "save_folder": "/nonexistent-foundry-fuzz/ckpt",
        "save_interval": "2ba",
        "callbacks": {"speed_monitor": {"window_size": 5}, "loss_spike": {"window": 10}},
        "fsdp_config": None,
    }


def test_train_validate_accepts_the_base_config(train_base, tmp_path):
    from foundry_train.cli import main

    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(train_base))
    code, out, err = _run(main, ["validate", str(path)])
    assert code == 0 and "OK" in out, err


@SETTINGS
@given(data=st.data())
def test_malformed_train_configs_give_clear_errors(train_base, tmp_path_factory, data):
    from foundry_train.cli import main

    folder = tmp_path_factory.getbasetemp() / f"train-fuzz-{next(_counter)}"
    folder.mkdir()
    path = folder / "cfg.yaml"
    if data.draw(st.integers(0, 11)) == 0:
        path.write_text(data.draw(BROKEN_YAML))
        unknown: list[str] = []
    else:
        doc, unknown = data.draw(mutated_documents(train_base))
        path.write_text(_dump(doc))
    overrides = data.draw(OVERRIDES)
    argv = ["validate", str(path), *overrides]
    code, _, stderr = _run(main, argv)
    _assert_clear(code, stderr, argv)
    assert not Path("/tmp/foundry-yaml-pwned").exists()
    if code == 2 and not overrides and unknown and stderr.startswith("error: "):
        assert any(_mentions(stderr, k) for k in unknown), (unknown, stderr)


# --------------------------------------------------------------------------- foundry-eval


@pytest.fixture(scope="module")
def eval_base(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("eval-fuzz")
    (root / "data").mkdir()
    return {
        "model": {"path": str(root / "no-model"), "dtype": "float32", "trust_remote_code": False},
        "data_root": str(root / "data"),
        "tasks": [
            {
                "label": "piqa",
                "dataset_uri": "commonsense_reasoning/piqa.jsonl",
                "icl_task_type": "multiple_choice",
                "num_fewshot": [0, 1],
                "continuation_delimiter": " ",
            },
            {
                "label": "lambada",
                "dataset_uri": "language_understanding/lambada.jsonl",
                "icl_task_type": "language_modeling",
                "num_fewshot": 0,
            },
        ],
        "gauntlet": {
            "weighting": "EQUAL",
            "categories": [
                {
                    "name": "reasoning",
                    "benchmarks": [{"name": "piqa", "num_fewshot": 0, "random_baseline": 0.5}],
                }
            ],
        },
        "task_names": ["piqa", "lambada"],
        "batch_size": 4,
        "limit": 2,
        "device": "cpu",
        "progress": False,
        "output": {"json": str(root / "out.json"), "overwrite": False},
    }


@SETTINGS
@given(data=st.data())
def test_malformed_eval_configs_give_clear_errors(eval_base, tmp_path_factory, data):
    from foundry_eval.cli import main

    folder = tmp_path_factory.getbasetemp() / f"eval-fuzz-{next(_counter)}"
    folder.mkdir()
    path = folder / "eval.yaml"
    if data.draw(st.integers(0, 11)) == 0:
        path.write_text(data.draw(BROKEN_YAML))
        unknown: list[str] = []
    else:
        doc, unknown = data.draw(mutated_documents(eval_base))
        path.write_text(_dump(doc))
    overrides = data.draw(OVERRIDES)
    argv = [str(path), *overrides]
    code, _, stderr = _run(main, argv)
    _assert_clear(code, stderr, argv)
    assert code == 2, "no task data exists, so no eval can succeed"
    assert not Path("/tmp/foundry-yaml-pwned").exists()
    if not overrides and unknown and stderr.startswith("error: invalid"):
        assert any(_mentions(stderr, k) for k in unknown), (unknown, stderr)


# --------------------------------------------------------------------------- foundry-data


@pytest.fixture(scope="module")
def data_inputs(tmp_path_factory, tokenizer_dir: Path, pretrain_dir: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data-fuzz-inputs")
    good = root / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document {i} " * 30}) + "\n" for i in range(4)))
    sft = root / "sft.jsonl"
    sft.write_text(
        "".join(json.dumps({"prompt": f"q{i}?", "response": f" a{i}."}) + "\n" for i in range(4))
    )
    bad = root / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": unterminated\n[1, 2]\n')
    binary = root / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    fake_parquet = root / "fake.parquet"
    fake_parquet.write_text("this is not parquet")
    csv = root / "table.csv"
    csv.write_text("body,n\nhello,1\n")
    empty_dir = root / "empty"
    empty_dir.mkdir()
    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("keep me")
    existing_file = root / "existing-file"
    existing_file.write_text("keep me too")
    return {
        "good": str(good), "sft": str(sft), "bad": str(bad), "binary": str(binary),
        "fake_parquet": str(fake_parquet), "csv": str(csv), "empty_dir": str(empty_dir),
        "missing": str(root / "missing.jsonl"), "glob": str(root / "*.nothing"),
        "hub": "no-such-org/no-such-dataset", "existing": str(existing),
        "existing_file": str(existing_file),
        "tokenizer": str(tokenizer_dir), "dataset": str(pretrain_dir), "root": str(root),
    }  # fmt: skip


SMALL_INTS = st.one_of(
    st.integers(-5, 70).map(str), st.sampled_from(["0", "-1", "1e3", "ten", "", "0x10", "4.5"])
)
INTS = st.one_of(SMALL_INTS, st.just("99999999999"))
# --vocab-size 99999999999 aborts the whole process inside the tokenizers library (see
# test_huge_vocab_size_is_a_clear_error below), so in-process examples keep it small.


@st.composite
def data_argv(draw: st.DrawFn, inputs: dict[str, str], out: str) -> list[str]:
    command = draw(st.sampled_from(["convert", "convert-finetuning", "train-tokenizer", "inspect"]))
    sources = ["good", "sft", "bad", "binary", "fake_parquet", "csv", "empty_dir", "missing",
               "glob", "hub"]  # fmt: skip
    source = inputs[draw(st.sampled_from(sources))]
    output = draw(
        st.sampled_from([out, out, inputs["existing"], inputs["existing_file"], "s3://bucket/x"])
    )
    tokenizer = draw(
        st.sampled_from([inputs["tokenizer"], inputs["tokenizer"], inputs["root"], "no/such-tok"])
    )
    if command == "inspect":
        dataset = draw(st.sampled_from([inputs["dataset"], inputs["empty_dir"], inputs["missing"]]))
        argv = [command, dataset]
        if draw(st.booleans()):
            argv += ["--sample", draw(INTS)]
        if draw(st.booleans()):
            argv += ["--max-chars", draw(INTS)]
        if draw(st.booleans()):
            argv += ["--tokenizer", tokenizer]
    elif command == "train-tokenizer":
        argv = [command, source, output, "--vocab-size", draw(SMALL_INTS)]
        if draw(st.booleans()):
            argv += ["--min-frequency", draw(INTS)]
    else:
        length_flag = "--concat-tokens" if command == "convert" else "--max-seq-len"
        argv = [command, source, output, "--tokenizer", tokenizer, length_flag, draw(INTS)]
        if command == "convert":
            argv += ["--workers", draw(st.sampled_from(["1", "-1", "two"]))]
    optional = {
        "--shard-size": st.sampled_from(["1KiB", "0", "-1", "lots", "1TiB", "12", "1.5MB"]),
        "--compression": st.sampled_from(["zstd", "none", "lzma", "zstd:99", "gz", ""]),
        "--hashes": st.sampled_from(["sha1", "md9", "none", ",", "xxh64,sha1"]),
        "--text-column": st.sampled_from(["text", "body", "", "🙂"]),
        "--split": st.sampled_from(["train", "nope"]),
        "--local": st.sampled_from([inputs["existing"], out + "-local"]),
    }
    if command != "inspect":
        for flag, values in optional.items():
            if draw(st.integers(0, 3)) == 0:
                argv += [flag, draw(values)]
        if draw(st.integers(0, 5)) == 0:
            argv += [draw(st.sampled_from(["--nope", "--overwrite", "--reader=datasets", "-x"]))]
    if command != "inspect":
        argv.append("--no-progress")
    return argv


@pytest.fixture
def offline(monkeypatch):
    """No hub and no real object store: fail fast instead of waiting on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@SETTINGS
@given(data=st.data())
def test_malformed_foundry_data_arguments_give_clear_errors(
    data_inputs, offline, tmp_path_factory, data
):
    from foundry_data.cli import main

    folder = tmp_path_factory.getbasetemp() / f"data-fuzz-{next(_counter)}"
    folder.mkdir()
    out = str(folder / "out")
    argv = data.draw(data_argv(data_inputs, out))
    code, _, stderr = _run(main, argv)
    _assert_clear(code, stderr, argv)
    if code == 2:
        assert not Path(out).exists(), f"a failed command left output behind: {argv}"
    assert not list(folder.glob("*.tmp-*")), f"work folder left behind: {argv}"
    existing = Path(data_inputs["existing"])
    if "--overwrite" not in argv:
        assert (existing / "keep.txt").read_text() == "keep me", argv
        assert Path(data_inputs["existing_file"]).read_text() == "keep me too", argv
    else:  # --overwrite may have replaced them: restore both for the examples that follow
        shutil.rmtree(existing, ignore_errors=True)
        existing.mkdir(exist_ok=True)
        (existing / "keep.txt").write_text("keep me")
        existing_file = Path(data_inputs["existing_file"])
        if existing_file.is_dir():
            shutil.rmtree(existing_file)
        existing_file.unlink(missing_ok=True)
        existing_file.write_text("keep me too")


# --------------------------------------------------------------------------- found by fuzzing


def test_eval_config_whose_tasks_expand_to_nothing_is_a_clear_error(eval_base, tmp_path):
    from foundry_eval.cli import main

    doc = copy.deepcopy(eval_base)
    doc["tasks"] = [{**doc["tasks"][0], "num_fewshot": []}]
    doc["task_names"] = None
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, stderr = _run(main, [str(path)])
    assert code == 2 and stderr.startswith("error: "), stderr


def test_huge_vocab_size_is_a_clear_error(data_inputs, tmp_path):
    import subprocess
    import sys

    # In a child process: the failure being guarded against kills the process that hits it.
    result = subprocess.run(
        [sys.executable, "-m", "foundry_data", "train-tokenizer", data_inputs["good"],
         str(tmp_path / "tok"), "--vocab-size", "99999999999", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and "vocab-size" in result.stderr
    assert not (tmp_path / "tok").exists()
