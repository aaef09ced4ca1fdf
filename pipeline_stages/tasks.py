"""Stage 6 of pipeline.py: scoring tasks written from the held-out source files."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from pipeline_stages.run import PipelineError, Run

_WORD_AT_END = re.compile(r"^(.*\S)(\s*\b\w+\W*)$")


def code_lines(files: list[Path]) -> list[list[str]]:
    """Non-trivial lines of each held-out file, in order."""
    out = []
    for p in files:
        lines = [ln.rstrip() for ln in p.read_text(encoding="utf-8").splitlines()]
        out.append([ln for ln in lines if len(ln.strip()) >= 12])
    return out


def lm_rows(per_file: list[list[str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """language_modeling: the two lines before and a line's start; predict its last word."""
    candidates = []
    for lines in per_file:
        for i in range(2, len(lines)):
            m = _WORD_AT_END.match(lines[i])
            if m and len(m.group(2).strip()) >= 2:
                context = "\n".join([*lines[i - 2 : i], m.group(1)])[-240:]
                candidates.append({"context": context, "continuation": m.group(2)})
    rng.shuffle(candidates)
    return candidates[:n]


def mc_rows(per_file: list[list[str]], n: int, rng: random.Random) -> list[dict[str, object]]:
    """multiple_choice: after two lines, which of four lines comes next (chance 0.25)."""
    pool = [ln for lines in per_file for ln in lines]
    rows = []
    for lines in per_file:
        for i in range(2, len(lines)):
            answer = lines[i]
            wrong = [c for c in rng.sample(pool, 12) if c != answer and c not in lines[i - 2 : i]]
            if len(set(wrong)) < 3:
                continue
            choices = [answer, *list(dict.fromkeys(wrong))[:3]]
            rng.shuffle(choices)
            query = "\n".join(lines[i - 2 : i])[-240:]
            rows.append({"query": query, "choices": choices, "gold": choices.index(answer)})
    rng.shuffle(rows)
    return rows[:n]


def write_tasks(run: Run, held_out: list[Path]) -> Path:
    rng = random.Random(1234)
    per_file = code_lines(held_out)
    folder = run.path("eval")
    folder.mkdir()
    tasks = {
        "next_word": lm_rows(per_file, run.sizes.eval_examples, rng),
        "next_line": mc_rows(per_file, run.sizes.eval_examples, rng),
    }
    for name, rows in tasks.items():
        if not rows:
            raise PipelineError(f"no {name} examples could be built from the held-out files.")
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    (folder / "tasks.yaml").write_text(
        "# Written by pipeline.py from the held-out source files (corpus/held_out.txt).\n"
        "icl_tasks:\n"
        "- label: next_word            # greedy exact match of a line's last word\n"
        "  dataset_uri: next_word.jsonl\n"
        "  icl_task_type: language_modeling\n"
        "  num_fewshot: [0]\n"
        '  continuation_delimiter: ""\n'
        "- label: next_line            # which of four lines follows (chance: 0.25)\n"
        "  dataset_uri: next_line.jsonl\n"
        "  icl_task_type: multiple_choice\n"
        "  num_fewshot: [0]\n"
        '  continuation_delimiter: "\\n"\n'
    )
    run.facts["eval examples"] = ", ".join(f"{k} {len(v)}" for k, v in tasks.items())
    return folder
