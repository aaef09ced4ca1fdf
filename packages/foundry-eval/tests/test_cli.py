"""The foundry-eval command: quick form, config form, outputs and bad input."""

from __future__ import annotations

import json

import yaml
from foundry_eval.cli import main


def test_quick_form_writes_reports(tiny_model_dir, data_root, tmp_path, capsys):
    out = tmp_path / "r"
    argv = [
        str(tiny_model_dir),
        "--tasks",
        "piqa,winograd",
        "--data-root",
        str(data_root),
        "--limit",
        "6",
        "--json",
        str(out / "r.json"),
        "--markdown",
        str(out / "r.md"),
        "--png",
        str(out / "r.png"),
        "--log-samples",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "piqa/0-shot" in printed.out
    # Two of the gauntlet's tasks: its averages are labelled partial, not printed as if complete.
    (core,) = [line for line in printed.out.splitlines() if line.startswith("core_average ")]
    assert "(partial)" in core and "incomplete" in core
    data = json.loads((out / "r.json").read_text())
    assert data["tasks"]["piqa/0-shot"]["num_examples"] == 6
    assert len(data["tasks"]["winograd/3-shot"]["samples"]) == 6
    assert "commonsense_reasoning" in data["gauntlet"]["categories"]
    assert "| piqa/0-shot |" in (out / "r.md").read_text()
    assert (out / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # An existing output is refused without --overwrite.
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_config_form_with_overrides(tiny_model_dir, data_root, tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(tiny_model_dir)},
                "data_root": str(data_root),
                "task_names": ["lambada_openai"],
                "gauntlet": None,
                "progress": False,
            }
        )
    )
    # an override after an option still counts (plain argparse refuses it)
    assert main([str(cfg), "--no-progress", "limit=4", f"output.json={tmp_path / 'o.json'}"]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["tasks"]["lambada_openai/0-shot"]["num_examples"] == 4 and "gauntlet" not in data
    capsys.readouterr()
    assert main([str(cfg), "batch_sise=4"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and "did you mean 'batch_size'" in err and "Traceback" not in err
    )


def test_bad_inputs_give_one_paragraph_errors(tiny_model_dir, data_root, tmp_path, capsys):
    cases = [
        ([str(tmp_path), "--data-root", str(data_root)], "not a Hugging Face model directory"),
        ([str(tiny_model_dir), "--data-root", str(tmp_path / "nowhere")], "is not a directory"),
        (
            [str(tiny_model_dir), "--data-root", str(data_root), "--tasks", "piqaa"],
            "did you mean 'piqa'",
        ),
        (
            [str(tiny_model_dir), "--data-root", str(data_root), "--tasks", "human_eval"],
            "--allow-code-execution",
        ),
        ([str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
        ([str(tmp_path / "no-such-model")], "no-such-model does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert main([str(broken), "--data-root", str(data_root), "--tasks", "piqa"]) == 2
    assert "could not load" in capsys.readouterr().err


def test_empty_task_selection_with_only_missing_files(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert (
        main([str(tiny_model_dir), "--data-root", str(tmp_path / "data"), "--tasks", "piqa"]) == 2
    )
    assert "none of the selected tasks has a data file" in capsys.readouterr().err


def test_existing_output_is_refused_before_any_work(
    tiny_model_dir, data_root, tmp_path, monkeypatch, capsys
):
    import foundry_eval.run

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started although the output exists")

    for name in ("load_model", "load_tokenizer", "load_tasks", "evaluate"):
        monkeypatch.setattr(foundry_eval.run, name, must_not_run)
    existing = tmp_path / "scores.md"
    existing.write_text("earlier results")
    argv = [str(tiny_model_dir), "--data-root", str(data_root), "--tasks", "piqa"]
    assert main([*argv, "--json", str(tmp_path / "new.json"), "--markdown", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{existing} already exists" in err
    assert existing.read_text() == "earlier results" and not (tmp_path / "new.json").exists()
