"""Few-shot sampling and prompt construction (llm-foundry semantics)."""

from __future__ import annotations

import random

from foundry_eval import load_tasks
from foundry_eval.data import read_task_rows
from foundry_eval.prompts import (
    build_loglikelihood_questions,
    fewshot_indices,
    needs_prefix_space,
    render_prompts,
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
