"""What a run does on this machine: compile mode, FSDP wrapper and FP8, each with its reason.

`compile: auto` resolves by a fixed rule taken from benchmarks/DATASHEET.md:

- no CUDA: no compile (torch.compile on CPU costs start-up time and gains little here);
- one GPU: the whole model (MPT-125M with flash: 46.2% MFU through `foundry-train`, against
  33.8% with per-block compile);
- several GPUs with FSDP: each block (MPT-1B on 2xH200: 97% of one GPU's tokens/s per GPU with
  blocks, 77% with the whole model);
- several GPUs without FSDP (DDP): the whole model.

FSDP on a world of one GPU only costs (datasheet, same run: MPT-125M 326,145 tokens/s with
FULL_SHARD against 345,116 without; MPT-1B 58,451 against 60,092), so a one-GPU run trains
without the wrapper unless `fsdp_config.single_gpu: wrap` asks for it; its
`activation_checkpointing` then still applies, to each block without FSDP, and so does its
`mixed_precision`: under FSDP, DEFAULT and PURE compute with bf16 (fp16) copies of the weights, so
the embedding's output, and with it the residual stream between blocks, is bf16; autocast alone
keeps fp32 weights and an fp32 residual stream. Without the wrapper the trainer casts the
embedding's output to the autocast dtype for DEFAULT and PURE (FULL keeps fp32), so the residual
stream has the dtype it has on N GPUs. The start-up line names each choice and why. Explicit
settings always win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from foundry_train.config import TrainConfig
from foundry_train.errors import FoundryError

__all__ = [
    "COMPILE_MODE_VARIABLE",
    "FP8_MIN_CAPABILITY",
    "Machine",
    "RunPlan",
    "compile_mode_lever",
    "fp8_problems",
    "plan_run",
]

CompileMode = Literal["none", "blocks", "model"]
# A measuring lever, not a config key: FOUNDRY_TRAIN_COMPILE_MODE=max-autotune-no-cudagraphs
# compiles with inductor's autotuning (matrix products as Triton templates with the elementwise
# work fused in, or cuBLAS, whichever its benchmark picks), at minutes of compiling. A profile of
# the shipped mpt-350m on an H100 had a quarter of each batch in elementwise kernels between the
# matrix products; the same mode sped foundry-infer's decode step by 1.16x. In training it did not
# help: at the Llama 3.2 1B shape on one H100 (DATASHEET, "max-autotune-no-cudagraphs in
# training") inductor picked cuBLAS for all 18 matrix products, 0.995x the default mode's
# tokens/s after 351 s more compiling. Modes that capture CUDA graphs themselves are refused
# (composer's loop is not graph-safe).
COMPILE_MODE_VARIABLE = "FOUNDRY_TRAIN_COMPILE_MODE"
_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
# float8 matmuls (torch._scaled_mm) need Ada (sm89) or Hopper (sm90) and newer.
FP8_MIN_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class Machine:
    """What the run will have: processes and, with CUDA, the GPUs' compute capability."""

    world_size: int
    cuda: bool
    capability: tuple[int, int] | None = None

    @staticmethod
    def here(world_size: int) -> Machine:
        import torch

        if not torch.cuda.is_available():
            return Machine(world_size, cuda=False)
        major, minor = torch.cuda.get_device_capability()
        return Machine(world_size, cuda=True, capability=(major, minor))


@dataclass(frozen=True)
class RunPlan:
    """The resolved choices of one run."""

    compile: CompileMode
    compile_reason: str
    fsdp: bool
    fsdp_reason: str
    fp8: str | None
    # fsdp_config.activation_checkpointing on a run without the FSDP wrapper: foundry-train
    # checkpoints each block itself (with FSDP, composer does).
    act_ckpt_without_fsdp: bool = False
    compile_mode: str | None = None  # torch.compile's mode, from COMPILE_MODE_VARIABLE
    # Without the FSDP wrapper: the residual stream's dtype as FSDP's mixed_precision gives it
    # ("bf16"/"fp16"; None keeps autocast's fp32), with the setting it comes from.
    residual_dtype: str | None = None
    residual_reason: str = ""

    def line(self, attention: str | None = None) -> str:
        """The start-up line: `attention: ...; compile: model (one GPU); fsdp: ...; fp8: ...`."""
        parts = [f"attention: {attention}"] if attention else []
        parts.append(f"compile: {self.compile} ({self.compile_reason})")
        if self.compile_mode:
            parts[-1] += f", mode {self.compile_mode} ({COMPILE_MODE_VARIABLE})"
        parts.append(f"fsdp: {self.fsdp_reason}")
        if self.residual_dtype:
            parts.append(f"residual stream: {self.residual_dtype} ({self.residual_reason})")
        if self.act_ckpt_without_fsdp:
            parts.append("activation checkpointing: each block (fsdp_config, applied without FSDP)")
        if self.fp8:
            parts.append(f"fp8: {self.fp8} (torchao float8)")
        return "; ".join(parts)


def _compile_choice(cfg: TrainConfig, machine: Machine, fsdp: bool) -> tuple[CompileMode, str]:
    if cfg.compile != "auto":
        return cfg.compile, "set in the config"
    if not machine.cuda:
        return "none", "auto: no CUDA"
    if machine.world_size == 1:
        return "model", "auto: one GPU"
    if fsdp:
        return "blocks", f"auto: {machine.world_size} GPUs with FSDP"
    return "model", f"auto: {machine.world_size} GPUs with DDP"


def _fsdp_choice(cfg: TrainConfig, machine: Machine) -> tuple[bool, str]:
    fsdp = cfg.fsdp_config
    if fsdp is None:
        return False, "off (no fsdp_config)"
    if machine.world_size == 1 and machine.cuda and fsdp.single_gpu == "skip":
        if fsdp.activation_cpu_offload:  # composer offers it through the FSDP wrapper only
            return True, (
                f"{fsdp.sharding_strategy}, mixed precision {fsdp.mixed_precision} (kept on one "
                "GPU: activation_cpu_offload needs the wrapper)"
            )
        return False, "off (one GPU: FSDP only costs there; fsdp_config.single_gpu: wrap keeps it)"
    return True, f"{fsdp.sharding_strategy}, mixed precision {fsdp.mixed_precision}"


def _residual_choice(cfg: TrainConfig, machine: Machine, fsdp: bool) -> tuple[str | None, str]:
    """The residual stream's dtype on a run that skipped the FSDP wrapper (module docstring)."""
    mp = cfg.fsdp_config.mixed_precision if cfg.fsdp_config is not None else None
    if fsdp or not machine.cuda or mp not in ("DEFAULT", "PURE"):
        return None, ""
    dtype = {"amp_bf16": "bf16", "amp_fp16": "fp16"}.get(cfg.precision)
    if dtype is None:
        return None, ""
    return dtype, (
        f"fsdp_config.mixed_precision {mp} without the wrapper, as FSDP computes it; FULL keeps "
        "fp32"
    )


def compile_mode_lever() -> str | None:
    """torch.compile's mode from :data:`COMPILE_MODE_VARIABLE` (None: unset or "default")."""
    value = os.environ.get(COMPILE_MODE_VARIABLE, "default").strip() or "default"
    if value not in _COMPILE_MODES:
        raise FoundryError(
            f"{COMPILE_MODE_VARIABLE}={value!r} is not a compile mode foundry-train takes; use "
            f"one of {', '.join(_COMPILE_MODES)} (modes that capture CUDA graphs themselves do "
            "not fit composer's training loop), or unset it."
        )
    return None if value == "default" else value


def plan_run(cfg: TrainConfig, machine: Machine) -> RunPlan:
    """Resolve `compile: auto`, the FSDP wrapper on one GPU and FP8 for `machine`."""
    fsdp, fsdp_reason = _fsdp_choice(cfg, machine)
    compile_mode, compile_reason = _compile_choice(cfg, machine, fsdp)
    mode = compile_mode_lever()
    residual, residual_reason = _residual_choice(cfg, machine, fsdp)
    return RunPlan(
        compile=compile_mode,
        compile_reason=compile_reason,
        fsdp=fsdp,
        fsdp_reason=fsdp_reason,
        fp8=cfg.fp8.recipe if cfg.fp8 is not None else None,
        act_ckpt_without_fsdp=not fsdp
        and cfg.fsdp_config is not None
        and cfg.fsdp_config.activation_checkpointing,
        compile_mode=None if compile_mode == "none" else mode,
        residual_dtype=residual,
        residual_reason=residual_reason,
    )


def fp8_problems(cfg: TrainConfig, machine: Machine) -> list[str]:
    """Why `fp8` cannot run on `machine` (empty when it can, or when FP8 is off)."""
    if cfg.fp8 is None:
        return []
    problems: list[str] = []
    try:
        import torchao.float8  # noqa: F401  (only whether it imports)
    except ImportError:
        problems.append(
            "fp8: torchao is not installed; install it with `pip install 'foundry-train[fp8]'`."
        )
    need = ".".join(map(str, FP8_MIN_CAPABILITY))
    if not machine.cuda:
        problems.append(
            f"fp8: FP8 training needs a CUDA GPU of compute capability {need} or newer (Ada, "
            "Hopper, Blackwell); this machine has none. Remove `fp8`, or pass --skip-hardware "
            "to validate a GPU config here."
        )
    elif machine.capability is not None and machine.capability < FP8_MIN_CAPABILITY:
        have = ".".join(map(str, machine.capability))
        problems.append(
            f"fp8: this GPU has compute capability {have}; float8 matmuls need {need} or newer "
            "(Ada, Hopper, Blackwell). Remove `fp8` on this GPU."
        )
    return problems
