"""Checks that need more than the schema (files, tokenizer, world size); run before any process."""

from __future__ import annotations

import os
from pathlib import Path

from foundry_data import location_kind

from foundry_train.config import TrainConfig
from foundry_train.config.sections import LoaderConfig
from foundry_train.data.loader import stream_locations
from foundry_train.errors import FoundryError

__all__ = ["is_hub_id", "planned_world_size", "preflight_problems"]


def planned_world_size(cfg: TrainConfig) -> int:
    """Processes the run will have: WORLD_SIZE if set, else nproc (or GPUs) on this node."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if cfg.launcher.nproc:
        return cfg.launcher.nproc
    import torch

    return max(torch.cuda.device_count(), 1)


def _batch_problems(cfg: TrainConfig, world: int) -> list[str]:
    problems = []
    mb = cfg.device_train_microbatch_size
    step = world * (mb if isinstance(mb, int) else 1)
    if cfg.global_train_batch_size % step:
        what = (
            f"world size {world} x device_train_microbatch_size {mb}"
            if isinstance(mb, int)
            else f"world size {world}"
        )
        problems.append(
            f"global_train_batch_size: {cfg.global_train_batch_size} is not divisible by {what}; "
            f"use a multiple of {step}."
        )
    return problems


def _loader_problems(name: str, loader: LoaderConfig, cfg: TrainConfig) -> list[str]:
    problems = []
    for i, stream in enumerate(stream_locations(loader)):
        if stream.remote is not None or stream.local is None:
            continue
        root = Path(stream.local) / (stream.split or "")
        if not (root / "index.json").is_file():
            problems.append(
                f"{name}: '{root}' is not an MDS dataset (no index.json). "
                "Convert data with `foundry-data convert` or fix the path."
            )
            continue
        problems += _manifest_problems(f"{name} stream {i}", root, loader, cfg)
    return problems


def _manifest_problems(where: str, root: Path, loader: LoaderConfig, cfg: TrainConfig) -> list[str]:
    import foundry_data

    if not (root / foundry_data.MANIFEST_NAME).is_file():
        return []  # MDS data written by other tools (e.g. llm-foundry) has no manifest
    manifest = foundry_data.read_manifest(str(root))
    problems = []
    if manifest.kind != loader.name:
        problems.append(
            f"{where}: '{root}' holds {manifest.kind} data but the loader is '{loader.name}'."
        )
    if (
        loader.name == "pretraining"
        and manifest.seq_len is not None
        and manifest.seq_len < cfg.max_seq_len
    ):
        problems.append(
            f"{where}: dataset sequence length {manifest.seq_len} is shorter than max_seq_len "
            f"{cfg.max_seq_len}; lower max_seq_len, or convert the data again with samples of "
            f"{cfg.max_seq_len} tokens: `foundry-data convert SOURCE OUT --tokenizer TOKENIZER "
            f"--concat-tokens {cfg.max_seq_len}`."
        )
    return problems


def _model_vocab(cfg: TrainConfig) -> int | None:
    from foundry_train.model import resolve_model_config

    try:
        return int(resolve_model_config(cfg.model, cfg.max_seq_len).vocab_size)
    except FoundryError:  # an unreadable model directory is reported by _model_problems
        return None


def is_hub_id(name: str) -> bool:
    """Whether a tokenizer or model ``name`` that is no local path reads as a Hugging Face hub id
    ('gpt2' or 'org/name'); anything else ('./tok', '/data/tok', 'runs/x/tok') is a local folder."""
    parts = name.split("/")
    return (
        not Path(name).exists()
        and len(parts) <= 2
        and all(parts)
        and not name.startswith((".", "~"))
        and ".." not in parts
    )


def _missing_tokenizer_folder(cfg: TrainConfig) -> list[str]:
    name = cfg.tokenizer.name
    if Path(name).expanduser().is_dir() or is_hub_id(name):
        return []
    what = "is a file, not a folder" if Path(name).expanduser().exists() else "does not exist"
    return [
        f"tokenizer.name: the folder '{name}' {what}. Give a tokenizer folder (written by "
        "`foundry-data train-tokenizer` or save_pretrained) or a hub id such as 'org/name'."
    ]


def _tokenizer_problems(cfg: TrainConfig) -> list[str]:
    from foundry_train.data.tokenizer import load_tokenizer

    if location_kind(cfg.tokenizer.name) == "missing":
        return [f"tokenizer.name: '{cfg.tokenizer.name}' does not exist."]
    try:
        tok = load_tokenizer(cfg.tokenizer)
    except FoundryError as exc:
        return [str(exc)]
    vocab = _model_vocab(cfg)
    if vocab is not None and len(tok) > vocab:
        return [
            f"tokenizer.name: the tokenizer has {len(tok)} tokens but the model's vocab_size is "
            f"{vocab}; set model.config_overrides.vocab_size >= {len(tok)}."
        ]
    return []


def _model_problems(cfg: TrainConfig) -> list[str]:
    mc = cfg.model
    where = mc.pretrained_model_name_or_path
    if where and location_kind(where) == "missing":
        return [
            f"model.pretrained_model_name_or_path: '{where}' does not exist (a local path; a "
            "Hugging Face Hub id is written org/name)."
        ]
    if mc.name == "mpt" and mc.preset:
        import foundry_models

        if mc.preset not in foundry_models.PRESETS:
            return [
                f"model.preset: unknown preset '{mc.preset}'; one of {', '.join(foundry_models.PRESETS)}."
            ]
    from foundry_train.model import resolve_model_config

    try:
        resolve_model_config(mc, cfg.max_seq_len)
    except FoundryError as exc:
        return [str(exc)]
    return []


def _attention_problems(cfg: TrainConfig) -> list[str]:
    """An explicit attn_impl this machine cannot run (`auto` always runs)."""
    if cfg.model.name != "mpt":
        return []
    from foundry_models.attention import check_impl_available

    from foundry_train.model import resolve_model_config

    try:
        config = resolve_model_config(cfg.model, cfg.max_seq_len)
    except FoundryError:  # reported by _model_problems
        return []
    impl = str(getattr(config, "attn_config", {}).get("attn_impl", "auto"))
    where = "model.config_overrides.attn_config.attn_impl"
    return [f"{where}: {problem}" for problem in check_impl_available(impl)]


def preflight_problems(
    cfg: TrainConfig, world_size: int | None = None, hardware: bool = True
) -> list[str]:
    """Every problem found beyond the schema (empty when the run can start).

    ``hardware=False`` skips the checks that need this machine's GPUs (for validating a GPU
    config on a laptop).
    """
    world = world_size or planned_world_size(cfg)
    problems = _batch_problems(cfg, world)
    problems += _model_problems(cfg)
    problems += _loader_problems("train_loader", cfg.train_loader, cfg)
    if cfg.eval_loader is not None:
        problems += _loader_problems("eval_loader", cfg.eval_loader, cfg)
    problems += _missing_tokenizer_folder(cfg)
    if not problems:
        problems += _tokenizer_problems(cfg)
    if cfg.load_path and "://" not in cfg.load_path and not Path(cfg.load_path).exists():
        problems.append(f"load_path: '{cfg.load_path}' does not exist.")
    if hardware:
        problems += _hardware_problems(cfg, world)
    return problems


def _hardware_problems(cfg: TrainConfig, world: int) -> list[str]:
    import torch

    from foundry_train.run_plan import Machine, fp8_problems

    problems = fp8_problems(cfg, Machine.here(world))
    if cfg.fsdp_config is not None and not torch.cuda.is_available():
        problems.append(
            "fsdp_config: FSDP needs CUDA GPUs; remove fsdp_config on CPU (DDP is used)."
        )
    if cfg.device_train_microbatch_size == "auto" and not torch.cuda.is_available():
        problems.append("device_train_microbatch_size: 'auto' needs CUDA; give a number on CPU.")
    return problems + _attention_problems(cfg)
