"""Few-shot sampling and prompt construction (llm-foundry semantics)."""

from __future__ import annotations

import random

from foundry_eval import load_tasks
from foundry_eval.data import read_task_rows
from foundry_eval.prompts import (
    build_generation_requests,
    build_loglikelihood_questions,
    fewshot_indices,
    needs_prefix_space,
    render_prompts,
    strip_row,
)


def test_fewshot_indices_exclude_the_example_and_are_seeded():
    for size, k in [(10, 3), (5, 4), (5, 10), (2, 1)]:
        rng_a, rng_b = random.Random(1234), random.Random(1234)
        for idx in range(size):
            a = fewshot_indices(size, k, idx, rng_a)
            assert a == fewshot_indices(size, k, idx, rng_b)
            assert idx not in a and len(a) == min(k, size - 1)


def test_multiple_choice_fewshot_prompt_layout(tiny_model, data_root):
    _, tok = tiny_model
    task = load_tasks(
        [
            {
                "label": "arc_easy",
                "dataset_uri": "world_knowledge/arc_easy.jsonl",
                "num_fewshot": 3,
                "icl_task_type": "multiple_choice",
                "continuation_delimiter": "\nAnswer: ",
            }
        ],
        data_root,
    )[0]
    rows = read_task_rows(task.data_path, task.icl_task_type)
    prompts = render_prompts(task, rows, tok, 5)
    rng = random.Random(1234)
    for i, p in enumerate(prompts):
        shots = list(fewshot_indices(len(rows), 3, i, rng))
        blocks = p["context"].split("\n")
        # three solved examples (question, "Answer: gold"), then the question and "Answer:"
        assert len(blocks) == 8 and blocks[-1] == "Answer:"
        for j, s in enumerate(shots):
            assert blocks[2 * j] == rows[s]["query"].strip()
            assert blocks[2 * j + 1] == "Answer: " + rows[s]["choices"][rows[s]["gold"]]
        assert blocks[6] == rows[i]["query"].strip()
    # The token requests hold the same text: context tokens decode to the rendered prompt.
    questions = build_loglikelihood_questions(task, rows, tok, 5)
    assert needs_prefix_space(tok)
    for q, p in zip(questions, prompts, strict=True):
        assert tok.decode(q.contexts[0]) == p["context"]
        assert [tok.decode(c) for c in q.continuations] == [" " + c for c in p["choices"]]


def test_schema_prompts(tiny_model, data_root):
    _, tok = tiny_model
    zero, three = load_tasks(
        [
            {
                "label": "w",
                "dataset_uri": "language_understanding/winograd_wsc.jsonl",
                "num_fewshot": [0, 3],
                "icl_task_type": "schema",
            }
        ],
        data_root,
    )
    rows = read_task_rows(zero.data_path, "schema")
    p0 = render_prompts(zero, rows, tok, 1)[0]
    assert p0["context_options"] == rows[0]["context_options"]
    p3 = render_prompts(three, rows, tok, 1)[0]
    for opt, ctx in zip(p3["context_options"], rows[0]["context_options"], strict=True):
        assert opt.endswith("\n" + ctx) and opt.count("\n") == 3
    q = build_loglikelihood_questions(three, rows, tok, 1)[0]
    assert len(q.contexts) == 2 and len(q.continuations) == 1
    assert tok.decode(q.continuations[0]) == " " + rows[0]["continuation"]


def test_max_new_tokens_is_computed_once_per_task_file(tiny_model, data_root, monkeypatch):
    from foundry_eval import prompts

    _, tok = tiny_model
    tasks = {t.label: t for t in load_tasks("gauntlet_v0.3", data_root)}
    calls: list[int] = []
    count = prompts._token_counts

    def counting(b, texts):
        calls.append(len(texts))
        return count(b, texts)

    monkeypatch.setattr(prompts, "_token_counts", counting)
    for label in ("triviaqa_sm_sub", "gsm8k"):  # answers with aliases; chain of thought
        task = tasks[label]
        rows = read_task_rows(task.data_path, task.icl_task_type)
        calls.clear()
        _, first = build_generation_requests(task, rows, tok, 2)
        _, again = build_generation_requests(task, rows, tok, 5)
        assert len(calls) == 1  # one batched call for the whole file, then the cache
        # llm-foundry's whole-file rule: the longest answer or alias of every row, in tokens
        # (+ 10 with a chain of thought), tokenized one string at a time here.
        texts = [a for r in map(strip_row, rows) for a in [r["answer"], *r.get("aliases", [])]]
        if task.cot_delimiter:
            texts = [
                f"{r.get('chain_of_thought', '').strip()}{task.cot_delimiter}{r['answer']}"
                for r in map(strip_row, rows)
            ]
        longest = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        assert first == again == longest + (10 if task.cot_delimiter else 0)
    changed = [{**r, "answer": r["answer"] + " and more words"} for r in rows]
    build_generation_requests(tasks["gsm8k"], changed, tok, 1)
    assert len(calls) == 2  # other answers: computed again


def test_code_fewshot_prompt_is_solved_examples_then_the_prompt(tiny_model, data_root):
    """A few-shot code task (accepted by the config) builds its shots from `prompt` and
    `canonical_solution` (it used to fail with KeyError 'context')."""
    _, tok = tiny_model
    (task,) = load_tasks(
        [
            {
                "label": "human_eval",
                "dataset_uri": "programming/human_eval.jsonl",
                "num_fewshot": 2,
                "icl_task_type": "code_evaluation",
                "example_delimiter": "\n\n",
            }
        ],
        data_root,
    )
    rows = read_task_rows(task.data_path, task.icl_task_type)
    requests, _ = build_generation_requests(task, rows, tok, 3)
    rng = random.Random(1234)
    for i, req in enumerate(requests):
        a, b = fewshot_indices(len(rows), 2, i, rng)
        shot = [rows[j]["prompt"] + rows[j]["canonical_solution"] for j in (a, b)]
        assert req.prompt_text == f"{shot[0]}\n\n{shot[1]}\n\n{rows[i]['prompt']}"
        assert tok.decode(req.prompt_ids) == req.prompt_text
