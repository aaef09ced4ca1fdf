"""Shared fixtures: a byte-level BPE tokenizer and a tiny Llama trained on eval text (session scope)."""

from __future__ import annotations

import http.server
import json
import random
import threading
import time
from pathlib import Path

import pytest

# <repo>/tests/support is on sys.path: the root conftest puts it there.
from tiny_lm import train_byte_bpe, train_on_windows

# The real benchmark files beside the checkout: only the tests that check agreement with real
# benchmark data use them (and skip without them); everything else runs on generated task files.
REAL_DATA_ROOT = (Path(__file__).resolve().parents[3] / "../shared/eval-data").resolve()
TRAIN_FILES = [
    "language_understanding/lambada_openai.jsonl",
    "commonsense_reasoning/piqa.jsonl",
    "world_knowledge/arc_easy.jsonl",
    "language_understanding/winograd_wsc.jsonl",
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


def _training_text(root: Path) -> list[str]:
    texts = []
    for rel in TRAIN_FILES:
        with (root / rel).open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if "context" in row:
                    texts.append(row["context"] + " " + row["continuation"])
                elif "query" in row:
                    texts.append(row["query"].strip() + "\nAnswer: " + row["choices"][row["gold"]])
                else:
                    texts.append(row["context_options"][row["gold"]] + " " + row["continuation"])
    return texts


def _train_model(tokenizer, texts: list[str], steps: int = 200):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
    losses = train_on_windows(model, torch.tensor(ids), steps=steps, seq=64, batch=16)
    return model, losses


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated task files for every task of the shipped gauntlet."""
    root = tmp_path_factory.mktemp("eval-data")
    write_synthetic_data(root)
    return root


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real benchmark files beside the checkout (only for agreement on real data)."""
    if not REAL_DATA_ROOT.is_dir():
        pytest.skip(f"real benchmark data not found at {REAL_DATA_ROOT}")
    return REAL_DATA_ROOT


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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def task_server(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The generated task files served as llm-foundry publishes them: ``<url>/<relative path>``
    under ``server.url + "/scripts/eval/local_data"``."""
    site = tmp_path_factory.mktemp("site")
    (site / "scripts" / "eval").mkdir(parents=True)
    (site / "scripts" / "eval" / "local_data").symlink_to(data_root, target_is_directory=True)
    server = TaskServer(site)
    server.base = server.url + "/scripts/eval/local_data"
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A Llama with a trained BPE tokenizer, trained >= 200 steps, saved as an HF directory."""
    import torch

    torch.set_num_threads(1)  # the CI box has 2 shared cores; more threads thrash
    start = time.perf_counter()
    texts = _training_text(data_root)
    tokenizer = train_byte_bpe(texts, vocab_size=1024, special_tokens=["<|endoftext|>"])
    model, losses = _train_model(tokenizer, texts)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "train_log.json").write_text(
        json.dumps({"losses": losses, "seconds": time.perf_counter() - start})
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)
