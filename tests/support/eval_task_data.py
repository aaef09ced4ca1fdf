"""Generated eval task files and a local HTTP server for them (no test needs real benchmarks).

``write_synthetic_data(root)`` writes, for every task of foundry-eval's shipped gauntlet (or the
tasks given), a JSONL file at the relative path its config names, in the layout of its task type
(language modelling, multiple choice, schema, question answering with aliases or a chain of
thought, code). The rows follow a few fixed patterns (which animal sleeps where, a sentence
against its scrambled words, who chased whom and why, sums), so a tiny model trained on some of
them scores above chance. ``TaskServer`` serves a folder on 127.0.0.1 the way llm-foundry
publishes its files (``<url>/scripts/eval/local_data/<relative path>``) and records requests.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
from pathlib import Path

__all__ = [
    "ROWS_PER_FILE",
    "TaskServer",
    "serve_task_files",
    "synthetic_rows",
    "write_synthetic_data",
]

ROWS_PER_FILE = 80

_ANIMALS = [
    "cat",
    "dog",
    "horse",
    "goat",
    "sheep",
    "duck",
    "owl",
    "fox",
    "bear",
    "wolf",
    "mouse",
    "frog",
    "crow",
    "deer",
    "hare",
    "seal",
]
_PLACES = ["barn", "den", "field", "pond", "nest", "burrow", "river", "forest", "cave", "meadow"]
_TOOLS = ["knife", "spoon", "brush", "hammer", "rope", "towel", "bucket", "needle"]
_VERBS = ["clean", "fix", "open", "fold", "paint", "wash", "cut", "tie"]
_OBJECTS = ["door", "shirt", "box", "fence", "table", "boat", "chair", "window"]


def _place(animal: str) -> str:
    return _PLACES[_ANIMALS.index(animal) % len(_PLACES)]


def _lm_row(rng: random.Random, categories: bool) -> dict:
    a = rng.choice(_ANIMALS)
    row = {"context": f"The {a} sleeps in the", "continuation": _place(a)}
    if categories:
        row["category"] = "animals" if _ANIMALS.index(a) % 2 else "places"
    return row


def _mc_row(rng: random.Random, label: str, categories: bool) -> dict:
    if label == "piqa":  # two choices: a sentence and the same words scrambled
        verb, obj, tool = rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TOOLS)
        good = f"Use a {tool} to {verb} the {obj}."
        bad = f"{obj} the to {tool} a use {verb}."
        gold = rng.randrange(2)
        choices = [good, bad] if gold == 0 else [bad, good]
        return {
            "query": f"Question: How do I {verb} the {obj}?\n",
            "choices": choices,
            "gold": gold,
        }
    a = rng.choice(_ANIMALS)
    wrong = rng.sample([p for p in _PLACES if p != _place(a)], 3)
    gold = rng.randrange(4)
    choices = wrong[:gold] + [_place(a)] + wrong[gold:]
    row = {"query": f"Question: Where does the {a} sleep?\n", "choices": choices, "gold": gold}
    if categories:
        row["category"] = "zoology"
    return row


def _schema_row(rng: random.Random) -> dict:
    a, b = rng.sample(_ANIMALS, 2)
    gold = rng.randrange(2)
    start = f"The {a} chased the {b} because the"
    return {
        "context_options": [f"{start} {a}", f"{start} {b}"],
        "continuation": ["was hungry.", "was scared."][gold],
        "gold": gold,
    }


def _generation_row(rng: random.Random, cot: bool) -> dict:
    if cot:
        x, y = rng.randrange(2, 20), rng.randrange(2, 20)
        return {
            "context": f"Q: What is {x} plus {y}?",
            "chain_of_thought": f"{x} + {y} = {x + y}. ",
            "answer": str(x + y),
        }
    a = rng.choice(_ANIMALS)
    return {
        "context": f"Question: Where does the {a} sleep?\nAnswer:",
        "answer": _place(a),
        "aliases": [_place(a), f"the {_place(a)}"],
    }


def _code_row(k: int) -> dict:
    return {
        "task_id": f"Synthetic/{k}",
        "prompt": f'def add_{k}(x):\n    """Return x plus {k}."""\n',
        "canonical_solution": f"    return x + {k}\n",
        "entry_point": f"add_{k}",
        "test_inputs": ["(1,)", "(5,)"],
        "test_outputs": [str(1 + k), str(5 + k)],
        "language": "python",
    }


def synthetic_rows(task, n: int = ROWS_PER_FILE, seed: int = 0) -> list[dict]:
    """``n`` generated rows in the layout of ``task``'s type (a TaskConfig), learnable patterns."""
    rng = random.Random(f"{seed}-{task.label}")
    kind = task.icl_task_type
    if kind == "language_modeling":
        return [_lm_row(rng, task.has_categories) for _ in range(n)]
    if kind == "multiple_choice":
        return [_mc_row(rng, task.label, task.has_categories) for _ in range(n)]
    if kind == "schema":
        return [_schema_row(rng) for _ in range(n)]
    if kind == "code_evaluation":
        return [_code_row(k) for k in range(n)]
    return [_generation_row(rng, bool(task.cot_delimiter)) for _ in range(n)]


def write_synthetic_data(root: Path, tasks=None, n: int = ROWS_PER_FILE) -> list[str]:
    """Generated task files for ``tasks`` (default: the shipped gauntlet) under ``root``, at the
    relative paths the task configs name; returns those paths."""
    from foundry_eval import load_tasks
    from foundry_eval.config import relative_data_path

    written = []
    for task in tasks if tasks is not None else load_tasks("gauntlet_v0.3", root):
        rel = relative_data_path(task.dataset_uri)
        if rel is None or rel in written:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(task, n)))
        written.append(rel)
    return written


class TaskServer:
    """Serves a folder over HTTP on 127.0.0.1 and records the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # Where llm-foundry's layout puts the task files, below the served folder.
        self.base = self.url + "/scripts/eval/local_data"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_task_files(data_root: Path, site: Path) -> TaskServer:
    """Serve ``data_root`` at ``server.base`` (llm-foundry's layout), from an empty folder ``site``;
    call ``close()`` when done."""
    (site / "scripts" / "eval").mkdir(parents=True)
    (site / "scripts" / "eval" / "local_data").symlink_to(data_root, target_is_directory=True)
    return TaskServer(site)
