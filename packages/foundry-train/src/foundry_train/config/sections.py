"""Typed sections of a training config: model, tokenizer, data, optimizer, scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from foundry_train.config.times import INTERVAL_UNITS, parse_time, time_check

if TYPE_CHECKING:
    from foundry_models import OptionProblem

__all__ = [
    "Section",
    "LoraConfig",
    "ModelConfig",
    "TokenizerConfig",
    "StreamConfig",
    "LoaderConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "GradientClippingConfig",
]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class LoraConfig(Section):
    """LoRA adapters (through peft) for fine-tuning; the base weights are frozen."""

    r: int = Field(8, ge=1, description="Rank of the low-rank update.")
    lora_alpha: int = Field(16, gt=0, description="Scale of the update (alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")


class ModelConfig(Section):
    """The model: a foundry MPT (`name: mpt`) or any Hugging Face causal LM (`hf_causal_lm`)."""

    name: Literal["mpt", "hf_causal_lm"] = Field(
        "mpt",
        description="'mpt' builds foundry_models.MPTForCausalLM; 'hf_causal_lm' any HF model.",
    )
    preset: str | None = Field(
        None, description="MPT preset (debug, 125m, 350m, 760m, 1b, 3b, 7b, ...); name: mpt only."
    )
    config_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Model options set on top of the preset / model directory's config. name: mpt: typed "
            "foundry_models.MPTOptions keys (d_model, attn_config.attn_impl, ...), checked at "
            "validate time; hf_causal_lm: any attribute of the HF config."
        ),
    )
    pretrained_model_name_or_path: str | None = Field(
        None, description="HF directory to take the config (and weights if `pretrained`) from."
    )
    pretrained: bool = Field(
        False, description="Load the weights of `pretrained_model_name_or_path`."
    )
    init_device: Literal["cpu", "meta"] = Field(
        "cpu", description="'meta' builds an MPT on the meta device (FSDP materialises it)."
    )
    lora: LoraConfig | None = Field(None, description="LoRA fine-tuning; null trains all weights.")

    @model_validator(mode="after")
    def _check_source(self) -> ModelConfig:
        if self.name == "hf_causal_lm" and not self.pretrained_model_name_or_path:
            raise ValueError(
                "name 'hf_causal_lm' needs pretrained_model_name_or_path (an HF model directory)"
            )
        if self.name == "mpt" and self.preset is None and not self.pretrained_model_name_or_path:
            raise ValueError("name 'mpt' needs a preset (e.g. 'debug', '125m') or an MPT directory")
        if self.pretrained and not self.pretrained_model_name_or_path:
            raise ValueError("pretrained: true needs pretrained_model_name_or_path")
        return self

    @model_validator(mode="after")
    def _check_mpt_options(self) -> ModelConfig:
        """`config_overrides` of a preset MPT, checked as `foundry_models.MPTOptions`: every
        problem under its own key (`model.config_overrides.attn_config.attn_impl`). Overrides of
        an MPT directory are checked by preflight, which reads the directory."""
        if self.name != "mpt" or self.preset is None or self.pretrained_model_name_or_path:
            return self
        import foundry_models

        if self.preset not in foundry_models.PRESETS:
            return self  # reported by preflight, with the list of presets
        base = foundry_models.preset_config(self.preset).options
        try:
            base.replace(**self.config_overrides)
        except foundry_models.MPTConfigError as exc:
            raise ValidationError.from_exception_data(
                "ModelConfig", [_option_error(p) for p in exc.problems]
            ) from None
        return self


def _option_error(problem: OptionProblem) -> InitErrorDetails:
    loc = ("config_overrides", *problem.key.split(".")) if problem.key else ("config_overrides",)
    return InitErrorDetails(
        type=PydanticCustomError("mpt_option", "{detail}", {"detail": problem.describe()}),
        loc=loc,
        input=problem.given,
    )


class TokenizerConfig(Section):
    """The tokenizer (a directory readable by transformers.AutoTokenizer)."""

    name: str = Field(description="Tokenizer directory or name for AutoTokenizer.from_pretrained.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra from_pretrained kwargs."
    )


class StreamConfig(Section):
    """One MDS dataset (a streaming 'stream'), local or remote with a local cache."""

    remote: str | None = Field(None, description="Remote MDS location (s3://..., or a directory).")
    local: str | None = Field(None, description="Local MDS directory, or cache dir for `remote`.")
    split: str | None = Field(None, description="Sub-directory of remote/local holding the split.")
    proportion: float | None = Field(None, gt=0, description="Share of samples from this stream.")
    repeat: float | None = Field(None, gt=0, description="Times to repeat this stream per epoch.")

    @model_validator(mode="after")
    def _need_location(self) -> StreamConfig:
        if self.remote is None and self.local is None:
            raise ValueError("a dataset/stream needs `local` or `remote`")
        return self


class LoaderConfig(Section):
    """A data loader over MDS data written by foundry-data."""

    name: Literal["pretraining", "finetuning"] = Field(
        "pretraining", description="'pretraining' reads `tokens`; 'finetuning' prompt/response."
    )
    dataset: StreamConfig | None = Field(None, description="A single dataset (or use `streams`).")
    streams: dict[str, StreamConfig] | None = Field(
        None, description="Several named datasets mixed by `proportion`."
    )
    shuffle: bool = Field(True, description="Shuffle samples (deterministically, by seed).")
    shuffle_seed: int = Field(9176, description="Seed of streaming's shuffle.")
    shuffle_algo: str = Field("py1e", description="streaming's shuffle algorithm.")
    num_canonical_nodes: int | None = Field(None, ge=1, description="streaming's canonical nodes.")
    drop_last: bool = Field(True, description="Drop the last incomplete batch.")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; unset: 2 per process on a GPU host (loading "
        "overlaps the step), 0 without a GPU.",
    )
    packing: bool = Field(
        False, description="Fine-tuning: pack several samples per sequence (with sequence_id)."
    )
    packing_ratio: float = Field(
        2.0, ge=1, description="Fine-tuning packing: raw samples drawn per packed sequence."
    )
    download_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a shard.")
    verify_shard_hashes: bool = Field(
        True,
        description="Check each shard against its hash in index.json (xxh64 when stored) the "
        "first time a process opens it, local shards and cached downloads alike; a mismatch "
        "stops the run naming the shard. Datasets written without hashes are not checked.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LoaderConfig:
        if (self.dataset is None) == (self.streams is None):
            raise ValueError("give exactly one of `dataset` or `streams`")
        if self.packing and self.name != "finetuning":
            raise ValueError("packing applies to the finetuning loader only")
        return self


class OptimizerConfig(Section):
    """The optimizer."""

    name: Literal["adamw", "decoupled_adamw", "decoupled_lionw"] = Field(
        "decoupled_adamw",
        description="adamw (torch), decoupled_adamw (weight decay scaled by lr/peak lr), "
        "decoupled_lionw.",
    )
    lr: float = Field(6e-4, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Momentum coefficients.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon (ignored by LionW).")
    weight_decay: float = Field(
        0.0, ge=0, description="Weight decay (decoupled: scaled by lr/peak)."
    )
    fused: Literal["auto", "on", "off"] = Field(
        "auto",
        description="AdamW's fused CUDA kernel: auto = when every parameter is on a GPU.",
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        bad = [b for b in value if not 0 <= b < 1]
        if bad:
            raise ValueError(f"each beta must be in [0, 1), e.g. [0.9, 0.95]; {bad[0]} is not")
        return value


class SchedulerConfig(Section):
    """The learning-rate schedule; times are composer strings like '100ba' or '0.1dur'."""

    name: Literal[
        "cosine_with_warmup",
        "linear_decay_with_warmup",
        "constant_with_warmup",
        "inv_sqrt_with_warmup",
    ] = Field("cosine_with_warmup", description="Schedule shape after warmup.")
    t_warmup: str = Field("0ba", description="Warmup length.")
    alpha_f: float = Field(
        0.0, ge=0, description="Final lr as a fraction of the peak (cosine/linear)."
    )
    t_scale: str = Field(
        "100ba",
        description="inv_sqrt only: lr = peak * sqrt(t_scale / (t - t_warmup + t_scale)) after "
        "warmup.",
    )

    _warmup = field_validator("t_warmup")(time_check(INTERVAL_UNITS, allow_zero=True))
    _scale = field_validator("t_scale")(time_check(INTERVAL_UNITS))

    @model_validator(mode="after")
    def _inv_sqrt_batches(self) -> SchedulerConfig:
        if self.name == "inv_sqrt_with_warmup":
            for key in ("t_warmup", "t_scale"):
                if parse_time(getattr(self, key)).unit != "ba":
                    raise ValueError(
                        f"inv_sqrt_with_warmup counts batches: give {key} in 'ba' (e.g. '100ba'), "
                        f"not '{getattr(self, key)}'"
                    )
        return self


class GradientClippingConfig(Section):
    """Gradient clipping."""

    clipping_type: Literal["norm", "value", "adaptive"] = Field("norm", description="Clip kind.")
    clipping_threshold: float = Field(1.0, gt=0, description="Max norm / value.")
