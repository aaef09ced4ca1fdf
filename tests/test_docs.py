"""The four workflows of docs/ run as written, at tiny sizes, on CPU.

The commands come from the fenced blocks of the pages themselves (see ``doc_blocks.py`` for the
``<!-- doc-test: ... -->`` markers), run in page order in one shell per page. Sizes are made tiny
through the environment variables the pages themselves read (``PRESET``, ``SEQ_LEN``, ``MODEL``,
...). ``MODEL`` is a tiny randomly initialised Llama with a tokenizer trained by
``foundry-data train-tokenizer`` on this project's docs, standing in for a downloaded model.
The eval steps download their task files as a reader's would, from a server on 127.0.0.1
serving generated files (``eval_task_data.py``), into a cache under the test's temp folder.
Every ``foundry-*`` command line of every page (run or not, README included) is also parsed by
its CLI's own argument parser, so a renamed flag breaks this test rather than a reader's day.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import read_blocks, render_script, shell_commands  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WORKFLOWS = [
    "play-with-a-model.md",
    "deploy-an-endpoint.md",
    "fine-tune.md",
    "train-from-scratch.md",
]
TINY_SIZES = {
    "PRESET": "debug",
    "VOCAB": "512",
    "SEQ_LEN": "128",
    "BATCH": "8",
    "MICRO": "8",
    "STEPS": "20ba",
    "EVAL_LIMIT": "20",
    "PORT": "8000",
}


def _pages_with_commands() -> list[Path]:
    return (
        [DOCS / name for name in WORKFLOWS]
        + [DOCS / n for n in ("faq.md", "install.md")]
        + [ROOT / "README.md"]
    )


# --- fast checks: markers and flags -------------------------------------------------------------


@pytest.mark.parametrize("page", WORKFLOWS)
def test_every_block_is_marked(page: str) -> None:
    blocks = read_blocks(DOCS / page)
    assert any(b.action == "run" for b in blocks), f"{page} runs nothing"
    for b in blocks:
        assert b.action is not None, (
            f"{b.where}: fenced block without a <!-- doc-test: ... --> marker"
        )
        if b.action == "skip":
            assert b.argument, f"{b.where}: a skipped block must say why"
        if b.action == "file":
            assert re.fullmatch(r"[\w.-]+", b.argument), f"{b.where}: bad file name {b.argument!r}"
        if b.action == "background":
            assert len(shell_commands(b.text)) == 1, f"{b.where}: a background block is one command"


def _substitute(word: str) -> str:
    """Shell variables in a doc command -> the tiny values (or the default the page wrote)."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        return TINY_SIZES.get(name) or m.group(3) or "x"

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}|\$(\w+)", value, word)


def _parser_for(argv: list[str]):  # -> tuple[ArgumentParser, list[str]]
    tool = argv[0]
    if tool == "foundry-data":
        from foundry_data.cli import build_parser
    elif tool == "foundry-eval":
        from foundry_eval.cli import build_parser
    elif tool == "foundry-infer":
        from foundry_infer.cli import build_parser
    elif tool == "foundry-train":
        from foundry_train.cli import SUBCOMMANDS, build_parser

        args = argv[1:]
        if args and args[0] not in SUBCOMMANDS and not args[0].startswith("-"):
            args = ["train", *args]
        return build_parser(), args
    else:
        raise AssertionError(f"unknown command {tool}")
    return build_parser(), argv[1:]


@pytest.mark.parametrize("page", _pages_with_commands(), ids=lambda p: p.name)
def test_doc_commands_parse(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every foundry-* command line of the page is accepted by its CLI's argument parser."""
    checked = 0
    for block in read_blocks(page):
        if block.lang not in ("bash", "sh", "dockerfile", ""):
            continue
        for argv in shell_commands(block.text):
            parser, args = _parser_for(argv)
            try:
                parser.parse_args([_substitute(a) for a in args])
            except SystemExit:
                pytest.fail(
                    f"{block.where}: `{' '.join(argv)}` is rejected: {capsys.readouterr().err}"
                )
            checked += 1
    if page.name in WORKFLOWS:
        assert checked, f"{page.name} has no foundry-* commands"


# --- running the pages --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("FOUNDRY_EVAL_DATA", None)  # the pages download their task files (eval_tasks)
    for key in ("MODEL", "DATA", "PRESET", "VOCAB", "SEQ_LEN", "BATCH", "MICRO", "STEPS", "PORT"):
        env.pop(key, None)  # only what each test sets
    return env


def _run_page(page: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = render_script(read_blocks(DOCS / page), workdir)
    (workdir / "doc.sh").write_text(script)
    return subprocess.run(
        ["bash", "doc.sh"],
        cwd=workdir,
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _page_output(runs: dict[str, Future[subprocess.CompletedProcess[str]]], page: str) -> str:
    proc = runs[page].result()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{page} failed (exit {proc.returncode}):\n{log[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="session")
def own_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's own docs as .txt files: the training text of the doc tests."""
    folder = tmp_path_factory.mktemp("own-text")
    for md in [
        *sorted(DOCS.glob("*.md")),
        ROOT / "README.md",
        *sorted(ROOT.glob("packages/*/README.md")),
    ]:
        name = md.relative_to(ROOT).as_posix().replace("/", "__")
        (folder / f"{name}.txt").write_text(md.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, own_text: Path) -> Path:
    """A tiny random Llama with a real BPE tokenizer: stands in for a downloaded HF model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = tmp_path_factory.mktemp("tiny-model")
    tok_dir, model_dir = base / "tokenizer", base / "model"
    subprocess.run(
        ["foundry-data", "train-tokenizer", str(own_text), str(tok_dir), "--vocab-size", "512",
         "--no-progress"],
        check=True, env=_base_env(), capture_output=True,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return model_dir


@dataclass(frozen=True)
class PageRuns:
    """The four pages, started together (two at a time: the suite's two cores), by folder."""

    folders: dict[str, Path]
    runs: dict[str, Future[subprocess.CompletedProcess[str]]]

    def output(self, page: str) -> tuple[str, Path]:
        return _page_output(self.runs, page), self.folders[page]


@pytest.fixture(scope="session")
def eval_tasks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Generated task files served on 127.0.0.1; the environment that makes foundry-eval download
    them from there into a cache folder of its own."""
    from eval_task_data import serve_task_files, write_synthetic_data

    data = tmp_path_factory.mktemp("eval-task-files")
    write_synthetic_data(data)
    server = serve_task_files(data, tmp_path_factory.mktemp("eval-task-site"))
    try:
        yield {
            "FOUNDRY_EVAL_TASK_URL": server.base,
            "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg-cache")),
        }
    finally:
        server.close()


@pytest.fixture(scope="session")
def page_runs(
    tmp_path_factory: pytest.TempPathFactory,
    own_text: Path,
    tiny_model: Path,
    eval_tasks: dict[str, str],
) -> Iterator[PageRuns]:
    model = {"MODEL": str(tiny_model)}
    envs = {
        "train-from-scratch.md": {**TINY_SIZES, "DATA": str(own_text), **eval_tasks},
        "play-with-a-model.md": {**model, **eval_tasks},
        "fine-tune.md": {**model, "SEQ_LEN": "128"},
        "deploy-an-endpoint.md": {
            **model,
            "PORT": str(_free_port()),
            "FOUNDRY_INFER_API_KEY": "doc-key",
        },
    }
    folders = {page: tmp_path_factory.mktemp(page.removesuffix(".md")) for page in envs}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {
            page: pool.submit(_run_page, page, folders[page], env) for page, env in envs.items()
        }
        yield PageRuns(folders, runs)


@pytest.mark.slow
def test_play_with_a_model(page_runs: PageRuns) -> None:
    out, folder = page_runs.output("play-with-a-model.md")
    scores = json.loads((folder / "scores.json").read_text())["tasks"]
    assert {name.split("/")[0] for name in scores} == {"arc_easy", "piqa", "lambada_openai"}
    assert all(task["num_examples"] == 50 for task in scores.values())
    assert ">>> play-with-a-model.md" in out


@pytest.mark.slow
def test_deploy_an_endpoint(page_runs: PageRuns) -> None:
    out, folder = page_runs.output("deploy-an-endpoint.md")
    assert (folder / "model-onnx" / "model.onnx").is_file()
    completion = next(line for line in out.splitlines() if line.startswith("{"))
    assert json.loads(completion)["choices"][0]["text"] is not None
    assert "['my-model']" in out  # the openai client listed the served model
    server_log = next(folder.glob("background*.log")).read_text()
    assert "Application shutdown complete" in server_log  # SIGTERM: a graceful stop


@pytest.mark.slow
def test_fine_tune(page_runs: PageRuns) -> None:
    _, folder = page_runs.output("fine-tune.md")
    manifest = json.loads((folder / "sft-mds" / "foundry_manifest.json").read_text())
    assert manifest["kind"] == "finetuning" and manifest["num_samples"] == 8
    config = json.loads((folder / "my-finetuned" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert not (folder / "my-finetuned" / "adapter_config.json").exists()  # LoRA merged


@pytest.mark.slow
def test_train_from_scratch(page_runs: PageRuns) -> None:
    _, folder = page_runs.output("train-from-scratch.md")
    rows = [
        json.loads(line) for line in (folder / "runs/my-mpt/metrics.jsonl").read_text().splitlines()
    ]
    assert sum("loss/train/total" in row for row in rows) == 20
    assert (folder / "my-mpt-hf" / "config.json").is_file()
    scores = json.loads((folder / "scores.json").read_text())
    assert len(scores["tasks"]) == 3
    for task in scores["tasks"].values():
        assert task["num_examples"] == 20 and task["metrics"]
