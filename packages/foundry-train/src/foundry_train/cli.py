"""The ``foundry-train`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from foundry_train.errors import ConfigError, user_error_message

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("train", "validate", "export-hf", "migrate", "config-reference")

_EPILOG = """examples:
  foundry-train my-config.yaml                                    # one process per GPU
  foundry-train my-config.yaml optimizer.lr=3e-4 max_duration=1000ba   # dotted overrides
  foundry-train validate my-config.yaml                           # all errors, nothing started
  foundry-train export-hf runs/my-run/checkpoints/latest-rank0.pt hf/   # full or sharded
  foundry-train migrate llmfoundry.yaml my-config.yaml            # bring llm-foundry configs
  python -m foundry_train my-config.yaml                          # without console scripts
multi-node: set WORLD_SIZE (all processes), NODE_RANK, MASTER_ADDR, MASTER_PORT on every node.
shipped configs to copy (debug-cpu.yaml, pretrain/mpt-*.yaml, finetune/*.yaml) are in:
  python -c "import foundry_train; print(foundry_train.shipped_yamls_dir())"
"""


def build_parser() -> argparse.ArgumentParser:
    from foundry_train import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="foundry-train",
        description="Train MPT or Hugging Face causal LMs from a YAML config (composer, FSDP).",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"foundry-train {__version__}",
        help="print the package name and version, then exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(sub, fmt)
    _add_file_commands(sub, fmt)
    return parser


def _add_run_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``train`` (the default command) and ``validate``."""
    t = sub.add_parser(
        "train",
        help="train from a YAML (the default command: `foundry-train CONFIG` means this)",
        description="Train from a YAML config, one process per GPU; resumes from the newest "
        "checkpoint when autoresume is on.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    t.add_argument("config", metavar="CONFIG", help="training YAML")
    t.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted-key overrides, values in YAML (optimizer.lr=3e-4)",
    )
    t.add_argument(
        "--skip-hardware",
        action="store_true",
        help="skip the checks of this machine's GPUs (e.g. run fp8 emulated on a CPU)",
    )
    v = sub.add_parser(
        "validate",
        help="check a config; start nothing",
        description="Check a training config: the schema, the data and tokenizer paths, and "
        "the hardware it asks for; print every problem at once and start nothing.",
        epilog="example:\n  foundry-train validate my-config.yaml max_seq_len=512",
        formatter_class=fmt,
    )
    v.add_argument("config", metavar="CONFIG", help="training YAML")
    v.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted-key overrides, values in YAML (max_seq_len=512)",
    )
    v.add_argument("--skip-files", action="store_true", help="check only the schema")
    v.add_argument("--skip-hardware", action="store_true", help="skip GPU-dependent checks")


def _add_file_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``export-hf``, ``migrate`` and ``config-reference``."""
    e = sub.add_parser(
        "export-hf",
        help="checkpoint -> Hugging Face directory",
        description="Write a Hugging Face directory (config, safetensors weights, tokenizer) "
        "from a full or sharded composer checkpoint.",
        epilog="example:\n  foundry-train export-hf runs/my-run/checkpoints/ep0-ba100 hf/",
        formatter_class=fmt,
    )
    e.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="composer .pt file, sharded checkpoint folder, or latest symlink",
    )
    e.add_argument("out", metavar="OUT", help="output Hugging Face directory")
    e.add_argument(
        "--config",
        metavar="CONFIG",
        help="training YAML (default: the one saved beside the checkpoint)",
    )
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    m = sub.add_parser(
        "migrate",
        help="llm-foundry YAML -> foundry-train YAML",
        description="Rewrite an llm-foundry training YAML as a foundry-train one and list the "
        "keys it could not map.",
        epilog="example:\n  foundry-train migrate llmfoundry-mpt-125m.yaml my-config.yaml",
        formatter_class=fmt,
    )
    m.add_argument("source", metavar="SOURCE", help="llm-foundry training YAML")
    m.add_argument("out", metavar="OUT", help="foundry-train YAML to write")
    m.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    r = sub.add_parser(
        "config-reference",
        help="print the Markdown reference of every key",
        description="Print the Markdown reference of every training-config key, generated "
        "from the schema.",
    )
    r.add_argument("--out", metavar="FILE", help="write to this file instead of stdout")


def _train(args: argparse.Namespace) -> int:
    from foundry_train.config import load_config
    from foundry_train.launcher import (
        launch_command,
        relaunch,
        resolved_config_file,
        single_process_node_env,
        under_launcher,
    )
    from foundry_train.preflight import preflight_problems

    cfg = load_config(args.config, args.overrides)
    if not under_launcher():
        problems = preflight_problems(cfg, hardware=not args.skip_hardware)
        if problems:
            raise ConfigError(problems, args.config)
        node_env = single_process_node_env(cfg)
        if node_env is not None:
            os.environ.update(node_env)
        if launch_command(cfg, []) is not None:  # several processes on this node
            # the workers read the config this process validated, not the YAML and overrides
            with resolved_config_file(cfg) as resolved:
                cmd = launch_command(cfg, ["train", str(resolved)]) or []
                print(
                    f"foundry-train: starting {cmd[cmd.index('-n') + 1]} processes per node",
                    file=sys.stderr,
                )
                return relaunch(cmd)
    from composer.utils import dist

    from foundry_train.run_summary import run_summary
    from foundry_train.trainer import train

    start = time.perf_counter()
    trainer = train(cfg)
    if dist.get_global_rank() == 0:
        print(run_summary(cfg, trainer, time.perf_counter() - start), flush=True)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from foundry_train.config import load_config

    cfg = load_config(args.config, args.overrides)
    if not args.skip_files:  # the schema alone needs neither torch nor streaming
        from foundry_train.preflight import preflight_problems

        problems = preflight_problems(cfg, hardware=not args.skip_hardware)
        if problems:
            raise ConfigError(problems, args.config)
    print(f"{args.config}: OK")
    return 0


def _export(args: argparse.Namespace) -> int:
    from foundry_train.checkpointing.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, args.config, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from foundry_train.config.migrate import migrate_file

    report = migrate_file(args.source, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    if report:
        print("could not map (review by hand):")
        for line in report:
            print(f"  - {line}")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from foundry_train.config.reference import config_reference

    text = config_reference()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``, taking KEY=VALUE overrides that follow an option too
    (``validate CONFIG --skip-hardware max_seq_len=512``), which plain argparse refuses."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``foundry-train`` and ``python -m foundry_train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["train", *argv]
    args = _parse(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    handlers = {
        "validate": _validate,
        "export-hf": _export,
        "migrate": _migrate,
        "config-reference": _reference,
    }
    try:
        if args.command == "train":
            return _train(args)
        return handlers[args.command](args)
    except Exception as exc:  # any Foundry package's user error, or a bad path: no traceback
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
