"""``foundry-train migrate``: llm-foundry training YAMLs to foundry-train YAMLs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import yaml

from foundry_train.config import load_yaml, parse_config
from foundry_train.config.interpolation import resolve_interpolations
from foundry_train.errors import ConfigError, FoundryError

__all__ = ["migrate_config", "migrate_file"]

_SAME_TOP = (
    "run_name",
    "max_seq_len",
    "seed",
    "max_duration",
    "eval_interval",
    "eval_subset_num_batches",
    "global_train_batch_size",
    "device_train_microbatch_size",
    "device_eval_batch_size",
    "precision",
    "progress_bar",
    "log_to_console",
    "console_log_interval",
    "save_folder",
    "save_interval",
    "save_num_checkpoints_to_keep",
    "save_overwrite",
    "autoresume",
    "load_path",
    "load_weights_only",
    "dist_timeout",
    "python_log_level",
)
# llm-foundry MPT sizes (d_model, n_layers) -> our preset names
_MPT_SIZES = {
    (768, 12): "125m",
    (1024, 24): "350m",
    (1536, 24): "760m",
    (2048, 24): "1b",
    (2560, 32): "3b",
    (4096, 32): "7b",
    (5120, 40): "13b",
    (7168, 48): "30b",
    (8192, 80): "70b",
}
_FSDP_KEYS = {
    "sharding_strategy",
    "mixed_precision",
    "activation_checkpointing",
    "activation_checkpointing_reentrant",
    "activation_cpu_offload",
    "limit_all_gathers",
    "state_dict_type",
    "use_orig_params",
    "data_parallel_replicate_degree",
}
_FSDP_IGNORED = {"verbose"}  # logging only; nothing to carry over


class _Migration:
    def __init__(self, src: dict[str, Any]) -> None:
        self.src = src
        self.out: dict[str, Any] = {}
        self.unmapped: list[str] = []

    def skip(self, path: str, why: str) -> None:
        self.unmapped.append(f"{path}: {why}")

    def run(self) -> dict[str, Any]:
        src = dict(self.src)
        variables = src.pop("variables", None)
        if variables is not None:
            self.skip("variables", "inlined into the keys that use them (no variables section)")
        if "global_seed" in src and "seed" not in src:
            src["seed"] = src["global_seed"]
        for key in _SAME_TOP:
            if key in src and src[key] is not None:
                self.out[key] = src.pop(key)
        handlers = {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "train_loader": self.train_loader,
            "eval_loader": self.eval_loader,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "algorithms": self.algorithms,
            "fsdp_config": self.fsdp,
            "callbacks": self.callbacks,
            "loggers": self.loggers,
        }
        for key, value in src.items():
            if key in handlers and value is not None:
                handlers[key](value)
            elif key in ("run_name", "save_folder", "load_path") or value is None:
                continue
            elif key in ("icl_tasks", "eval_gauntlet", "icl_tasks_str", "eval_gauntlet_str"):
                self.skip(key, "convert to a foundry-eval task YAML and set icl_eval.tasks")
            else:
                self.skip(key, "no foundry-train equivalent (a variable or an unsupported option)")
        return self.out

    def model(self, m: dict[str, Any]) -> None:
        m = dict(m)
        name = m.pop("name", "mpt_causal_lm")
        out: dict[str, Any] = {}
        init = m.pop("init_device", None)
        if init in ("meta", "mixed"):
            out["init_device"] = "meta"
        if name == "hf_causal_lm":
            out["name"] = "hf_causal_lm"
            for key in ("pretrained_model_name_or_path", "pretrained", "config_overrides"):
                if key in m:
                    out[key] = m.pop(key)
            peft = m.pop("peft_config", None)
            if peft:
                out["lora"] = self.lora(peft)
            for key in m:
                self.skip(f"model.{key}", "not used by foundry-train's hf_causal_lm")
        elif name == "mpt_causal_lm":
            out["name"] = "mpt"
            size = cast(tuple[int, int], (m.get("d_model"), m.get("n_layers")))
            out["preset"] = _MPT_SIZES.get(size, "125m")
            if size not in _MPT_SIZES:
                self.skip("model", f"no preset with d_model/n_layers {size}; used 125m + overrides")
            m.pop("max_seq_len", None)
            peft = m.pop("peft_config", None)
            if peft:
                out["lora"] = self.lora(peft)
            if m:
                out["config_overrides"] = m
                self.skip(
                    "model.*", "MPT keys moved to config_overrides; check them against MPTConfig"
                )
        else:
            self.skip("model.name", f"unknown model '{name}'")
            return
        self.out["model"] = out

    def lora(self, peft: dict[str, Any]) -> dict[str, Any]:
        out = {
            k: peft[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules") if k in peft
        }
        for key in sorted(set(peft) - set(out) - {"peft_type", "task_type"}):
            self.skip(f"model.peft_config.{key}", "not supported by foundry-train's LoRA section")
        return out

    def tokenizer(self, t: dict[str, Any]) -> None:
        self.out["tokenizer"] = {"name": t.get("name"), "kwargs": dict(t.get("kwargs") or {})}

    def loader(self, path: str, ld: dict[str, Any]) -> dict[str, Any]:
        ld = dict(ld)
        kind = ld.pop("name", "text")
        out: dict[str, Any] = {"name": "finetuning" if kind == "finetuning" else "pretraining"}
        if kind not in ("text", "finetuning"):
            self.skip(f"{path}.name", f"loader '{kind}' has no equivalent; set to pretraining")
        ds = dict(ld.pop("dataset", {}) or {})
        for key in ("shuffle", "shuffle_seed", "shuffle_algo", "num_canonical_nodes"):
            if key in ds:
                out[key] = ds.pop(key)
        if ds.pop("packing_ratio", None) not in (None, 1.0):
            out["packing"] = True
        streams = ds.pop("streams", None)
        if streams:
            out["streams"] = {
                n: {k: s[k] for k in ("remote", "local", "split", "proportion", "repeat") if k in s}
                for n, s in streams.items()
            }
        else:
            out["dataset"] = {
                k: ds.pop(k) for k in ("remote", "local", "split") if ds.get(k) is not None
            }
            for k in ("remote", "local", "split"):
                ds.pop(k, None)
        ds.pop("max_seq_len", None)
        for key in ds:
            self.skip(f"{path}.dataset.{key}", "convert the data with `foundry-data convert` first")
        for key in ("num_workers", "drop_last"):
            if key in ld:
                out[key] = ld.pop(key)
        for key in ld:
            self.skip(f"{path}.{key}", "DataLoader option not exposed")
        if "dataset" in out and not out["dataset"]:
            out["dataset"] = {"local": "CHANGE-ME"}
            self.skip(f"{path}.dataset", "no local/remote MDS path; set train data by hand")
        return out

    def train_loader(self, ld: dict[str, Any]) -> None:
        self.out["train_loader"] = self.loader("train_loader", ld)

    def eval_loader(self, ld: dict[str, Any] | list[dict[str, Any]]) -> None:
        if isinstance(ld, list):
            self.skip("eval_loader", f"{len(ld)} eval loaders; only the first was kept")
            ld = ld[0]
        self.out["eval_loader"] = self.loader("eval_loader", ld)

    def optimizer(self, o: dict[str, Any]) -> None:
        keep = {k: o[k] for k in ("name", "lr", "betas", "eps", "weight_decay") if k in o}
        if keep.get("name") not in ("adamw", "decoupled_adamw", "decoupled_lionw"):
            self.skip(
                "optimizer.name", f"'{keep.get('name')}' not supported; using decoupled_adamw"
            )
            keep["name"] = "decoupled_adamw"
        for key in sorted(set(o) - set(keep)):
            self.skip(f"optimizer.{key}", "not supported")
        self.out["optimizer"] = keep

    def scheduler(self, s: dict[str, Any]) -> None:
        keep = {k: s[k] for k in ("name", "t_warmup", "alpha_f") if k in s}
        for key in sorted(set(s) - set(keep)):
            self.skip(f"scheduler.{key}", "not supported")
        self.out["scheduler"] = keep

    def algorithms(self, a: dict[str, Any]) -> None:
        for key, value in a.items():
            if key == "gradient_clipping":
                self.out["gradient_clipping"] = value
            else:
                self.skip(f"algorithms.{key}", "composer algorithm not exposed")

    def fsdp(self, f: dict[str, Any]) -> None:
        self.out["fsdp_config"] = {k: v for k, v in f.items() if k in _FSDP_KEYS}
        for key in sorted(set(f) - _FSDP_KEYS - _FSDP_IGNORED):
            self.skip(f"fsdp_config.{key}", "not supported")

    def callbacks(self, c: dict[str, Any]) -> None:
        out: dict[str, Any] = {}
        for key, value in c.items():
            options: dict[str, Any] = value or {}
            if key == "speed_monitor":
                out[key] = {k: v for k, v in options.items() if k == "window_size"}
            elif key in ("lr_monitor", "memory_monitor"):
                out[key] = True
            elif key == "hf_checkpointer":
                keep = ("save_folder", "save_interval")
                out[key] = {k: v for k, v in options.items() if k in keep}
            else:
                self.skip(f"callbacks.{key}", "callback not available")
        self.out["callbacks"] = out

    def loggers(self, lg: dict[str, Any]) -> None:
        out: dict[str, dict[str, str]] = {}
        for key, value in lg.items():
            if key in ("wandb", "mlflow", "tensorboard"):
                options: dict[str, Any] = value or {}
                out[key] = {k: str(v) for k, v in options.items()}
            else:
                self.skip(f"loggers.{key}", "logger not available")
        self.out["loggers"] = out


def migrate_config(src: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map an llm-foundry config mapping to ours; also what could not be mapped."""
    resolved, unresolved = resolve_interpolations(src)
    migration = _Migration(resolved)
    out = migration.run()
    notes = [f"${{{ref}}}: could not be resolved" for ref in unresolved] + migration.unmapped
    return out, notes


def migrate_file(source: str | Path, out_path: str | Path, overwrite: bool = False) -> list[str]:
    """Write the migrated YAML; returns the list of things not mapped (also appended as comments)."""
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FoundryError(f"'{out}' already exists. Choose another path or pass --overwrite.")
    migrated, notes = migrate_config(load_yaml(source))
    try:
        parse_config(migrated, source=f"migrated {source}")
    except ConfigError as exc:
        notes += [f"after migration: {p}" for p in exc.problems]
    text = f"# migrated from {source} by foundry-train migrate\n"
    text += yaml.safe_dump(migrated, sort_keys=False)
    if notes:
        text += "\n# not mapped (review by hand):\n" + "".join(f"#   {n}\n" for n in notes)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, out)
    return notes
