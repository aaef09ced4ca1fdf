"""Building the model (foundry MPT or any HF causal LM) and its composer wrapper."""

from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any, cast

import torch
from composer.models import ComposerModel
from foundry_data import IGNORE_INDEX
from torch import nn
from transformers import PretrainedConfig

from foundry_train.config.sections import LoraConfig, ModelConfig
from foundry_train.errors import FoundryError
from foundry_train.eval_loss import (
    EvalLoss,
    TokenCrossEntropy,
    TokenPerplexity,
    loss_sum_from_logits,
)

if TYPE_CHECKING:
    from foundry_models import MPTConfig

__all__ = [
    "cast_embedding_output",
    "checkpoint_blocks",
    "FoundryComposerModel",
    "attention_summary",
    "build_composer_model",
    "build_network",
    "flops_per_token",
    "resolve_model_config",
]

log = logging.getLogger(__name__)


def _hf_flops_per_token(config: Any, n_params: int, seq_len: int) -> int:
    """6N + 12 L d S for a transformers config (the project's MFU convention)."""
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layers", 0))
    width = int(getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0))
    return 6 * n_params + 12 * layers * width * seq_len


def flops_per_token(network: nn.Module, seq_len: int) -> int:
    """Training FLOPs per token of ``network`` at sequence length ``seq_len``."""
    fn = getattr(network, "flops_per_token", None)
    if callable(fn):
        value: Any = fn(seq_len)
        return int(value)
    # N: every weight used in a matmul. parameters() counts a tied embedding once (it is the
    # lm_head's matmul); an untied input embedding is only a lookup and is left out.
    n_params = sum(p.numel() for p in network.parameters())
    get_in = getattr(network, "get_input_embeddings", None)
    get_out = getattr(network, "get_output_embeddings", None)
    emb = get_in() if callable(get_in) else None
    out = get_out() if callable(get_out) else None
    if emb is not None and (out is None or out.weight is not emb.weight):
        n_params -= emb.weight.numel()
    return _hf_flops_per_token(getattr(network, "config", None), n_params, seq_len)


def _block_classes(network: nn.Module) -> tuple[type[nn.Module], ...]:
    names = set(getattr(network, "_no_split_modules", None) or [])
    return tuple({type(m) for m in network.modules() if type(m).__name__ in names})


def _attach_fsdp_hooks(network: nn.Module) -> None:
    """Give an HF model the fsdp_wrap_fn / activation_checkpointing_fn composer looks for."""
    if callable(getattr(network, "fsdp_wrap_fn", None)):
        return
    blocks = _block_classes(network)

    def is_block(module: nn.Module) -> bool:
        return isinstance(module, blocks) if blocks else False

    network.fsdp_wrap_fn = is_block  # type: ignore[attr-defined]
    network.activation_checkpointing_fn = is_block  # type: ignore[attr-defined]


def resolve_model_config(cfg: ModelConfig, max_seq_len: int) -> PretrainedConfig:
    """The model's config, the one resolution that training, export and preflight share.

    ``name: mpt``: the preset (with ``max_seq_len``) or the MPT directory's config, with
    ``config_overrides`` laid over it as typed `foundry_models.MPTOptions` (nested sections merged
    key by key). ``hf_causal_lm``: the HF directory's config with the overrides set as attributes.
    Raises `FoundryError` when the directory cannot be read or the options are invalid.
    """
    path = cfg.pretrained_model_name_or_path
    if cfg.name == "hf_causal_lm":
        hf_config = _read_config(path, "transformers.AutoConfig")
        for key, value in cfg.config_overrides.items():
            setattr(hf_config, key, value)
        return hf_config
    return _resolve_mpt(cfg, max_seq_len)


def _resolve_mpt(cfg: ModelConfig, max_seq_len: int) -> MPTConfig:
    import foundry_models

    path = cfg.pretrained_model_name_or_path
    if path:
        config = _read_config(path, "foundry_models.MPTConfig")
        if not isinstance(config, foundry_models.MPTConfig):
            raise FoundryError(
                f"model.pretrained_model_name_or_path '{path}' holds a "
                f"'{getattr(config, 'model_type', '?')}' model, not a foundry MPT; use "
                "name: hf_causal_lm for it."
            )
    else:
        assert cfg.preset is not None
        try:
            config = foundry_models.preset_config(cfg.preset, max_seq_len=max_seq_len)
        except foundry_models.MPTConfigError as exc:
            raise FoundryError(f"model.preset: {exc}") from None
    try:
        config.set_options(config.options.replace(**cfg.config_overrides))
    except foundry_models.MPTConfigError as exc:
        raise FoundryError(f"model.config_overrides: {exc}") from None
    return config


def _read_config(path: str | None, reader: str) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        # AutoConfig.from_pretrained is unannotated in transformers (Unknown)
        return cast(PretrainedConfig, AutoConfig.from_pretrained(str(path)))  # pyright: ignore[reportUnknownMemberType]
    except (OSError, ValueError) as exc:
        raise FoundryError(
            f"model.pretrained_model_name_or_path '{path}' is not a loadable model directory or "
            f"Hugging Face Hub id ({exc}). Point it at a directory with config.json (read by "
            f"{reader}), or give a hub id (org/name) on a machine that can reach the Hub or has "
            "it in its cache."
        ) from None


def attention_summary(cfg: ModelConfig, max_seq_len: int) -> str:
    """The start-up words for the attention a model will run, e.g. 'torch (no CUDA)'."""
    if cfg.name != "mpt":
        return "the HF model's own (hf_causal_lm)"
    import foundry_models
    from foundry_models.attention import choose_impl
    from foundry_models.attention.flash_packed import PACKED_VARIABLE, packed_for

    config = _resolve_mpt(cfg, max_seq_len)
    try:
        choice = choose_impl(config.options.attn.attn_impl)
    except foundry_models.AttentionUnavailableError as exc:
        raise FoundryError(f"model.config_overrides.attn_config.attn_impl: {exc}") from None
    if choice.backend == "fa4" and packed_for(config.options.attn, config.n_heads):
        return f"{choice.impl} ({choice.reason}; q/k/v packed, {PACKED_VARIABLE}=0 splits them)"
    return str(choice)


def _build_hf(cfg: ModelConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    path = cfg.pretrained_model_name_or_path
    assert path is not None
    hf_config = resolve_model_config(cfg, max_seq_len=0)  # an HF model keeps its own length
    if cfg.pretrained:
        try:
            network = AutoModelForCausalLM.from_pretrained(path, config=hf_config)
        except (OSError, ValueError, pickle.UnpicklingError) as exc:
            raise FoundryError(
                f"cannot load the weights of model.pretrained_model_name_or_path '{path}' "
                f"({exc}). Give a directory with safetensors (or weights torch loads with "
                "weights_only=True), or set pretrained: false."
            ) from None
    else:
        network = AutoModelForCausalLM.from_config(hf_config)
    _attach_fsdp_hooks(network)
    return network


def _build_mpt(cfg: ModelConfig, max_seq_len: int, defer_init: bool) -> nn.Module:
    import foundry_models

    mpt_cfg = _resolve_mpt(cfg, max_seq_len)
    if cfg.pretrained and cfg.pretrained_model_name_or_path:
        return foundry_models.MPTForCausalLM.from_pretrained(
            cfg.pretrained_model_name_or_path, config=mpt_cfg
        )
    if cfg.init_device == "meta":
        with torch.device("meta"):
            network = foundry_models.MPTForCausalLM(mpt_cfg)
        if defer_init:
            # FSDP moves one wrapped unit at a time off the meta device and calls the model's
            # param_init_fn on it: no rank ever holds the whole unsharded model.
            log.info("model on the meta device: FSDP initialises it one wrapped unit at a time")
            return network
        device = "cuda" if torch.cuda.is_available() else "cpu"
        network.to_empty(device=device)
        network.init_weights_()
        return network
    return foundry_models.MPTForCausalLM(mpt_cfg)


def _apply_lora(network: nn.Module, lora: LoraConfig) -> nn.Module:
    try:
        import peft
    except ImportError:
        raise FoundryError(
            "model.lora is set but peft is not installed. Install it with `pip install peft`."
        ) from None
    peft_cfg = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
    )
    wrapped = peft.get_peft_model(network, peft_cfg)  # type: ignore[arg-type]
    base = wrapped.get_base_model()
    for name in ("fsdp_wrap_fn", "activation_checkpointing_fn"):
        fn = getattr(base, name, None)
        if callable(fn):
            setattr(wrapped, name, fn)
    return wrapped


def build_network(cfg: ModelConfig, max_seq_len: int, fsdp: bool = False) -> nn.Module:
    """The bare torch model (with LoRA adapters when configured).

    With ``fsdp`` (composer's FSDP on CUDA will wrap it) an MPT with ``init_device: meta`` is left
    on the meta device for FSDP to initialise unit by unit; LoRA models are materialised first, as
    their adapters need their own initialisation.
    """
    if cfg.name == "hf_causal_lm":
        network = _build_hf(cfg)
    else:
        defer = fsdp and cfg.lora is None and torch.cuda.is_available()
        network = _build_mpt(cfg, max_seq_len, defer_init=defer)
    if cfg.lora is not None:
        network = _apply_lora(network, cfg.lora)
    return network


class FoundryComposerModel(ComposerModel):
    """Wraps an HF-style causal LM for composer: loss from ``labels``, eval cross-entropy."""

    def __init__(self, network: nn.Module, seq_len: int, accepts_sequence_id: bool) -> None:
        super().__init__()
        self.model = network
        self.accepts_sequence_id = accepts_sequence_id
        self._flops_per_token = flops_per_token(network, seq_len)
        self.train_metrics: dict[str, Any] = {}
        # composer's metric names, so logs keep their keys; scored from loss sums (eval_loss.py)
        self.eval_metrics = {
            "LanguageCrossEntropy": TokenCrossEntropy(),
            "LanguagePerplexity": TokenPerplexity(),
        }

    def flops_per_batch(self, batch: dict[str, torch.Tensor]) -> int:
        """FLOPs of one training batch (for composer's SpeedMonitor MFU)."""
        return self._flops_per_token * int(batch["input_ids"].numel())

    def forward(self, batch: dict[str, torch.Tensor], **extra: Any) -> Any:  # type: ignore[override]
        kwargs: dict[str, Any] = {
            k: batch[k] for k in ("input_ids", "attention_mask", "labels") if k in batch
        }
        if "sequence_id" in batch and self.accepts_sequence_id:
            kwargs["sequence_id"] = batch["sequence_id"]
        # Training and eval score whole sequences: no key/value cache. (A model in eval mode
        # otherwise builds one per batch, as `use_cache: true` in its config asks for generation:
        # memory for every layer's keys and values, and, under torch.compile, a recompile per layer.)
        return self.model(**kwargs, **extra, use_cache=False)

    def loss(self, outputs: Any, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: Any, outputs: Any | None = None) -> Any:
        """The batch's summed loss and token count (`EvalLoss`), never all its logits at once.

        A Foundry MPT computes the loss in chunks (`return_logits=False`); other models' logits
        are reduced a sequence at a time.
        """
        if outputs is not None:
            return outputs
        labels = batch["labels"]
        if not self.accepts_sequence_id:  # not a Foundry MPT: no logits-free loss to ask for
            return loss_sum_from_logits(self.forward(batch).logits, labels)
        mean = self.forward(batch, return_logits=False).loss.float()
        count = (labels[:, 1:] != IGNORE_INDEX).sum()
        return EvalLoss(mean * count, count)

    def get_metrics(self, is_train: bool = False) -> dict[str, Any]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: Any, metric: Any) -> None:
        metric.update(outputs)


def build_composer_model(
    cfg: ModelConfig, max_seq_len: int, fsdp: bool = False
) -> FoundryComposerModel:
    """The network wrapped for composer (``fsdp``: composer's FSDP will wrap it)."""
    network = build_network(cfg, max_seq_len, fsdp=fsdp)
    return FoundryComposerModel(network, max_seq_len, accepts_sequence_id=cfg.name == "mpt")


def cast_embedding_output(network: nn.Module, dtype: str) -> None:
    """Cast the input embedding's output to `dtype` ("bf16" or "fp16") on every forward.

    What FSDP's DEFAULT and PURE mixed precision do through bf16 weights, for a run without the
    wrapper (run_plan.py): the residual stream between blocks, and the activations saved along it,
    then hold half the bytes. The weights stay fp32; autocast runs the matrix products as before.
    """
    target = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    embedding = network.get_input_embeddings() if hasattr(network, "get_input_embeddings") else None
    if not isinstance(embedding, nn.Module):
        raise FoundryError(
            "fsdp_config.mixed_precision DEFAULT/PURE on one GPU casts the input embedding's "
            "output, but this model has no get_input_embeddings(); set "
            "fsdp_config.mixed_precision: FULL or fsdp_config.single_gpu: wrap."
        )

    def cast(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.to(target) if output.is_floating_point() else output

    embedding.register_forward_hook(cast)


def checkpoint_blocks(network: nn.Module, reentrant: bool = False) -> int:
    """Recompute each block's activations in backward (what composer's FSDP does with
    ``activation_checkpointing``), for a run without the FSDP wrapper; returns the block count."""
    from functools import partial

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    is_block = getattr(network, "activation_checkpointing_fn", None)
    if not callable(is_block):
        raise FoundryError(
            "fsdp_config.activation_checkpointing is on, but this model names no blocks to "
            "checkpoint (no activation_checkpointing_fn); turn it off."
        )
    blocks = [m for m in network.modules() if m is not network and is_block(m)]
    impl = CheckpointImpl.REENTRANT if reentrant else CheckpointImpl.NO_REENTRANT
    apply_activation_checkpointing(
        network, checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=impl),
        check_fn=is_block,
    )  # fmt: skip
    return len(blocks)
