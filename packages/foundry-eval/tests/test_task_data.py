"""Task data: the task list, `fetch-tasks`, and downloads on demand (from an HTTP server on
127.0.0.1 serving generated task files; no test needs the internet)."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from foundry_eval.cli import main
from foundry_eval.task_data import DEFAULT_TASK_URL, default_cache_dir


def _gauntlet_tasks() -> list[dict]:
    import importlib.resources

    text = importlib.resources.files("foundry_eval").joinpath("gauntlets", "v0.3.yaml").read_text()
    return yaml.safe_load(text)["icl_tasks"]


def _table(out: str) -> list[list[str]]:
    """The rows of the printed task table (5 columns, after the header and its rule)."""
    lines = out.split("\n\n")[0].splitlines()[2:]
    return [line.split() for line in lines]


def test_list_tasks_shows_every_gauntlet_task(data_root, tmp_path, capsys):
    assert main(["--list-tasks", "--data-root", str(data_root)]) == 0
    rows = {tuple(r[:2]): r for r in _table(capsys.readouterr().out)}
    assert len(rows) == sum(len(e["num_fewshot"]) for e in _gauntlet_tasks())
    for entry in _gauntlet_tasks():
        for shots in entry["num_fewshot"]:
            row = rows[(entry["label"], str(shots))]
            kind = entry["icl_task_type"]
            assert row[2] == {"question_answering": "generation_task_with_answers"}.get(kind, kind)
            assert row[3] == entry["dataset_uri"] and row[4] == "yes"
    # Without the files (an empty cache) the same tasks are listed as not present.
    assert main(["--list-tasks", "--data-root", str(tmp_path)]) == 0
    listed = _table(capsys.readouterr().out)
    assert [r[:4] for r in listed] == [r[:4] for r in rows.values()]
    assert {r[4] for r in listed} == {"no"}


def test_cache_folder_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "foundry" / "eval-data"
    assert DEFAULT_TASK_URL.startswith("https://raw.githubusercontent.com/mosaicml/llm-foundry/")
    assert DEFAULT_TASK_URL.endswith("/scripts/eval/local_data")


def test_fetch_tasks_downloads_each_file_once(task_server, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_EVAL_TASK_URL", task_server.base)
    dest = tmp_path / "dest"
    before = len(task_server.requests)
    assert main(["fetch-tasks", "--dest", str(dest), "--no-progress"]) == 0
    wanted = {e["dataset_uri"] for e in _gauntlet_tasks()}
    got = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert got == wanted  # llm-foundry's relative paths, nothing else (no temp files left)
    for rel in wanted:
        assert (dest / rel).read_bytes() == (data_root / rel).read_bytes()
    assert len(task_server.requests) - before == len(wanted)
    assert main(["fetch-tasks", "--dest", str(dest), "--no-progress"]) == 0
    assert len(task_server.requests) - before == len(wanted)  # all present: nothing fetched


def test_eval_without_data_root_fetches_what_it_needs(
    tiny_model_dir, task_server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FOUNDRY_EVAL_DATA", raising=False)
    monkeypatch.setenv("FOUNDRY_EVAL_TASK_URL", task_server.base)
    argv = [str(tiny_model_dir), "--tasks", "piqa,winograd", "--limit", "4", "--no-progress"]
    argv += ["--json", str(tmp_path / "r.json")]
    before = len(task_server.requests)
    assert main(argv) == 0
    cache = tmp_path / "cache" / "foundry" / "eval-data"
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert files == [
        "commonsense_reasoning/piqa.jsonl",
        "language_understanding/winograd_wsc.jsonl",
    ]
    assert len(task_server.requests) - before == 2
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["tasks"]["piqa/0-shot"]["num_examples"] == 4
    capsys.readouterr()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_errors_name_the_url_and_the_way_out(task_server, tmp_path, capsys):
    offline = f"http://127.0.0.1:{_closed_port()}/local_data"
    cases = [(offline, "are you offline?)"), (task_server.url + "/nowhere", "HTTP 404")]
    for base, why in cases:
        dest = tmp_path / "d"
        argv = ["fetch-tasks", "--tasks", "piqa", "--dest", str(dest), "--task-url", base]
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: could not download task file ")
        assert f"{base}/commonsense_reasoning/piqa.jsonl" in err and why in err
        assert "--data-root" in err and "Traceback" not in err
        assert not [p for p in dest.rglob("*") if p.is_file()]  # no partial file


@pytest.mark.parametrize("argv", [["--list-tasks", "--tasks", "piqaa"]])
def test_list_tasks_bad_name_is_one_error(argv, capsys):
    assert main(argv) == 2
    assert "did you mean 'piqa'" in capsys.readouterr().err
