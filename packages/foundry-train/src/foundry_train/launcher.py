"""Starting one training process per GPU (or per `launcher.nproc`) through composer's launcher."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from foundry_train.config import TrainConfig, dump_config

__all__ = [
    "under_launcher",
    "local_process_count",
    "launch_command",
    "relaunch",
    "single_process_node_env",
    "resolved_config_file",
]

_LAUNCHED_ENV = ("LOCAL_WORLD_SIZE", "LOCAL_RANK", "RANK")


def under_launcher() -> bool:
    """True inside a process started by a launcher (composer, torchrun)."""
    return any(k in os.environ for k in _LAUNCHED_ENV)


def local_process_count(cfg: TrainConfig) -> int:
    """Processes to start on this node: ``launcher.nproc``, else one per visible GPU."""
    if cfg.launcher.nproc:
        return cfg.launcher.nproc
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _multinode_args() -> list[str]:
    """World size / node rank / master address taken from the environment (Slurm-style)."""
    args: list[str] = []
    mapping = {
        "WORLD_SIZE": "--world_size",
        "NODE_RANK": "--node_rank",
        "MASTER_ADDR": "--master_addr",
        "MASTER_PORT": "--master_port",
    }
    for env, flag in mapping.items():
        if os.environ.get(env):
            args += [flag, os.environ[env]]
    return args


def launch_command(cfg: TrainConfig, argv: list[str]) -> list[str] | None:
    """The composer launcher command to run, or None to train in this process."""
    if under_launcher():
        return None
    nproc = local_process_count(cfg)
    if nproc <= 1:
        return None  # one process per node: trained in this process (see single_process_node_env)
    cmd = [sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc)]
    cmd += _multinode_args()
    if "--master_port" not in cmd and cfg.launcher.master_port:
        cmd += ["--master_port", str(cfg.launcher.master_port)]
    cmd += ["-m", "foundry_train", *argv]
    return cmd


def single_process_node_env(cfg: TrainConfig) -> dict[str, str] | None:
    """Worker env for a multi-node run with one process per node (no launcher needed)."""
    if under_launcher() or local_process_count(cfg) != 1:
        return None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    node = os.environ.get("NODE_RANK", "0")
    return {
        "RANK": node,
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "NODE_RANK": node,
        "WORLD_SIZE": str(world),
    }


@contextlib.contextmanager
def resolved_config_file(cfg: TrainConfig) -> Iterator[Path]:
    """The validated config written once as YAML, for the workers to read instead of the user's
    YAML and overrides; removed when the run ends."""
    fd, name = tempfile.mkstemp(prefix="foundry-train-resolved-", suffix=".yaml")
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dump_config(cfg))
        yield path
    finally:
        path.unlink(missing_ok=True)


def relaunch(cmd: list[str]) -> int:
    """Run the launcher and return its exit status (children inherit stdout/stderr)."""
    env = dict(os.environ)
    # the launcher re-derives these from its flags; keep them from leaking into workers twice
    for key in ("WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.call(cmd, env=env)
