"""The ``foundry-eval`` command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from foundry_eval.config import EvalConfig, apply_overrides, parse_model, read_yaml
from foundry_eval.errors import FoundryError, user_error_message
from foundry_eval.model_source import model_source

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  # quick form: a model directory and a few gauntlet tasks (task files downloaded on first use)
  foundry-eval ./my-model --tasks piqa,arc_easy,lambada_openai

  # every known task with its type, few-shot count and data file; download them all
  foundry-eval --list-tasks
  foundry-eval fetch-tasks --dest ./eval-data

  # the whole v0.3 gauntlet, results as JSON, Markdown and a chart
  foundry-eval ./my-model --data-root ./eval-data --json results.json --markdown results.md --png results.png

  # config form with dotted overrides
  foundry-eval eval.yaml batch_size=32 model.dtype=bfloat16 output.json=out.json

  # code tasks run generated code in a sandbox only when you allow it
  foundry-eval ./my-model --tasks human_eval --allow-code-execution --data-root ./eval-data

config form (eval.yaml):
  model: {path: ./my-model, dtype: auto, device_map: null}
  data_root: ./eval-data            # task files are named relative to it (or s3://bucket/prefix);
                                    # leave it out to use the download cache
  tasks: gauntlet_v0.3              # shipped name, a YAML path (llm-foundry icl_tasks), or a list
  gauntlet: gauntlet_v0.3           # or a YAML path, or null
  task_names: [piqa, arc_easy]      # optional subset
  batch_size: 16
  output: {json: results.json, markdown: results.md, png: null, overwrite: false}

On a machine with several GPUs the examples are spread over all of them (one process per GPU);
with --device-map auto a model too large for one GPU is split across GPUs instead.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="foundry-eval",
        description="Score a causal LM on in-context-learning tasks and the eval gauntlet.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from foundry_eval import __version__

    p.add_argument(
        "--version",
        action="version",
        version=f"foundry-eval {__version__}",
        help="print the package name and version, then exit",
    )
    p.add_argument(
        "target",
        nargs="?",
        metavar="TARGET",
        help="an eval CONFIG.yaml, or a model directory or hub id org/name (quick form)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted-key overrides, values in YAML (config form only)",
    )
    _add_task_options(p)
    _add_model_options(p)
    _add_output_options(p)
    return p


def _add_task_options(p: argparse.ArgumentParser) -> None:
    """Which tasks run, from where, and how many examples."""
    p.add_argument(
        "--tasks", metavar="LIST", help="comma-separated task labels (default: every gauntlet task)"
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder or s3:// prefix holding the task files (env FOUNDRY_EVAL_DATA; default: "
        "download them into ~/.cache/foundry/eval-data, see 'foundry-eval fetch-tasks --help')",
    )
    p.add_argument(
        "--list-tasks",
        action="store_true",
        help="list every known task and its data file, then exit",
    )
    p.add_argument(
        "--task-config",
        metavar="FILE",
        help="task YAML (llm-foundry icl_tasks) instead of the shipped gauntlet",
    )
    p.add_argument(
        "--gauntlet",
        metavar="NAME",
        help="gauntlet YAML or shipped name; 'none' to skip aggregation",
    )
    p.add_argument(
        "--num-fewshot", type=int, metavar="N", help="override every task's few-shot count"
    )
    p.add_argument(
        "--limit", type=int, metavar="N", help="score only the first N examples of each task"
    )
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="sequences per forward pass (default: 16)"
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Where and how the model runs."""
    p.add_argument("--device", metavar="DEVICE", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--num-gpus", type=int, metavar="N", help="GPUs to use (default: all visible)")
    p.add_argument(
        "--device-map",
        metavar="MAP",
        help="shard a large model over GPUs, e.g. 'auto' (needs accelerate)",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights' dtype (default: auto: as saved on a GPU, float32 on a CPU)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="TOKENIZER",
        help="tokenizer directory or hub id (default: the model's)",
    )
    p.add_argument(
        "--max-seq-len", type=int, metavar="N", help="context window (default: the model's)"
    )


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """What is written and shown."""
    p.add_argument("--json", dest="json_out", metavar="FILE", help="write results JSON here")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report here")
    p.add_argument("--png", metavar="FILE", help="write a bar chart here (needs matplotlib)")
    p.add_argument(
        "--log-samples", action="store_true", help="include per-example records in the JSON"
    )
    p.add_argument(
        "--allow-code-execution", action="store_true", help="run generated code (code tasks)"
    )
    p.add_argument("--no-share-prefix", action="store_true", help="score every choice from scratch")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags as a nested dict, only those the user gave."""
    data: dict[str, Any] = {}
    model: dict[str, Any] = {}
    output: dict[str, Any] = {}
    simple = {
        "data_root": args.data_root,
        "num_fewshot": args.num_fewshot,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "device": args.device,
        "num_gpus": args.num_gpus,
        "max_seq_len": args.max_seq_len,
        "tasks": args.task_config,
    }
    data.update({k: v for k, v in simple.items() if v is not None})
    if args.tasks:
        data["task_names"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.gauntlet:
        data["gauntlet"] = None if args.gauntlet.lower() == "none" else args.gauntlet
    if args.allow_code_execution:
        data["allow_code_execution"] = True
    if args.no_share_prefix:
        data["share_prefix"] = False
    if args.no_progress:
        data["progress"] = False
    for key, value in (
        ("device_map", args.device_map),
        ("dtype", args.dtype),
        ("tokenizer", args.tokenizer),
    ):
        if value is not None:
            model[key] = value
    for key, value in (("json", args.json_out), ("markdown", args.markdown), ("png", args.png)):
        if value is not None:
            output[key] = value
    if args.log_samples:
        output["log_samples"] = True
    if args.overwrite:
        output["overwrite"] = True
    if model:
        data["model"] = model
    if output:
        data["output"] = output
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _is_model(target: str) -> bool:
    """Whether the positional names a model (a directory or a hub id) rather than a config YAML;
    raises FoundryError for a path that does not exist (see foundry_eval.model_source)."""
    path = Path(target).expanduser()
    if path.is_dir():
        return True
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return False
    return model_source(target, "model directory or eval config") == "hub"


def build_config(args: argparse.Namespace) -> EvalConfig:
    target = Path(args.target)
    if _is_model(args.target):
        if args.overrides:
            raise FoundryError(
                f"dotted overrides ({args.overrides[0]}) apply to a CONFIG.yaml; with a model "
                "directory use the --flags (see --help)."
            )
        data: dict[str, Any] = {"model": {"path": str(args.target)}}
        root = args.data_root or os.environ.get("FOUNDRY_EVAL_DATA")
        if root:
            data["data_root"] = root
    else:
        loaded = read_yaml(target)
        if not isinstance(loaded, dict):
            raise FoundryError(f"{target} must hold a mapping (model:, data_root:, tasks:, ...).")
        data = apply_overrides(loaded, list(args.overrides))
    _merge(data, _flag_overrides(args))
    return parse_model(EvalConfig, data, "eval config")


def _task_command(argv: list[str]) -> int:
    """`foundry-eval fetch-tasks ...` and `foundry-eval --list-tasks ...`."""
    from foundry_eval import task_cli

    try:
        if argv[:1] == ["fetch-tasks"]:
            return task_cli.fetch_tasks_main(argv[1:])
        return task_cli.list_tasks_main(argv)
    except Exception as exc:  # a user error of any Foundry package, or a bad path
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fetch-tasks"] or "--list-tasks" in argv:
        return _task_command(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *extra]  # KEY=VALUE after an option (argparse leaves them)
    if args.target is None:
        parser.error("give TARGET: an eval CONFIG.yaml, or a model directory or hub id")
    try:
        cfg = build_config(args)
        from foundry_eval.run import run_eval

        start = time.perf_counter()
        results = run_eval(cfg)
        print(results.to_table())
        written = results.write(
            json_path=cfg.output.json_path,
            markdown=cfg.output.markdown,
            png=cfg.output.png,
            log_samples=cfg.output.log_samples,
            overwrite=cfg.output.overwrite,
        )
    except Exception as exc:  # any Foundry package's user error, or a bad path: no traceback
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    done = [t for t in results.tasks.values() if t.missing is None]
    n = sum(t.num_examples for t in done)
    extra = f"; wrote {', '.join(str(p) for p in written)}" if written else ""
    print(
        f"foundry-eval: {len(done)} task(s), {n} examples in {time.perf_counter() - start:.1f}s{extra}",
        file=sys.stderr,
    )
    return 0
