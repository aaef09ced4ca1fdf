"""Agreement with lm-evaluation-harness: identical per-example predictions on a trained tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from foundry_eval import evaluate, load_tasks

LIMIT = 60

# name -> (data file relative to the data root, YAML body after the data source)
_TASKS = {
    "fe_lambada_openai": (
        "language_understanding/lambada_openai.jsonl",
        """output_type: loglikelihood
doc_to_text: "{{context.strip()}}"
doc_to_target: "{{' ' + continuation.strip()}}"
target_delimiter: ""
metric_list:
  - metric: acc
""",
    ),
    "fe_piqa": (
        "commonsense_reasoning/piqa.jsonl",
        """output_type: multiple_choice
doc_to_text: "{{query.strip()}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    ),
    "fe_arc_easy": (
        "world_knowledge/arc_easy.jsonl",
        """output_type: multiple_choice
doc_to_text: "{{query.strip()}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    ),
    "fe_winograd": (
        "language_understanding/winograd_wsc.jsonl",
        """output_type: multiple_choice
doc_to_text: "{{gold}}"
doc_to_choice: "{{context_options}}"
doc_to_target: "{{continuation.strip()}}"
metric_list:
  - metric: acc
""",
    ),
}

# The matching foundry-eval tasks (0-shot, same prompt formats as the gauntlet's).
FOUNDRY_TASKS = [
    {
        "label": "lambada_openai",
        "dataset_uri": "language_understanding/lambada_openai.jsonl",
        "icl_task_type": "language_modeling",
        "num_fewshot": 0,
    },
    {
        "label": "piqa",
        "dataset_uri": "commonsense_reasoning/piqa.jsonl",
        "icl_task_type": "multiple_choice",
        "num_fewshot": 0,
        "continuation_delimiter": "\nAnswer: ",
    },
    {
        "label": "arc_easy",
        "dataset_uri": "world_knowledge/arc_easy.jsonl",
        "icl_task_type": "multiple_choice",
        "num_fewshot": 0,
        "continuation_delimiter": "\nAnswer: ",
    },
    {
        "label": "winograd",
        "dataset_uri": "language_understanding/winograd_wsc.jsonl",
        "icl_task_type": "schema",
        "num_fewshot": 0,
    },
]
PAIRS = {
    "lambada_openai/0-shot": "fe_lambada_openai",
    "piqa/0-shot": "fe_piqa",
    "arc_easy/0-shot": "fe_arc_easy",
    "winograd/0-shot": "fe_winograd",
}


def write_task_yamls(out_dir: Path, data_root: Path) -> list[str]:
    """Write one lm-eval YAML per task into ``out_dir``; returns the task names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (rel, body) in _TASKS.items():
        head = (
            f"task: {name}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data_root / rel}\n"
            "test_split: test\n"
        )
        (out_dir / f"{name}.yaml").write_text(head + body, encoding="utf-8")
    return list(_TASKS)


def _lm_eval_samples(model_dir: Path, data_root: Path, tmp: Path) -> dict[str, list[dict]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = write_task_yamls(tmp / "lm_eval_tasks", data_root)
    lm = HFLM(
        pretrained=str(model_dir), backend="causal", device="cpu", batch_size=16, dtype="float32"
    )
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=TaskManager(include_path=str(tmp / "lm_eval_tasks")),
        limit=LIMIT,
        log_samples=True,
        bootstrap_iters=0,
    )
    assert out is not None
    return out["samples"]


@pytest.fixture(scope="module")
def both(tiny_model, tiny_model_dir, data_root, tmp_path_factory):
    model, tokenizer = tiny_model
    tasks = load_tasks(FOUNDRY_TASKS, data_root)
    ours = evaluate(model, tokenizer, tasks, batch_size=16, limit=LIMIT, progress=False)
    theirs = _lm_eval_samples(tiny_model_dir, data_root, tmp_path_factory.mktemp("lm_eval"))
    return ours, theirs


def _by_doc(samples: list[dict]) -> dict[int, dict]:
    return {int(s["doc_id"]): s for s in samples}


def test_model_is_trained_beyond_chance(tiny_model_dir):
    log = json.loads((tiny_model_dir / "train_log.json").read_text())
    assert len(log["losses"]) >= 200
    assert np.mean(log["losses"][-20:]) < log["losses"][0] - 1.5


@pytest.mark.parametrize("ours_name", ["piqa/0-shot", "arc_easy/0-shot"])
def test_multiple_choice_predictions_identical(both, ours_name):
    ours, theirs = both
    result = ours.tasks[ours_name]
    samples = _by_doc(theirs[PAIRS[ours_name]])
    assert result.num_examples == LIMIT == len(samples)
    for rec in result.examples:
        s = samples[rec["index"]]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        choices = s["doc"]["choices"]
        assert np.allclose(rec["logprobs"], lls, atol=2e-3), (rec["index"], rec["logprobs"], lls)
        assert rec["pred"]["acc"] == int(np.argmax(lls))
        assert rec["pred"]["acc_norm"] == int(np.argmax(np.array(lls) / [len(c) for c in choices]))
        assert rec["correct"]["acc"] == bool(s["acc"])
        assert rec["correct"]["acc_norm"] == bool(s["acc_norm"])
    assert result.metrics["acc"] == pytest.approx(np.mean([s["acc"] for s in samples.values()]))
    assert result.metrics["acc_norm"] == pytest.approx(
        np.mean([s["acc_norm"] for s in samples.values()])
    )
    # llm-foundry's mean-per-token-loss metric is reported alongside, from the same log-likelihoods.
    assert 0.0 <= result.metrics["acc_foundry"] <= 1.0


def test_winograd_predictions_identical(both):
    ours, theirs = both
    result = ours.tasks["winograd/0-shot"]
    samples = _by_doc(theirs[PAIRS["winograd/0-shot"]])
    assert result.num_examples == len(samples) == LIMIT
    for rec in result.examples:
        s = samples[rec["index"]]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        assert np.allclose(rec["logprobs"], lls, atol=2e-3)
        assert rec["pred"]["acc"] == int(np.argmax(lls))
        assert rec["correct"]["acc"] == bool(s["acc"])
        # The continuation is the same tokens for every option, so mean loss picks the same option.
        assert rec["pred"]["acc_foundry"] == rec["pred"]["acc"]


def test_lambada_greedy_match_identical(both):
    ours, theirs = both
    result = ours.tasks["lambada_openai/0-shot"]
    samples = _by_doc(theirs[PAIRS["lambada_openai/0-shot"]])
    assert result.num_examples == len(samples) == LIMIT
    for rec in result.examples:
        s = samples[rec["index"]]
        ll, greedy = s["filtered_resps"][0]
        assert rec["logprob"] == pytest.approx(float(ll), abs=2e-3)
        assert rec["correct"]["acc"] == bool(greedy) == bool(s["acc"])


def test_scores_are_above_chance(both):
    ours, _ = both
    # piqa has two choices: a trained model should beat a coin on summed log-likelihood or per-char.
    piqa = ours.tasks["piqa/0-shot"].metrics
    assert max(piqa["acc"], piqa["acc_norm"]) > 0.5
