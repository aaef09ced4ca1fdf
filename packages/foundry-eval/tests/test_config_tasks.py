"""Task YAMLs, the shipped gauntlet, config validation and overrides."""

from __future__ import annotations

import pytest
from foundry_eval import FoundryError, load_gauntlet, load_tasks
from foundry_eval.config import EvalConfig, apply_overrides, parse_model
from foundry_eval.tasks import select_tasks


def test_shipped_gauntlet_is_consistent(tmp_path):
    tasks = load_tasks("gauntlet_v0.3", tmp_path)
    gauntlet = load_gauntlet("gauntlet_v0.3")
    names = {t.name for t in tasks}
    benchmarks = [b for c in gauntlet.categories for b in c.benchmarks]
    assert len(gauntlet.categories) == 5 and len(benchmarks) == 31
    for b in benchmarks:
        assert f"{b.name}/{b.num_fewshot}-shot" in names, b
    assert set(gauntlet.averages["core_average"]) == {c.name for c in gauntlet.categories}
    arc = {t.name: t for t in tasks if t.label == "arc_challenge"}
    assert set(arc) == {"arc_challenge/3-shot", "arc_challenge/25-shot"}  # num_fewshot list expands
    gsm = next(t for t in tasks if t.label == "gsm8k")
    assert gsm.cot_delimiter == "The answer is " and gsm.early_stopping_criteria == [
        "\n\n",
        "Question:",
    ]
    assert gsm.data_path == str(tmp_path / "symbolic_problem_solving/gsm8k_prepended_8shot.jsonl")


def test_llm_foundry_dataset_uri_is_mapped_onto_data_root(tmp_path):
    tasks = load_tasks(
        [
            {
                "label": "x",
                "dataset_uri": "eval/local_data/world_knowledge/arc_easy.jsonl",
                "icl_task_type": "question_answering",
                "num_fewshot": [0, 5],
            }
        ],
        tmp_path,
    )
    assert [t.name for t in tasks] == ["x/0-shot", "x/5-shot"]
    assert tasks[0].icl_task_type == "generation_task_with_answers"
    assert tasks[0].data_path == str(tmp_path / "world_knowledge/arc_easy.jsonl")
    s3 = load_tasks(
        [{"label": "y", "dataset_uri": "a/b.jsonl", "icl_task_type": "schema"}], "s3://bucket/evals"
    )
    assert s3[0].data_path == "s3://bucket/evals/a/b.jsonl"


def test_unknown_task_key_and_type_are_reported_together(tmp_path):
    with pytest.raises(FoundryError) as err:
        load_tasks(
            [
                {
                    "label": "x",
                    "dataset_uri": "a.jsonl",
                    "icl_task_type": "multiple_choise",
                    "num_fewshots": 3,
                }
            ],
            tmp_path,
        )
    msg = str(err.value)
    assert "icl_tasks[0].num_fewshots" in msg and "did you mean 'num_fewshot'" in msg
    assert "icl_tasks[0].icl_task_type" in msg and "multiple_choise" in msg


def test_eval_config_errors_name_dotted_keys():
    with pytest.raises(FoundryError) as err:
        parse_model(
            EvalConfig,
            {"model": {"path": "m", "dtyp": "bf16"}, "data_root": "d", "batch_size": 0},
            "eval config",
        )
    msg = str(err.value)
    assert "model.dtyp" in msg and "did you mean 'dtype'" in msg and "batch_size" in msg


def test_dotted_overrides():
    data = apply_overrides(
        {"model": {"path": "m"}}, ["model.dtype=bfloat16", "batch_size=32", "output.json=r.json"]
    )
    assert data == {
        "model": {"path": "m", "dtype": "bfloat16"},
        "batch_size": 32,
        "output": {"json": "r.json"},
    }
    with pytest.raises(FoundryError, match="dotted.key=value"):
        apply_overrides({}, ["batch_size"])


def test_select_tasks_by_label_and_unknown_name(tmp_path):
    tasks = load_tasks("gauntlet_v0.3", tmp_path)
    picked = select_tasks(tasks, ["piqa", "arc_challenge/25-shot"])
    assert [t.name for t in picked] == ["arc_challenge/25-shot", "piqa/0-shot"]
    assert [t.name for t in select_tasks(tasks, ["arc_easy"], num_fewshot=0)] == ["arc_easy/0-shot"]
    with pytest.raises(FoundryError, match="did you mean 'piqa'"):
        select_tasks(tasks, ["piqaa"])
