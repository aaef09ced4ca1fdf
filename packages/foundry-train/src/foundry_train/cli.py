"""The ``foundry-train`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from foundry_train.errors import ConfigError, user_error_message

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("train", "validate", "export-hf", "migrate", "config-reference")

_EPILOG = """examples:
  foundry-train yamls/pretrain/mpt-125m.yaml                      # one process per GPU
  foundry-train cfg.yaml optimizer.lr=3e-4 max_duration=1000ba    # dotted overrides
  foundry-train validate cfg.yaml                                 # all errors, nothing started
  foundry-train export-hf ckpts/latest-rank0.pt out/hf            # full or sharded checkpoint
  foundry-train migrate llmfoundry.yaml foundry.yaml              # bring llm-foundry configs
  python -m foundry_train cfg.yaml                                # same without console scripts
multi-node: set WORLD_SIZE (all processes), NODE_RANK, MASTER_ADDR, MASTER_PORT on every node.
shipped configs: python -c "import foundry_train; print(foundry_train.shipped_yamls_dir())"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry-train",
        description="Train MPT or Hugging Face causal LMs from a YAML config (composer, FSDP).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train from a YAML (the default command)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", help="training YAML")
    t.add_argument("overrides", nargs="*", help="dotted.key=value overrides (YAML values)")
    v = sub.add_parser(
        "validate",
        help="check a config; start nothing",
        epilog="example: foundry-train validate cfg.yaml max_seq_len=512",
    )
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--skip-files", action="store_true", help="check only the schema")
    v.add_argument("--skip-hardware", action="store_true", help="skip GPU-dependent checks")
    e = sub.add_parser(
        "export-hf",
        help="checkpoint -> Hugging Face directory",
        epilog="example: foundry-train export-hf run/ckpts/ep0-ba100 out/hf",
    )
    e.add_argument(
        "checkpoint", help="composer .pt file, sharded checkpoint dir, or latest symlink"
    )
    e.add_argument("out", help="output HF directory")
    e.add_argument("--config", help="training YAML (default: the one saved beside the checkpoint)")
    e.add_argument("--overwrite", action="store_true")
    m = sub.add_parser(
        "migrate",
        help="llm-foundry YAML -> foundry-train YAML",
        epilog="example: foundry-train migrate mpt-125m.yaml ours.yaml",
    )
    m.add_argument("source")
    m.add_argument("out")
    m.add_argument("--overwrite", action="store_true")
    r = sub.add_parser("config-reference", help="print the Markdown reference of every key")
    r.add_argument("--out", help="write to this file instead of stdout")
    return parser


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
        problems = preflight_problems(cfg)
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
    from foundry_train.trainer import train

    train(cfg)
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
    from foundry_train.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, args.config, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from foundry_train.migrate import migrate_file

    report = migrate_file(args.source, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    if report:
        print("could not map (review by hand):")
        for line in report:
            print(f"  - {line}")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from foundry_train.reference import config_reference

    text = config_reference()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``foundry-train`` and ``python -m foundry_train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["train", *argv]
    args = build_parser().parse_args(argv)
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
