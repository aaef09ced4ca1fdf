"""``foundry-eval --list-tasks`` and ``foundry-eval fetch-tasks``: what tasks exist, and their data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from foundry_eval.config import TaskConfig, relative_data_path
from foundry_eval.errors import FoundryError
from foundry_eval.results import text_table
from foundry_eval.task_data import default_cache_dir, fetch_task_files, task_relpaths, task_url
from foundry_eval.tasks import load_tasks, select_tasks

__all__ = ["fetch_tasks_main", "list_tasks_main"]

_FETCH_EPILOG = """\
examples:
  foundry-eval fetch-tasks                          # every task of the v0.3 gauntlet
  foundry-eval fetch-tasks --tasks piqa,arc_easy --dest ./eval-data

The files come from llm-foundry's scripts/eval/local_data at a pinned tag; set
FOUNDRY_EVAL_TASK_URL (or --task-url) to use a mirror. Without --dest they go to
$XDG_CACHE_HOME/foundry/eval-data (default ~/.cache/foundry/eval-data), where foundry-eval
looks when --data-root is not given.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", help="comma-separated task labels (default: every task)")
    p.add_argument(
        "--task-config", help="task YAML (llm-foundry icl_tasks) instead of the shipped gauntlet"
    )


def _selected(args: argparse.Namespace, root: str | Path) -> list[TaskConfig]:
    names = [t.strip() for t in (args.tasks or "").split(",") if t.strip()] or None
    return select_tasks(load_tasks(args.task_config or "gauntlet_v0.3", root), names)


def _root(data_root: str | None) -> Path:
    given = data_root or os.environ.get("FOUNDRY_EVAL_DATA")
    return Path(given) if given else default_cache_dir()


def list_tasks_main(argv: list[str]) -> int:
    """Print every known task: label, few-shot count, type, data file and whether it is present."""
    p = argparse.ArgumentParser(prog="foundry-eval --list-tasks", add_help=False)
    p.add_argument("--list-tasks", action="store_true")
    p.add_argument("--data-root")
    _common(p)
    args, _ = p.parse_known_args(argv)
    try:
        root = _root(args.data_root)
        tasks = _selected(args, root)
    except FoundryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for t in tasks:
        rel = relative_data_path(t.dataset_uri) or t.dataset_uri
        here = "yes" if Path(t.data_path).is_file() else "no"
        rows.append([t.label, str(t.num_fewshot), t.icl_task_type, rel, here])
    print("\n".join(text_table(["task", "shots", "type", "data file", "present"], rows)))
    print(
        f"\n{len(tasks)} task settings; data files are looked up under {root} "
        "(--data-root, FOUNDRY_EVAL_DATA, or the download cache: foundry-eval fetch-tasks)."
    )
    return 0


def fetch_tasks_main(argv: list[str]) -> int:
    """Download the task files of the selected tasks into a folder (default: the cache)."""
    p = argparse.ArgumentParser(
        prog="foundry-eval fetch-tasks",
        description="Download llm-foundry's ICL task files for the selected tasks.",
        epilog=_FETCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--dest", help="folder to download into (default: the cache folder)")
    p.add_argument("--task-url", help="base URL of the task files (env FOUNDRY_EVAL_TASK_URL)")
    p.add_argument("--force", action="store_true", help="download files already present again")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    dest = Path(args.dest) if args.dest else default_cache_dir()
    try:
        rels = task_relpaths(_selected(args, dest))
        got = fetch_task_files(
            rels, dest, base_url=args.task_url, force=args.force, progress=not args.no_progress
        )
    except FoundryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"foundry-eval: {len(got)} file(s) downloaded from {task_url(args.task_url)}, "
        f"{len(rels) - len(got)} already present, in {dest}",
        file=sys.stderr,
    )
    return 0
