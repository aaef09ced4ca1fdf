"""Wiring a TrainConfig into a composer Trainer and running it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.core import Algorithm, Callback, DataSpec
from composer.utils import dist, reproducibility

from foundry_train.callbacks.build import build_callbacks
from foundry_train.callbacks.monitors import MetricsFileLogger
from foundry_train.checkpointing.export import CONFIG_NAME
from foundry_train.checkpointing.resume import (
    checkpoint_batch,
    find_latest_checkpoint,
    remember_earlier_checkpoints,
    set_aside_incomplete,
)
from foundry_train.checkpointing.safety import scan_checkpoint
from foundry_train.checkpointing.save_errors import checkpoint_write_errors
from foundry_train.config import TrainConfig, dump_config
from foundry_train.config.root import DEFAULT_RUN_NAME, LoggersConfig
from foundry_train.config.sections import GradientClippingConfig, LoaderConfig
from foundry_train.data.loader import build_dataloader, token_counts
from foundry_train.data.tokenizer import load_tokenizer, pad_token_id
from foundry_train.errors import CheckpointSecurityError, FoundryError
from foundry_train.fp8 import apply_fp8
from foundry_train.loggers import build_tracking_loggers
from foundry_train.model import (
    attention_summary,
    build_composer_model,
    cast_embedding_output,
    checkpoint_blocks,
)
from foundry_train.optim import build_optimizer, build_scheduler
from foundry_train.run_plan import Machine, RunPlan, plan_run

__all__ = ["build_trainer", "train", "resolve_load_path"]

log = logging.getLogger("foundry_train")


def _device() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def _init_dist(cfg: TrainConfig) -> None:
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from composer.devices import DeviceCPU, DeviceGPU

        device = DeviceGPU() if torch.cuda.is_available() else DeviceCPU()
        dist.initialize_dist(device, timeout=cfg.dist_timeout)


def _saves_remotely(cfg: TrainConfig) -> bool:
    """Whether checkpoints go to an object store (``s3://...``) rather than a local folder."""
    return bool(cfg.save_folder and "://" in cfg.save_folder)


def resolve_load_path(cfg: TrainConfig) -> str | None:
    """The checkpoint this run starts from (autoresume first), scanned before composer sees it."""
    return _resolve_load(cfg)[0]


def _resolve_load(cfg: TrainConfig) -> tuple[str | None, bool]:
    """`resolve_load_path`'s path, and whether it is ``cfg.load_path`` (not an autoresume pick):
    only then does ``load_weights_only`` apply. A remote load_path comes back as its local copy,
    so the two cannot be told apart by comparing paths.

    A checkpoint in an object store (autoresume from a remote ``save_folder``, or a remote
    ``load_path``) is downloaded to a local cache first by one process per node. A refused or
    unreadable checkpoint stops every rank with rank 0's error.
    """
    remote_folder = _saves_remotely(cfg)
    chosen: str | None = None
    if cfg.autoresume and cfg.save_folder:
        picked, error, refused = None, "", False
        if dist.get_global_rank() == 0:
            try:
                picked = _latest(cfg.save_folder, remote_folder)
            except FoundryError as exc:
                error, refused = str(exc), isinstance(exc, CheckpointSecurityError)
        box = [(picked, error, refused)]
        # composer leaves `group` unannotated
        dist.broadcast_object_list(box, src=0)  # pyright: ignore[reportUnknownMemberType]
        chosen, error, refused = box[0]
        if error:
            raise (CheckpointSecurityError if refused else FoundryError)(error)
        if chosen:
            log.info("autoresume: resuming from %s", chosen)
    from_load_path = chosen is None and bool(cfg.load_path)
    if from_load_path:
        chosen = cfg.load_path
    if chosen is not None and "://" in chosen:
        chosen = _fetch(chosen)
    if chosen is not None:
        scan_checkpoint(chosen)
    return chosen, from_load_path


def _latest(save_folder: str, remote: bool) -> str | None:
    """Rank 0: the newest complete checkpoint in the save folder (a URI when it is remote)."""
    if remote:
        from foundry_train.checkpointing.remote import latest_remote_checkpoint

        name = latest_remote_checkpoint(save_folder)
        return f"{save_folder.rstrip('/')}/{name}" if name else None
    found = find_latest_checkpoint(save_folder)
    batch = (checkpoint_batch(found) or 0) if found is not None else 0
    for src, dst in set_aside_incomplete(save_folder, batch):
        log.warning("moved incomplete checkpoint %s to %s", src, dst)
    return None if found is None else str(found)


def _fetch(uri: str) -> str:
    """Download a remote checkpoint once per node (local rank 0); every rank gets the path."""
    from foundry_train.checkpointing.remote import download_checkpoint, remote_cache_dir

    folder, _, name = uri.rstrip("/").rpartition("/")
    error = ""
    if dist.get_local_rank() == 0:
        try:
            download_checkpoint(folder, name)
        except FoundryError as exc:
            error = str(exc)
    errors = dist.all_gather_object(error)  # pyright: ignore[reportUnknownMemberType]  # `group`
    failed = [e for e in errors if e]
    if failed:
        raise FoundryError(failed[0])
    return str(remote_cache_dir(folder) / name)


def _fsdp(cfg: TrainConfig) -> dict[str, Any] | None:
    if cfg.fsdp_config is None:
        return None
    return {"fsdp": cfg.fsdp_config.model_dump(exclude={"single_gpu"})}


def _announce(plan: RunPlan, attention: str) -> None:
    """The start-up line (rank 0): each speed choice of this run and why."""
    if dist.get_global_rank() == 0:
        print(f"foundry-train: {plan.line(attention)}", file=sys.stderr, flush=True)


def _check_existing_checkpoints(cfg: TrainConfig) -> None:
    if not cfg.save_folder or cfg.autoresume or cfg.save_overwrite or _saves_remotely(cfg):
        return
    folder = Path(cfg.save_folder)
    if folder.is_dir() and find_latest_checkpoint(folder) is not None:
        raise FoundryError(
            f"save_folder '{folder}' already holds checkpoints. Set autoresume: true to continue "
            "that run, save_overwrite: true to replace it, or choose another save_folder."
        )


def _write_run_config(cfg: TrainConfig) -> None:
    if not cfg.save_folder or _saves_remotely(cfg) or dist.get_global_rank() != 0:
        return
    folder = Path(cfg.save_folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{CONFIG_NAME}.tmp-{os.getpid()}"
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, folder / CONFIG_NAME)


def build_trainer(cfg: TrainConfig, extra_callbacks: list[Callback] | None = None) -> Trainer:
    """A composer Trainer for ``cfg``: one named step per job, each given only what it needs."""
    _check_existing_checkpoints(cfg)  # before the rendezvous: no rank can have saved yet
    device_batch = _join_processes(cfg)
    load_path, from_load_path = _resolve_load(cfg)  # a bad checkpoint: refused before building
    pad_id = pad_token_id(load_tokenizer(cfg.tokenizer))
    plan = plan_run(cfg, Machine.here(dist.get_world_size()))
    cfg = cfg.model_copy(update={"compile": plan.compile})  # the saved config says what ran
    reproducibility.seed_all(cfg.seed)  # same initial weights in every process and every run
    model = _build_model(cfg, plan)
    train_dl, eval_dl = _build_dataloaders(cfg, device_batch, pad_id, _vocab_size(model))
    _announce(plan, attention_summary(cfg.model, cfg.max_seq_len))  # once the data opened
    metrics_path = _metrics_path(cfg)
    _write_run_config(cfg)
    finetuning = cfg.train_loader.name == "finetuning"
    trainer = Trainer(
        run_name=cfg.run_name or DEFAULT_RUN_NAME,
        model=model,
        # fine-tuning micro-batches hold different numbers of scored (response) tokens: each
        # one's mean loss is weighted by them, so the gradient does not depend on the
        # micro-batch size (composer's default weights by samples)
        train_dataloader=DataSpec(train_dl, get_num_tokens_in_batch=token_counts)
        if finetuning
        else train_dl,
        accumulate_train_batch_on_tokens=finetuning,
        eval_dataloader=eval_dl,
        optimizers=build_optimizer(cfg.optimizer, model.parameters()),
        schedulers=build_scheduler(cfg.scheduler),
        step_schedulers_every_batch=True,
        algorithms=_algorithms(cfg.gradient_clipping),
        callbacks=[*build_callbacks(cfg, metrics_path), *(extra_callbacks or [])],
        loggers=_loggers(cfg.loggers, metrics_path),
        **_run_length_args(cfg, device_batch, has_eval=eval_dl is not None),
        **_checkpoint_args(cfg, load_path, from_load_path),
        **_runtime_args(cfg, plan),
    )
    if load_path and not from_load_path and cfg.save_folder and not _saves_remotely(cfg):
        remember_earlier_checkpoints(trainer, cfg.save_folder, load_path)  # autoresumed
    return trainer


def _join_processes(cfg: TrainConfig) -> int:
    """Join the other ranks; the samples each rank takes per optimizer step."""
    _init_dist(cfg)
    world = dist.get_world_size()
    log.info(
        "foundry-train: world size %d, rank %d, device %s", world, dist.get_global_rank(), _device()
    )
    if cfg.global_train_batch_size % world:
        raise FoundryError(
            f"global_train_batch_size {cfg.global_train_batch_size} is not divisible by the world "
            f"size {world}."
        )
    return cfg.global_train_batch_size // world


def _build_model(cfg: TrainConfig, plan: RunPlan) -> Any:
    """The composer model: FP8 layers and torch.compile as the run plan says."""
    model = build_composer_model(cfg.model, cfg.max_seq_len, fsdp=plan.fsdp)
    if plan.residual_dtype is not None:
        cast_embedding_output(model.model, plan.residual_dtype)
    if plan.act_ckpt_without_fsdp and cfg.fsdp_config is not None:
        checkpoint_blocks(model.model, cfg.fsdp_config.activation_checkpointing_reentrant)
    if plan.fp8 is not None:
        converted = apply_fp8(model.model, plan.fp8)
        log.info("fp8: %d linear layers train through torchao float8 (%s)", converted, plan.fp8)
    if plan.compile == "blocks":
        compile_blocks(model.model, plan.compile_mode)
    elif plan.compile == "model" and plan.fsdp and dist.get_world_size() > 1:
        log.warning(
            "compile: model under multi-GPU FSDP was measured much slower than compile: blocks "
            "(MPT-1B on 2xH200: 77% of one GPU's tokens/s per GPU, against 97% with blocks); "
            "use compile: blocks with FSDP"
        )
    return model


def _build_dataloaders(
    cfg: TrainConfig, device_batch: int, pad_id: int, vocab_size: int | None
) -> tuple[Any, Any]:
    """The training loader (object-store failures made clear) and the eval loader, if any."""
    with _store_errors(cfg.train_loader):
        train_dl = build_dataloader(
            cfg.train_loader,
            device_batch_size=device_batch,
            max_seq_len=cfg.max_seq_len,
            pad_token_id=pad_id,
            vocab_size=vocab_size,
        )
    if cfg.eval_loader is None:
        return train_dl, None
    eval_dl = build_dataloader(
        cfg.eval_loader,
        device_batch_size=cfg.device_eval_batch_size,
        max_seq_len=cfg.max_seq_len,
        pad_token_id=pad_id,
        vocab_size=vocab_size,
    )
    return train_dl, eval_dl


def _metrics_path(cfg: TrainConfig) -> Path | None:
    """The JSON-lines metrics file: loggers.metrics_file, else in a local save_folder."""
    if cfg.loggers.metrics_file:
        return Path(cfg.loggers.metrics_file)
    if cfg.save_folder and not _saves_remotely(cfg):
        return Path(cfg.save_folder) / "metrics.jsonl"
    return None


def _loggers(cfg: LoggersConfig, metrics_path: Path | None) -> list[Any]:
    loggers: list[Any] = build_tracking_loggers(cfg)
    if metrics_path is not None:
        loggers.append(MetricsFileLogger(metrics_path))
    return loggers


def _algorithms(clipping: GradientClippingConfig | None) -> list[Algorithm]:
    if clipping is None:
        return []
    return [GradientClipping(clipping.clipping_type, clipping.clipping_threshold)]


def _run_length_args(cfg: TrainConfig, device_batch: int, has_eval: bool) -> dict[str, Any]:
    """How long to train, how often to evaluate, and the micro-batch."""
    mb = cfg.device_train_microbatch_size
    return {
        "max_duration": cfg.max_duration,
        "eval_interval": cfg.eval_interval if has_eval else 1,
        "eval_subset_num_batches": cfg.eval_subset_num_batches,
        # 'auto' needs CUDA; on a CPU the whole device batch is one micro-batch
        "device_train_microbatch_size": mb
        if isinstance(mb, int) or torch.cuda.is_available()
        else device_batch,
    }


def _checkpoint_args(
    cfg: TrainConfig, load_path: str | None, from_load_path: bool
) -> dict[str, Any]:
    """Where and how often checkpoints are saved, and the one this run starts from."""
    return {
        "save_folder": cfg.save_folder,
        # In an object store composer would also upload a `latest` symlink object, after a
        # helper process has seen every checkpoint object there, polling every 30 s: each run
        # ended up to a minute late. Autoresume lists the checkpoints instead, so none is kept.
        "save_latest_filename": None if _saves_remotely(cfg) else "latest-rank{rank}.pt",
        "save_interval": cfg.save_interval,
        "save_num_checkpoints_to_keep": cfg.save_num_checkpoints_to_keep,
        "save_overwrite": cfg.save_overwrite or cfg.autoresume,
        "load_path": load_path,
        "load_weights_only": cfg.load_weights_only and from_load_path,
    }


def _runtime_args(cfg: TrainConfig, plan: RunPlan) -> dict[str, Any]:
    """Precision, parallelism, compilation, console output and determinism."""
    return {
        "precision": cfg.precision if torch.cuda.is_available() else "fp32",
        "parallelism_config": _fsdp(cfg) if plan.fsdp else None,
        "compile_config": _compile_config(plan),
        "progress_bar": cfg.progress_bar,
        "log_to_console": cfg.log_to_console,
        "console_log_interval": cfg.console_log_interval,
        "seed": cfg.seed,
        "deterministic_mode": cfg.deterministic,
        "dist_timeout": cfg.dist_timeout,
        "python_log_level": cfg.python_log_level,
    }


def _vocab_size(model: Any) -> int | None:
    """Rows of the network's input embedding (token ids must be below it); None if unknown."""
    embeddings = getattr(model.model, "get_input_embeddings", None)
    rows = getattr(embeddings() if callable(embeddings) else None, "num_embeddings", None)
    return int(rows) if isinstance(rows, int) else None


@contextlib.contextmanager
def _store_errors(loader: LoaderConfig) -> Generator[None, None, None]:
    """Object-store failures while opening remote streams become one clear FoundryError."""
    streams = [loader.dataset] if loader.dataset is not None else []
    streams += list((loader.streams or {}).values())
    remotes = [s.remote for s in streams if s.remote and "://" in s.remote]
    try:
        yield
    except FoundryError:
        raise
    except Exception as exc:  # botocore / google / azure errors: report them alike
        if not remotes:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoundryError(
            f"cannot read the training data at {', '.join(remotes)}: {type(exc).__name__}: "
            f"{text}. Check that the object store is up, the credentials and, for "
            "S3-compatible stores, S3_ENDPOINT_URL."
        ) from None


def _compile_config(plan: RunPlan) -> dict[str, Any] | None:
    """composer's ``compile_config`` (its torch.compile arguments) for ``compile: model``."""
    if plan.compile != "model":
        return None
    return {"mode": plan.compile_mode} if plan.compile_mode else {}


def compile_blocks(network: torch.nn.Module, mode: str | None = None) -> int:
    """torch.compile each transformer block in place (the modules FSDP wraps); returns the count."""
    wrap = getattr(network, "fsdp_wrap_fn", None)
    blocks = [m for m in network.modules() if callable(wrap) and m is not network and wrap(m)]
    kwargs = {"mode": mode} if mode else {}
    for block in blocks:
        # torch's Module.compile takes unannotated *args/**kwargs (Unknown).
        block.compile(**kwargs)  # pyright: ignore[reportUnknownMemberType]
    return len(blocks)


def train(cfg: TrainConfig, extra_callbacks: list[Callback] | None = None) -> Trainer:
    """Train to ``max_duration`` (in this process; the CLI launches processes first)."""
    trainer = build_trainer(cfg, extra_callbacks)
    try:  # a checkpoint that cannot be written (disk full) is one clear FoundryError
        with checkpoint_write_errors(trainer, cfg.save_folder, cfg.save_num_checkpoints_to_keep):
            trainer.fit()  # pyright: ignore[reportUnknownMemberType]  # composer's bare generics
    finally:
        trainer.close()
    return trainer
