"""Gauntlet aggregation and metric helpers."""

from __future__ import annotations

import math

import pytest
from foundry_eval.config import GauntletConfig
from foundry_eval.gauntlet import compute_gauntlet
from foundry_eval.metrics import generation_record, normalize_answer, pass_at_k


def _gauntlet(**kw) -> GauntletConfig:
    return GauntletConfig.model_validate(
        {
            "categories": [
                {
                    "name": "a",
                    "benchmarks": [
                        {"name": "mc", "num_fewshot": 0, "random_baseline": 0.25},
                        {"name": "lm", "num_fewshot": 3, "random_baseline": 0.0},
                    ],
                },
                {
                    "name": "b",
                    "benchmarks": [{"name": "gone", "num_fewshot": 0, "random_baseline": 0.5}],
                },
            ],
            "averages": {"core": ["a", "b"]},
            **kw,
        }
    )


METRICS = {
    "mc/0-shot": {"acc": 0.4, "acc_foundry": 0.55, "acc_norm": 0.5},
    "lm/3-shot": {"acc": 0.3},
}
TYPES = {"mc/0-shot": "multiple_choice", "lm/3-shot": "language_modeling"}


def test_baseline_subtraction_rescaling_and_missing():
    res = compute_gauntlet(_gauntlet(), METRICS, TYPES, {"mc/0-shot": 100, "lm/3-shot": 10})
    mc = (0.55 - 0.25) / 0.75  # llm-foundry's MC metric by default
    assert res.benchmark_scores["mc/0-shot"] == pytest.approx(mc)
    assert res.categories["a"] == pytest.approx((mc + 0.3) / 2)
    assert res.categories["b"] is None and res.missing == {"b": ["gone/0-shot"]}
    assert res.averages["core"] == pytest.approx((mc + 0.3) / 2)


def test_weighting_and_metric_choice():
    res = compute_gauntlet(
        _gauntlet(weighting="SAMPLE_SZ", mc_metric="acc", rescale_accuracy=False),
        METRICS,
        TYPES,
        {"mc/0-shot": 30, "lm/3-shot": 10},
    )
    assert res.categories["a"] == pytest.approx(((0.4 - 0.25) * 30 + 0.3 * 10) / 40)
    log = compute_gauntlet(
        _gauntlet(weighting="LOG_SAMPLE_SZ"), METRICS, TYPES, {"mc/0-shot": 100, "lm/3-shot": 10}
    )
    mc = (0.55 - 0.25) / 0.75
    assert log.categories["a"] == pytest.approx(
        (mc * math.log(100) + 0.3 * math.log(10)) / math.log(1000)
    )


def test_normalize_and_exact_match():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffel tower"
    rec = generation_record(
        0,
        [" Paris, France\nQuestion: x"],
        ["paris"],
        cot_delimiter="",
        stop_strings=["\n"],
        normalize=True,
        category=None,
    )
    assert rec["correct"]["exact_match"] and rec["answer"] == " Paris, France"
    cot = generation_record(
        1,
        ["3 + 4 = 7. The answer is 7\n\nQ"],
        ["7"],
        cot_delimiter="The answer is ",
        stop_strings=["\n\n"],
        normalize=False,
        category="x",
    )
    assert cot["correct"]["exact_match"] and cot["category"] == "x"
    wrong = generation_record(
        2,
        ["The answer is 8"],
        ["7"],
        cot_delimiter="The answer is ",
        stop_strings=None,
        normalize=False,
        category=None,
    )
    assert not wrong["correct"]["exact_match"]


def test_pass_at_k_estimator():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))


def test_partial_categories_and_averages_are_labelled():
    from foundry_eval.results import EvalResults

    one = {"mc/0-shot": METRICS["mc/0-shot"]}
    res = compute_gauntlet(_gauntlet(), one, TYPES, {"mc/0-shot": 100})
    assert res.missing == {"a": ["lm/3-shot"], "b": ["gone/0-shot"]}
    assert res.partial == ["a", "core"]  # b has no result at all: n/a, not partial
    table = EvalResults(gauntlet=res).to_table()
    rows = {line.split()[0]: line for line in table.splitlines()[3:]}
    mc = (0.55 - 0.25) / 0.75
    assert f"{mc:.4f} (partial)" in rows["core"] and "2 incomplete: a, b" in rows["core"]
    assert f"{mc:.4f} (partial)" in rows["a"] and "1 without results: lm/3-shot" in rows["a"]
    assert "n/a" in rows["b"] and "partial" not in rows["b"]
    full = {**METRICS, "gone/0-shot": {"acc": 0.75}}
    types = {**TYPES, "gone/0-shot": "multiple_choice"}
    done = compute_gauntlet(_gauntlet(mc_metric="acc"), full, types, {})
    assert done.partial == [] and "partial" not in EvalResults(gauntlet=done).to_table()
    assert EvalResults(gauntlet=done).to_json_dict()["gauntlet"]["partial"] == []


def test_pass_at_k_needs_k_samples():
    """Fewer samples than k is no estimate (it used to report 1.0 for every failing problem)."""
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples"):
        pass_at_k(5, 0, 10)


def test_code_task_config_refuses_k_above_its_generations():
    from foundry_eval.config import TaskConfig

    base = {"label": "he", "dataset_uri": "x.jsonl", "icl_task_type": "code_evaluation"}
    with pytest.raises(ValueError, match=r"needs at least 10 generations per problem"):
        TaskConfig.model_validate({**base, "pass_at_k": [1, 10]})
    with pytest.raises(ValueError, match="at least 1"):
        TaskConfig.model_validate({**base, "pass_at_k": [0]})
    ok = TaskConfig.model_validate({**base, "pass_at_k": [1, 10], "generations_per_sample": 10})
    assert ok.pass_at_k == [1, 10]


def test_an_average_naming_no_category_is_refused():
    from foundry_eval.errors import FoundryError
    from foundry_eval.tasks import load_gauntlet

    body = _gauntlet().model_dump()
    body["averages"] = {"core": ["a", "world_knowlege"]}
    with pytest.raises(FoundryError, match="'world_knowlege', not a category"):
        load_gauntlet(body)


def test_a_metric_the_task_does_not_report_is_an_error_not_a_swap():
    """A typo in a benchmark's metric, or pass@10 of a task computing pass@1 only, is refused
    (it used to be scored silently with the task's first metric)."""
    from foundry_eval.errors import FoundryError

    body = _gauntlet().model_dump()
    body["categories"][0]["benchmarks"][0]["metric"] = "acc_nrom"
    with pytest.raises(FoundryError, match="'mc/0-shot' is scored by 'acc_nrom'.*acc_norm"):
        compute_gauntlet(GauntletConfig.model_validate(body), METRICS, TYPES, {})


def test_schema_tasks_use_acc_when_the_gauntlet_asks_for_acc_norm():
    body = _gauntlet(mc_metric="acc_norm").model_dump()
    body["categories"][1]["benchmarks"][0]["random_baseline"] = 0.0
    metrics = {**METRICS, "gone/0-shot": {"acc": 0.7, "acc_foundry": 0.6}}
    types = {**TYPES, "gone/0-shot": "schema"}
    res = compute_gauntlet(GauntletConfig.model_validate(body), metrics, types, {})
    assert res.benchmark_scores["gone/0-shot"] == pytest.approx(0.7)  # acc: schema has no acc_norm
    assert res.benchmark_scores["mc/0-shot"] == pytest.approx((0.5 - 0.25) / 0.75)  # acc_norm


def test_evaluate_checks_gauntlet_metrics_before_scoring(tiny_model, human_eval_task):
    """The metric check runs before any example is scored: the model is never called."""
    from foundry_eval import evaluate
    from foundry_eval.errors import FoundryError

    _, tok = tiny_model
    task = human_eval_task()
    gauntlet = GauntletConfig.model_validate(
        {
            "categories": [
                {
                    "name": "code",
                    "benchmarks": [
                        {
                            "name": "human_eval",
                            "num_fewshot": 0,
                            "random_baseline": 0.0,
                            "metric": "pass@10",
                        }
                    ],
                }
            ]
        }
    )

    class Untouchable:
        def __call__(self, *a, **k):
            raise AssertionError("the model was called before the config check")

        generate = __call__

    with pytest.raises(FoundryError, match=r"scored by 'pass@10'.*pass@1, pass@2"):
        evaluate(Untouchable(), tok, [task], gauntlet=gauntlet, progress=False)
