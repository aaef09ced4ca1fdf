"""One user-error surface: every command line prints any Foundry package's user error, and an
OSError about a path, as one ``error:`` paragraph with exit status 2 and no traceback.

In-process, each command's first step is replaced by one that raises the error (cheap); then one
real user error per command runs as a subprocess. A bug (any other exception) still propagates.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _pipeline_module() -> ModuleType:
    # `python pipeline.py` puts the script's folder on sys.path (for pipeline_stages/); loading
    # it by path does not, and `uv run pytest` does not add the working directory either
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("foundry_pipeline_script", ROOT / "pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _errors() -> dict[str, BaseException]:
    import foundry_data.errors
    import foundry_eval.errors
    import foundry_infer.errors
    import foundry_models.errors
    import foundry_train.errors

    return {
        "data": foundry_data.errors.FoundryError("data error: the shard is missing"),
        "models": foundry_models.errors.MPTConfigError("d_model 65 is not divisible by n_heads"),
        "eval": foundry_eval.errors.FoundryError("eval error: unknown task 'piqq'"),
        "infer": foundry_infer.errors.FoundryError("infer error: the prompt is too long"),
        "train": foundry_train.errors.ConfigError(["max_duration: bad time"], "cfg.yaml"),
        "exists": FileExistsError(17, "File exists", "/x/out"),
        "not-found": FileNotFoundError(2, "No such file or directory", "/x/in"),
        "not-a-dir": NotADirectoryError(20, "Not a directory", "/x/file/sub"),
        "is-a-dir": IsADirectoryError(21, "Is a directory", "/x/dir"),
        "permission": PermissionError(13, "Permission denied", "/x/locked"),
    }


def _raiser(exc: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raise_it


def _call_cli(cli: str, exc: BaseException, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """Run ``cli``'s main in this process with its first real step raising ``exc``."""
    if cli == "foundry-data":
        import foundry_data.cli

        monkeypatch.setattr(foundry_data.cli, "_run_inspect", _raiser(exc))
        return foundry_data.cli.main(["inspect", str(tmp_path)])
    if cli == "foundry-eval":
        import foundry_eval.cli

        monkeypatch.setattr(foundry_eval.cli, "build_config", _raiser(exc))
        return foundry_eval.cli.main([str(tmp_path / "eval.yaml")])
    if cli == "foundry-infer":
        import foundry_infer.cli

        monkeypatch.setitem(foundry_infer.cli._COMMANDS, "generate", _raiser(exc))
        return foundry_infer.cli.main(["generate", str(tmp_path), "--prompt", "hi"])
    if cli == "foundry-train":
        import foundry_train.cli

        monkeypatch.setattr(foundry_train.cli, "_validate", _raiser(exc))
        return foundry_train.cli.main(["validate", str(tmp_path / "cfg.yaml")])
    pipeline = _pipeline_module()
    monkeypatch.setattr(pipeline, "pipeline", _raiser(exc))
    return pipeline.main(["--tiny", "--out", str(tmp_path / "run")])


CLIS = ["foundry-data", "foundry-eval", "foundry-infer", "foundry-train", "pipeline.py"]
KINDS = list(_errors())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cli", CLIS)
def test_user_error_is_one_paragraph_with_exit_2(
    cli: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exc = _errors()[kind]
    assert _call_cli(cli, exc, monkeypatch, tmp_path) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    if isinstance(exc, OSError):
        assert str(exc.filename) in lines[0]
    else:
        assert str(exc).splitlines()[0] in lines[0]


@pytest.mark.parametrize("cli", CLIS)
def test_a_bug_still_propagates(cli: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only user errors are shortened: anything else keeps its traceback."""
    with pytest.raises(ZeroDivisionError):
        _call_cli(cli, ZeroDivisionError("a bug"), monkeypatch, tmp_path)


def _script(name: str) -> list[str]:
    beside = Path(sys.executable).parent / name
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", name.replace("-", "_")]


def _real_cases(tmp: Path) -> dict[str, list[str]]:
    """One real user error per command (no monkeypatching), each a path or config problem."""
    (tmp / "afile").write_text("a file, not a folder\n")
    (tmp / "corpus.txt").write_text("hello world\n" * 20)
    (tmp / "dup.yaml").write_text("model: {path: a}\nmodel: {path: b}\ndata_root: .\n")
    (tmp / "train.yaml").write_text(
        "model: {name: mpt, preset: debug}\ntokenizer: {name: tok}\n"
        "train_loader: {dataset: {local: data}}\nmax_duration: 2ba\n"
        "global_train_batch_size: 4\ndevice_train_microbatch_size: 0\n"
    )
    return {
        "foundry-data": [
            *_script("foundry-data"),
            "train-tokenizer",
            str(tmp / "corpus.txt"),
            str(tmp / "afile" / "tok"),
            "--vocab-size",
            "300",
            "--no-progress",
        ],
        "foundry-eval": [*_script("foundry-eval"), str(tmp / "dup.yaml")],
        "foundry-infer": [
            *_script("foundry-infer"),
            "generate",
            str(tmp / "no-model"),
            "--prompt",
            "x",
        ],
        "foundry-train": [
            *_script("foundry-train"),
            "validate",
            str(tmp / "train.yaml"),
            "--skip-files",
        ],
        "pipeline.py": [
            sys.executable,
            str(ROOT / "pipeline.py"),
            "--out",
            str(tmp / "afile" / "r"),
        ],
    }


def test_real_user_error_in_a_subprocess(tmp_path: Path) -> None:
    """The five commands run at once (each mostly imports torch), then each is checked."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    procs = {
        cli: subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
        )
        for cli, argv in _real_cases(tmp_path).items()
    }
    for cli, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, f"{cli}: {err[-3000:]}"
        assert "Traceback" not in err, f"{cli}: {err[-3000:]}"
        assert err.count("error: ") == 1, f"{cli}: {err[-3000:]}"
