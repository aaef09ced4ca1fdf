"""The scoring engine on the trained tiny model: paths agree, batching does not change results,
generation and code tasks run end to end."""

from __future__ import annotations

import json

import pytest
import torch
from foundry_eval import FoundryError, evaluate, load_tasks
from foundry_eval.data import read_task_rows

MC = {
    "label": "arc_easy",
    "dataset_uri": "world_knowledge/arc_easy.jsonl",
    "num_fewshot": 3,
    "icl_task_type": "multiple_choice",
    "continuation_delimiter": "\nAnswer: ",
}


SCHEMA = {
    "label": "winograd",
    "dataset_uri": "language_understanding/winograd_wsc.jsonl",
    "num_fewshot": 3,
    "icl_task_type": "schema",
}


@pytest.mark.parametrize("spec", [MC, SCHEMA], ids=["multiple_choice", "schema"])
def test_shared_prefix_and_batch_size_do_not_change_results(tiny_model, data_root, spec):
    model, tok = tiny_model
    tasks = load_tasks([spec], data_root)
    runs = [
        evaluate(model, tok, tasks, batch_size=bs, limit=24, progress=False, share_prefix=share)
        for bs, share in [(16, True), (16, False), (3, True), (1, False)]
    ]
    name = tasks[0].name
    base = runs[0].tasks[name].examples
    for other in runs[1:]:
        for a, b in zip(base, other.tasks[name].examples, strict=True):
            assert a["pred"] == b["pred"]
            assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)


def test_model_mode_is_restored(tiny_model, data_root):
    model, tok = tiny_model
    model.train()
    evaluate(model, tok, load_tasks([MC], data_root), limit=2, progress=False)
    assert model.training
    model.eval()


def test_generation_tasks_run(tiny_model, data_root):
    model, tok = tiny_model
    tasks = load_tasks("gauntlet_v0.3", data_root)
    picked = [
        t.model_copy(update={"limit": 3, "max_new_tokens": 8})
        for t in tasks
        if t.label in ("triviaqa_sm_sub", "gsm8k", "jeopardy")
    ]
    res = evaluate(model, tok, picked, batch_size=4, progress=False)
    for name in ("triviaqa_sm_sub/3-shot", "gsm8k/0-shot", "jeopardy/3-shot"):
        t = res.tasks[name]
        assert t.num_examples == 3 and set(t.metrics) <= {"acc", "exact_match"}
    assert all("generation" in r for r in res.tasks["gsm8k/0-shot"].examples)
    assert res.tasks["jeopardy/3-shot"].categories  # per-category results for has_categories tasks


class CannedCoder(torch.nn.Module):
    """Stands in for a code model: 'generates' a given completion for each known prompt."""

    def __init__(self, tok, completions: dict[str, list[str]]):
        super().__init__()
        self.tok = tok
        self.completions = completions
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, attention_mask, **kwargs):
        # generate_texts sends each prompt once per sample, consecutively: the s-th copy of a
        # prompt in the batch gets completion s
        rows, seen = [], {}
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = self.tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
            outs = self.completions[prompt]
            s = seen[prompt] = seen.get(prompt, -1) + 1
            rows.append(ids + self.tok(outs[s % len(outs)], add_special_tokens=False)["input_ids"])
        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def test_code_evaluation_pass_at_k(tiny_model, human_eval_task):
    _, tok = tiny_model
    task = human_eval_task(max_new_tokens=4, limit=3)
    rows = read_task_rows(task.data_path, "code_evaluation")[:3]
    right_then_wrong = {r["prompt"]: [r["canonical_solution"], "    return None\n"] for r in rows}
    skipped = evaluate(CannedCoder(tok, right_then_wrong), tok, [task], progress=False)
    assert "allow_code_execution" in (skipped.tasks["human_eval/0-shot"].missing or "")
    res = evaluate(
        CannedCoder(tok, right_then_wrong), tok, [task], progress=False, allow_code_execution=True
    )
    metrics = res.tasks["human_eval/0-shot"].metrics
    assert metrics == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}
    all_wrong = {r["prompt"]: ["    return None\n"] for r in rows}
    res = evaluate(
        CannedCoder(tok, all_wrong), tok, [task], progress=False, allow_code_execution=True
    )
    assert res.tasks["human_eval/0-shot"].metrics["pass@1"] == 0.0


@pytest.mark.parametrize(
    ("content", "task_type", "message"),
    [
        (
            '{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": oops}\n',
            "multiple_choice",
            "line 2: not valid JSON",
        ),
        (
            '{"query": "q", "choices": ["a", "b"]}\n',
            "multiple_choice",
            "line 1: missing field 'gold'",
        ),
        (
            '{"query": "q", "choices": ["a", "b"], "gold": 5}\n',
            "multiple_choice",
            "gold=5 is outside 0..1",
        ),
        (
            '{"context": 3, "continuation": "x"}\n',
            "language_modeling",
            "field 'context' should be str",
        ),
        (
            '{"query": "q", "choices": ["mat", "  ", "dog"], "gold": 0}\n',
            "multiple_choice",
            "line 1: choice 1 is empty",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, content, task_type, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(FoundryError, match=message) as err:
        read_task_rows(str(path), task_type)
    assert str(path) in str(err.value)


def test_missing_task_file_is_reported(tiny_model, data_root):
    model, tok = tiny_model
    tasks = load_tasks(
        [MC, {**MC, "label": "nope", "dataset_uri": "world_knowledge/nope.jsonl"}], data_root
    )
    res = evaluate(model, tok, tasks, limit=2, progress=False)
    assert res.tasks["nope/3-shot"].missing.startswith("file not found")
    assert "nope/3-shot" not in res.to_dict() and "arc_easy/3-shot" in res.to_dict()
    assert "missing: file not found" in res.to_table()
    json.dumps(res.to_json_dict())
