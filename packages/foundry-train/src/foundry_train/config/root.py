"""The root training config and its run-level sections (FSDP, callbacks, loggers, launcher)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from foundry_train.config.sections import (
    GradientClippingConfig,
    LoaderConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    Section,
    TokenizerConfig,
)
from foundry_train.config.times import INTERVAL_UNITS, LENGTH_UNITS, parse_time, time_check

_interval = time_check(INTERVAL_UNITS)

__all__ = [
    "DEFAULT_RUN_NAME",
    "FP8Config",
    "FSDPSection",
    "SpeedMonitorConfig",
    "ProfilerConfig",
    "LossSpikeConfig",
    "HFCheckpointerConfig",
    "CallbacksConfig",
    "LoggersConfig",
    "LauncherConfig",
    "ICLEvalConfig",
    "TrainConfig",
]


# composer's run name when the config gives none (also what {run_name} in save_folder becomes)
DEFAULT_RUN_NAME = "foundry-run"


class FP8Config(Section):
    """FP8 training of the transformer blocks' linear layers (torchao.float8)."""

    recipe: Literal["tensorwise", "rowwise"] = Field(
        "tensorwise",
        description="torchao's float8 scaling recipe: one scale per tensor, or per row.",
    )


class FSDPSection(Section):
    """FSDP (needs CUDA); passed to composer's parallelism_config."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = Field(
        "FULL_SHARD", description="How parameters, gradients and optimizer state are sharded."
    )
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = Field(
        "DEFAULT",
        description=(
            "FSDP mixed precision (composer's names). DEFAULT and PURE compute with bf16 weights, "
            "so the residual stream is bf16; a one-GPU run without the wrapper casts the "
            "embedding's output to match. FULL keeps fp32."
        ),
    )
    single_gpu: Literal["skip", "wrap"] = Field(
        "skip",
        description=(
            "On a world of one GPU: 'skip' trains without the FSDP wrapper (it only costs there: "
            "benchmarks/DATASHEET.md), 'wrap' keeps it."
        ),
    )
    activation_checkpointing: bool = Field(False, description="Recompute each block's activations.")
    activation_checkpointing_reentrant: bool = Field(False, description="Reentrant checkpointing.")
    activation_cpu_offload: bool = Field(False, description="Offload saved activations to CPU.")
    limit_all_gathers: bool = Field(True, description="Rate-limit all-gathers (less memory).")
    forward_prefetch: bool = Field(
        False, description="All-gather the next block's parameters during this block's forward."
    )
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST", "NONE"] = Field(
        "BACKWARD_POST",
        description="When the backward pass all-gathers the next parameters (BACKWARD_PRE: "
        "earlier, more overlap, more memory).",
    )
    state_dict_type: Literal["full", "sharded"] = Field(
        "full", description="'sharded' saves a torch.distributed.checkpoint directory per rank."
    )
    use_orig_params: bool = Field(True, description="Needed for LoRA (frozen and trained params).")
    data_parallel_replicate_degree: int | None = Field(
        None, ge=1, description="HYBRID_SHARD: number of replicas (default: number of nodes)."
    )

    @model_validator(mode="after")
    def _no_shard(self) -> FSDPSection:
        if self.sharding_strategy != "NO_SHARD":
            return self
        if self.state_dict_type == "sharded":
            raise ValueError(
                "sharding_strategy NO_SHARD keeps whole weights on every rank, so there is "
                "nothing to save sharded; set state_dict_type: full or choose FULL_SHARD"
            )
        if self.data_parallel_replicate_degree is not None:
            raise ValueError(
                "data_parallel_replicate_degree applies to HYBRID_SHARD; remove it with NO_SHARD"
            )
        return self


class SpeedMonitorConfig(Section):
    """Throughput (tokens/s, samples/s) and MFU."""

    window_size: int = Field(10, ge=1, description="Batches averaged.")
    peak_tflops: float = Field(989.0, gt=0, description="Peak TFLOP/s per GPU for MFU (H100 bf16).")


class LossSpikeConfig(Section):
    """Stops the run on a NaN/inf loss, and logs (or stops on) loss spikes."""

    window: int = Field(50, ge=2, description="Batches in the running mean.")
    spike_ratio: float = Field(
        3.0, gt=1, description="A loss above ratio x running mean is a spike."
    )
    stop_on_spike: bool = Field(False, description="Stop the run after `patience` spikes in a row.")
    patience: int = Field(5, ge=1, description="Consecutive spikes tolerated.")


class HFCheckpointerConfig(Section):
    """Writes Hugging Face directories during and at the end of training."""

    save_folder: str = Field(description="Directory that receives one HF directory per save.")
    save_interval: str = Field("1ep", description="How often (composer time); always at the end.")

    _t = field_validator("save_interval")(_interval)


class ProfilerConfig(Section):
    """torch.profiler over a few training batches, summarised where the time goes."""

    start_batch: int = Field(
        8, ge=1, description="First profiled batch (after compilation and warm-up)."
    )
    batches: int = Field(3, ge=1, le=50, description="Batches profiled.")
    top: int = Field(25, ge=1, description="Kernels (CPU ops without a GPU) listed by time.")
    trace: bool = Field(False, description="Also write a Chrome trace (trace-rankN.json).")


class CallbacksConfig(Section):
    """Callbacks; a section that is present (even `{}`) is on."""

    speed_monitor: SpeedMonitorConfig | None = Field(
        default_factory=lambda: SpeedMonitorConfig.model_validate({}),
        description="Throughput and MFU.",
    )
    lr_monitor: bool = Field(True, description="Log the learning rate.")
    memory_monitor: bool = Field(False, description="Log GPU memory (CUDA only).")
    loss_spike: LossSpikeConfig | None = Field(
        default_factory=lambda: LossSpikeConfig.model_validate({}),
        description="NaN guard and loss-spike detection.",
    )
    hf_checkpointer: HFCheckpointerConfig | None = Field(None, description="HF checkpointer.")
    plot: bool = Field(True, description="Write loss_throughput.png in save_folder at the end.")
    profiler: ProfilerConfig | None = Field(
        None,
        description="Profile a few batches: save_folder/profile/summary-rankN.txt gives the "
        "time per batch and the GPU time by kind (matmul, attention, optimizer, ...).",
    )


class LoggersConfig(Section):
    """Loggers beyond the console; each needs its package installed."""

    tensorboard: dict[str, str] | None = Field(
        None, description="{log_dir: ...}; needs tensorboard."
    )
    mlflow: dict[str, str] | None = Field(
        None, description="{experiment_name, tracking_uri}; needs mlflow."
    )
    wandb: dict[str, str] | None = Field(None, description="{project, entity}; needs wandb.")
    metrics_file: str | None = Field(
        None,
        description="JSON-lines file of every logged metric (default: save_folder/metrics.jsonl).",
    )


class LauncherConfig(Section):
    """How many processes to start on this node."""

    nproc: int | None = Field(
        None, ge=1, description="Processes per node; default one per GPU (1 on a CPU machine)."
    )
    master_port: int | None = Field(None, ge=1, le=65535, description="Rendezvous port.")


class ICLEvalConfig(Section):
    """In-context-learning evaluation during training (foundry-eval)."""

    tasks: str = Field(description="foundry-eval task YAML.")
    data_root: str = Field(description="Directory holding the task data files.")
    interval: str = Field("1ep", description="How often to evaluate (composer time).")
    batch_size: int = Field(4, ge=1, description="Eval batch size per process.")
    limit: int | None = Field(None, ge=1, description="Examples per task (None: all).")

    _t = field_validator("interval")(_interval)


class TrainConfig(Section):
    """A whole training run."""

    run_name: str | None = Field(None, description="Run name (default: derived from the config).")
    seed: int = Field(17, description="Global seed.")
    max_seq_len: int = Field(2048, ge=1, description="Sequence length used for training.")
    model: ModelConfig = Field(description="The model.")
    tokenizer: TokenizerConfig = Field(description="The tokenizer.")
    train_loader: LoaderConfig = Field(description="Training data.")
    eval_loader: LoaderConfig | None = Field(None, description="Held-out data for eval loss.")
    eval_interval: str = Field("1ep", description="How often eval_loader runs.")
    eval_subset_num_batches: int = Field(-1, description="Eval batches per evaluation (-1 all).")
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.model_validate({}), description="Optimizer."
    )
    scheduler: SchedulerConfig = Field(
        default_factory=lambda: SchedulerConfig.model_validate({}), description="LR schedule."
    )
    gradient_clipping: GradientClippingConfig | None = Field(None, description="Gradient clipping.")
    max_duration: str = Field(description="Training length, e.g. '4800ba', '1ep', '2000000tok'.")
    global_train_batch_size: int = Field(ge=1, description="Samples per optimizer step, all ranks.")
    device_train_microbatch_size: int | Literal["auto"] = Field(
        "auto", description="Samples per forward pass per rank, or 'auto' (CUDA only)."
    )
    device_eval_batch_size: int = Field(8, ge=1, description="Eval samples per rank per batch.")
    precision: Literal["amp_bf16", "amp_fp16", "fp32"] = Field(
        "amp_bf16", description="Training precision (CPU runs use fp32)."
    )
    fsdp_config: FSDPSection | None = Field(
        None, description="FSDP; null uses DDP on several ranks."
    )
    compile: Literal["auto", "none", "blocks", "model"] = Field(
        "auto",
        description=(
            "torch.compile: 'blocks' compiles each transformer block (works with FSDP), 'model' "
            "the whole model, head and loss included (fastest on one GPU; under multi-GPU FSDP "
            "it scales poorly, use 'blocks'); 'auto': none without CUDA, 'model' on one GPU, "
            "'blocks' on several GPUs with FSDP, 'model' with DDP."
        ),
    )
    fp8: FP8Config | None = Field(
        None, description="FP8 training through torchao.float8 (Ada/Hopper GPUs and newer)."
    )
    callbacks: CallbacksConfig = Field(
        default_factory=lambda: CallbacksConfig.model_validate({}), description="Callbacks."
    )
    loggers: LoggersConfig = Field(
        default_factory=lambda: LoggersConfig.model_validate({}), description="Loggers."
    )
    progress_bar: bool = Field(True, description="Console progress bar.")
    log_to_console: bool = Field(False, description="Also print metrics to the console.")
    console_log_interval: str = Field("1ba", description="How often to print metrics.")
    save_folder: str | None = Field(None, description="Checkpoint folder or object-store URI.")
    save_interval: str = Field("1ep", description="Checkpoint interval (composer time).")
    save_num_checkpoints_to_keep: int = Field(-1, description="Local checkpoints kept (-1: all).")
    save_overwrite: bool = Field(False, description="Overwrite existing checkpoints.")
    autoresume: bool = Field(False, description="Resume from the latest complete checkpoint.")
    load_path: str | None = Field(None, description="Checkpoint to start from.")
    load_weights_only: bool = Field(False, description="Load only the weights from load_path.")
    icl_eval: ICLEvalConfig | None = Field(None, description="ICL evaluation during training.")
    launcher: LauncherConfig = Field(
        default_factory=lambda: LauncherConfig.model_validate({}), description="Processes."
    )
    deterministic: bool = Field(False, description="Deterministic kernels (bit-identical resumes).")
    dist_timeout: float = Field(600.0, gt=0, description="Seconds before a collective times out.")
    python_log_level: str | None = Field("info", description="Python logging level for composer.")

    _intervals = field_validator("eval_interval", "save_interval")(_interval)
    _length = field_validator("max_duration")(time_check(LENGTH_UNITS))
    # composer's console logger counts only batches or epochs
    _console = field_validator("console_log_interval")(time_check(("ba", "ep")))

    @field_validator("device_train_microbatch_size")
    @classmethod
    def _microbatch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 1 or more (samples per forward pass), or 'auto'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        mb = self.device_train_microbatch_size
        if isinstance(mb, int) and mb > self.global_train_batch_size:
            raise ValueError(
                f"device_train_microbatch_size ({mb}) is larger than global_train_batch_size "
                f"({self.global_train_batch_size})"
            )
        if self.save_folder and ("{" in self.save_folder or "}" in self.save_folder):
            # composer fills {run_name} in save_folder, but autoresume, the saved run config and
            # the metrics file used the literal text: a resumed run started over
            filled = self.save_folder.replace("{run_name}", self.run_name or DEFAULT_RUN_NAME)
            if "{" in filled or "}" in filled:
                raise ValueError(
                    f"save_folder '{self.save_folder}': only {{run_name}} is filled in there; "
                    "write the rest of the path out"
                )
            self.save_folder = filled
        if self.autoresume and not self.save_folder:
            raise ValueError("autoresume needs save_folder (where the checkpoints are)")
        if self.train_loader.packing and self.model.name != "mpt":
            raise ValueError(
                "train_loader.packing needs model.name 'mpt' (HF models take no sequence_id); "
                "turn packing off for hf_causal_lm"
            )
        if self.fp8 is not None and self.precision != "amp_bf16":
            raise ValueError(
                f"fp8 needs precision: amp_bf16 (the layers outside the float8 matmuls run in "
                f"bf16), got {self.precision}"
            )
        if self.callbacks.plot and not self.save_folder:
            self.callbacks.plot = False
        self._warmup_in_the_units_of_max_duration()
        if self.eval_loader is not None and "drop_last" not in self.eval_loader.model_fields_set:
            # an eval set is scored whole: a dropped last batch left samples out (or, with a
            # set smaller than one batch, every sample: a NaN eval loss)
            self.eval_loader.drop_last = False
        return self

    def _warmup_in_the_units_of_max_duration(self) -> None:
        """composer's warmup schedules need t_warmup and max_duration in one unit (epochs count as
        batches, 'dur' takes max_duration's); it only says so at the first batch, in a
        traceback."""
        if self.scheduler.name == "inv_sqrt_with_warmup":  # ours: batches, checked there
            return
        warmup, length = parse_time(self.scheduler.t_warmup), parse_time(self.max_duration)

        def unit(u: str) -> str:
            return "ba" if u == "ep" else u

        if warmup.unit == "dur" or unit(warmup.unit) == unit(length.unit):
            return
        if warmup.value == 0:  # no warmup in any unit: the same as max_duration's
            self.scheduler.t_warmup = "0dur"
            return
        raise ValueError(
            f"scheduler.t_warmup '{self.scheduler.t_warmup}' and max_duration "
            f"'{self.max_duration}' are in different units; composer's warmup schedules need one "
            "(epochs count as batches). Give t_warmup in max_duration's unit, or as a fraction "
            "of it ('0.05dur')"
        )
