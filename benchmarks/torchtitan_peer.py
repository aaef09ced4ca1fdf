"""Same-run peer: torchtitan 0.2.2's Llama 3 against Foundry's MPT at exactly the same shape.

On one GPU, for each precision row (bf16, and FP8 through torchao's float8 training), trains

- torchtitan 0.2.2 (`torchtitan.train.Trainer` under torchrun, one process) on its Llama 3 model
  at a Llama-3 shape registered as flavour `peer`, with its best single-GPU settings: per-block
  compile of the model and compile of the loss (`--compile.enable`), no activation checkpointing,
  bf16 autocast over fp32 weights, fused AdamW; the FP8 row adds the `quantize.linear.float8`
  converter with the tensorwise recipe (output head left in bf16, as in its Llama 3 8B TOML);
- Foundry's MPT configured Llama-shaped at the same shape (RoPE, RMSNorm, SwiGLU `mptglu`, the
  same width, depth, heads, KV heads, FFN hidden size, vocabulary and sequence, no biases, untied
  embedding) through `python -m foundry_train CONFIG.yaml` with `launcher.nproc: 1`,
  `attn_impl: auto`, `compile: auto`, the presets' 8192-token loss chunk, and for the FP8 row
  `fp8: {recipe: tensorwise}`,

on random tokens (torchtitan: an in-process random-token dataset registered with its train spec,
no tokenizer; Foundry: a random-token MDS dataset), with the same batch, sequence and steps.
Tokens/s are steady-state: the mean over the last 10 steps (torchtitan's log line at the last
step with `--metrics.log_freq 10`; Foundry's SpeedMonitor with `window_size: 10`). MFU of both is
computed the same way here, 6N + 12 L d S FLOPs per token (N: every weight used in a matmul, the
untied output head included, the input embedding left out) against 989 TFLOP/s (the bf16 dense
peak of an H100/H200; FP8 rows too); each tool's own MFU is kept beside it.

No network: the wheels of torchtitan and of its missing dependencies come from .titan/, which
`scripts/device-titan` builds.

  . .device/setup.sh && . .titan/setup.sh && python benchmarks/torchtitan_peer.py --out-dir out
  python benchmarks/torchtitan_peer.py --out-dir out --dry-run   # write and validate configs only

Writes in --out-dir (six files at most): peer.jsonl (one JSON line per run, with Foundry's
config and each command, then one per ratio), peer.md (a table) and a log per run
(titan-bf16.log, foundry-bf16.log, titan-fp8.log, foundry-fp8.log).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEAK_FLOPS = 989e12  # H100/H200 dense bf16, also for the FP8 rows
WINDOW = 10  # steady-state steps averaged


@dataclass(frozen=True)
class LlamaShape:
    """A Llama 3 shape in torchtitan's terms (`TransformerModelArgs`)."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5

    @property
    def ffn_hidden(self) -> int:
        """torchtitan's SwiGLU hidden size: 2/3 of 4*dim, times the multiplier, rounded up."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def param_count(self) -> int:
        """Parameters of torchtitan's Llama 3 `Transformer` (untied output head)."""
        d, kv = self.dim, self.n_kv_heads * self.head_dim
        attn = d * d + 2 * d * kv + d * d  # wq, wk, wv, wo
        ffn = 3 * d * self.ffn_hidden  # w1, w2, w3
        block = attn + ffn + 2 * d  # attention_norm, ffn_norm
        return 2 * self.vocab_size * d + self.n_layers * block + d  # embedding, output, norm

    def flops_per_token(self, seq_len: int) -> int:
        """6N + 12 L d S with N the parameters less the input embedding (a lookup)."""
        n = self.param_count() - self.vocab_size * self.dim
        return 6 * n + 12 * self.n_layers * self.dim * seq_len


SHAPES: dict[str, LlamaShape] = {
    # Llama 3.2 1B's dimensions (its tied embedding untied: torchtitan's Llama 3 has no tying)
    "llama3-1b": LlamaShape(2048, 16, 32, 8, 128256, multiple_of=256, ffn_dim_multiplier=1.5),
    # a smaller Llama 3 shape with the Llama 3 vocabulary
    "llama3-350m": LlamaShape(1024, 24, 16, 8, 128256, multiple_of=256),
    # CPU tests only
    "tiny": LlamaShape(64, 2, 4, 2, 512, multiple_of=16),
}


# ---------------------------------------------------------------------------------- Foundry
def mpt_overrides(shape: LlamaShape, loss_chunk: int) -> dict[str, Any]:
    """`model.config_overrides` that make Foundry's MPT the Llama 3 model of `shape`."""
    return {
        "d_model": shape.dim,
        "n_heads": shape.n_heads,
        "n_layers": shape.n_layers,
        "vocab_size": shape.vocab_size,
        "no_bias": True,
        "tie_word_embeddings": False,
        "norm_type": "rmsnorm",
        "norm_eps": shape.norm_eps,
        "loss_chunk_size": loss_chunk or None,
        "attn_config": {
            "attn_impl": "auto",
            "alibi": False,
            "rope": True,
            "rope_theta": shape.rope_theta,
            "kv_n_heads": shape.n_kv_heads,
        },
        "ffn_config": {"ffn_type": "mptglu", "ffn_hidden_size": shape.ffn_hidden},
    }


def foundry_config(
    shape: LlamaShape,
    row: str,
    work: Path,
    *,
    seq: int,
    batch: int,
    steps: int,
    loss_chunk: int,
    mixed_precision: str = "none",
) -> dict[str, Any]:
    """The training YAML (as a dict) of Foundry's run for precision `row` (bf16 or fp8).

    `mixed_precision` "none" leaves fsdp_config out: autocast over fp32 weights, an fp32 residual
    stream, the arithmetic of torchtitan's one-GPU run. "PURE" adds the shipped YAMLs'
    `fsdp_config.mixed_precision: PURE`, which on one GPU casts the residual stream to bf16 (as
    FSDP's bf16 weights give it on several GPUs, torchtitan's included).
    """
    cfg: dict[str, Any] = {
        "run_name": f"peer-foundry-{row}",
        "seed": 17,
        "max_seq_len": seq,
        "model": {
            "name": "mpt",
            "preset": "1b",  # every shape key is overridden below
            "init_device": "meta",
            "config_overrides": mpt_overrides(shape, loss_chunk),
        },
        "tokenizer": {"name": str(work / "tok")},
        "train_loader": {"name": "pretraining", "dataset": {"local": str(work / "mds")}},
        "max_duration": f"{steps}ba",
        "global_train_batch_size": batch,
        "device_train_microbatch_size": batch,
        "precision": "amp_bf16",
        "compile": "auto",
        "gradient_clipping": {"clipping_type": "norm", "clipping_threshold": 1.0},
        "callbacks": {
            "speed_monitor": {"window_size": WINDOW},
            "memory_monitor": True,
            "plot": False,
        },
        "loggers": {"metrics_file": str(work / f"foundry-{row}-metrics.jsonl")},
        "launcher": {"nproc": 1},
        "progress_bar": False,
    }
    if row == "fp8":
        cfg["fp8"] = {"recipe": "tensorwise"}
    if mixed_precision != "none":
        cfg["fsdp_config"] = {"mixed_precision": mixed_precision}
    return cfg


def write_assets(work: Path, shape: LlamaShape, seq: int, samples: int) -> None:
    """A small tokenizer and a random-token MDS dataset of `samples` samples of `seq` tokens."""
    import numpy as np
    from streaming import MDSWriter
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ["peer benchmark text"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(
        work / "tok"
    )
    shutil.rmtree(work / "mds", ignore_errors=True)  # a reused --work-dir
    rng = np.random.default_rng(0)
    with MDSWriter(out=str(work / "mds"), columns={"tokens": "ndarray:int32"}) as w:
        for _ in range(samples):
            w.write({"tokens": rng.integers(0, shape.vocab_size, seq, dtype=np.int32)})


def write_foundry_yaml(path: Path, cfg: dict[str, Any]) -> None:
    import yaml

    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)


def foundry_result(metrics_file: Path, last_step: int | None = None) -> dict[str, Any]:
    """Steady-state tokens/s and the SpeedMonitor's MFU from the run's metrics.jsonl (the rows
    logged up to batch ``last_step``: profiled batches after it do not count)."""
    rows = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
    if last_step is not None:
        rows = [r for r in rows if r.get("step") is None or r["step"] <= last_step]
    tps = [r["throughput/tokens_per_sec"] for r in rows if "throughput/tokens_per_sec" in r]
    mfu = [r["throughput/device/mfu"] for r in rows if "throughput/device/mfu" in r]
    if not tps:
        raise ValueError(f"{metrics_file} holds no throughput/tokens_per_sec")
    reserved = [r["memory/peak_reserved_mem"] for r in rows if "memory/peak_reserved_mem" in r]
    return {
        "tokens_per_s": float(tps[-1]),
        "reported_mfu": float(mfu[-1]) if mfu else None,
        # composer's MemoryMonitor logs GB (1e9 bytes); torchtitan's figure is GiB
        "peak_reserved_gib": max(reserved) * 1e9 / 2**30 if reserved else None,
    }


# ---------------------------------------------------------------------------------- torchtitan
def titan_args(
    shape_name: str, row: str, work: Path, *, seq: int, batch: int, steps: int
) -> list[str]:
    """torchtitan 0.2.2 command-line options of the run for precision `row` (bf16 or fp8)."""
    args = [
        "--model.name", "llama3_peer",
        "--model.flavor", "peer",
        "--model.hf_assets_path", str(work),
        "--job.dump_folder", str(work / f"titan-{row}"),
        "--training.local_batch_size", str(batch),
        "--training.seq_len", str(seq),
        "--training.steps", str(steps),
        "--training.max_norm", "1.0",
        "--lr_scheduler.warmup_steps", "2",
        "--metrics.log_freq", str(WINDOW),
        "--metrics.disable_color_printing",
        "--activation_checkpoint.mode", "none",
        "--compile.enable",
        "--compile.components", "model,loss",
    ]  # fmt: skip
    if row == "fp8":
        args += [
            "--model.converters", "quantize.linear.float8",
            "--quantize.linear.float8.recipe_name", "tensorwise",
            "--quantize.linear.float8.filter_fqns", "output",
        ]  # fmt: skip
    return args


_TITAN_LINE = re.compile(
    r"step:\s*(?P<step>\d+)\s.*?memory:\s*(?P<mem>[\d.]+)GiB.*?tps:\s*(?P<tps>[\d,]+)"
    r".*?mfu:\s*(?P<mfu>[\d.]+)%"
)


def titan_result(log: str, steps: int) -> dict[str, Any]:
    """Tokens/s and MFU of torchtitan's log line at step `steps` (the mean of its last window)."""
    found = {int(m["step"]): m for m in _TITAN_LINE.finditer(log)}
    if steps not in found:
        raise ValueError(f"no torchtitan metrics line for step {steps} in the log")
    m = found[steps]
    return {
        "tokens_per_s": float(m["tps"].replace(",", "")),
        "reported_mfu": float(m["mfu"]) / 100,
        "peak_reserved_gib": float(m["mem"]),
    }


def _titan_worker(argv: list[str]) -> None:
    """Inside torchrun: register the `peer` flavour and a random-token loader, then train."""
    ap = argparse.ArgumentParser(prog="torchtitan_peer.py titan-worker")
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)
    shape = SHAPES[ns.shape]
    rest = ns.rest[1:] if ns.rest[:1] == ["--"] else ns.rest

    import torch
    from torch.utils.data import IterableDataset
    from torchtitan.components.dataloader import ParallelAwareDataloader
    from torchtitan.config import ConfigManager
    from torchtitan.models.llama3 import TransformerModelArgs, get_train_spec
    from torchtitan.protocols.train_spec import register_train_spec
    from torchtitan.tools.logging import init_logger
    from torchtitan.train import Trainer

    class RandomTokens(IterableDataset):
        def __init__(self, vocab: int, seq: int, seed: int) -> None:
            self.vocab, self.seq, self.seed = vocab, seq, seed

        def __iter__(self):  # noqa: ANN204
            g = torch.Generator().manual_seed(self.seed)
            while True:
                x = torch.randint(0, self.vocab, (self.seq + 1,), generator=g)
                yield {"input": x[:-1]}, x[1:]

    def build_loader(dp_world_size, dp_rank, tokenizer, job_config, infinite=True):  # noqa: ANN001, ANN202, ARG001
        ds = RandomTokens(shape.vocab_size, job_config.training.seq_len, 1000 + dp_rank)
        return ParallelAwareDataloader(
            ds,
            dp_rank=dp_rank,
            dp_world_size=dp_world_size,
            batch_size=job_config.training.local_batch_size,
        )

    model_args = TransformerModelArgs(
        dim=shape.dim,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_kv_heads,
        vocab_size=shape.vocab_size,
        multiple_of=shape.multiple_of,
        ffn_dim_multiplier=shape.ffn_dim_multiplier,
        norm_eps=shape.norm_eps,
        rope_theta=shape.rope_theta,
    )
    spec = dataclasses.replace(
        get_train_spec(),
        model_args={"peer": model_args},
        build_dataloader_fn=build_loader,
        build_tokenizer_fn=None,
        build_validator_fn=None,
        state_dict_adapter=None,
    )
    register_train_spec("llama3_peer", spec)
    init_logger()
    config = ConfigManager().parse_args(rest)
    trainer = Trainer(config)
    try:
        trainer.train()
    finally:
        trainer.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------- runs
def _run(cmd: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, str]:
    print("+ " + shlex.join(cmd), flush=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "tps:" in line or "compile:" in line or "Error" in line:
                print("  | " + line.rstrip(), flush=True)
        rc = proc.wait()
    text = log_path.read_text()
    if rc != 0:
        print(f"  exit {rc}; the end of {log_path.name}:", flush=True)
        print("\n".join("  | " + x for x in text.splitlines()[-25:]), flush=True)
    return rc, text


def _attention_line(log: str) -> str | None:
    for line in log.splitlines():
        if "compile:" in line and "attention:" in line:
            return "attention:" + line.split("attention:", 1)[1].rstrip()
    return None


def run_titan(ns: argparse.Namespace, row: str, work: Path, out: Path) -> dict[str, Any]:
    args = titan_args(ns.shape, row, work, seq=ns.seq, batch=ns.batch, steps=ns.steps)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
        str(Path(__file__).resolve()), "titan-worker", "--shape", ns.shape, "--", *args,
    ]  # fmt: skip
    # torchtitan's run_train.sh sets this allocator option
    env = {**os.environ, "PYTORCH_ALLOC_CONF": "expandable_segments:True"}
    rc, log = _run(cmd, out / f"titan-{row}.log", env)
    settings = "attention: SDPA; compile: each block + loss; no activation checkpointing"
    if row == "fp8":
        settings += "; fp8: tensorwise (torchao float8, output head in bf16)"
    row_out: dict[str, Any] = {
        "framework": "torchtitan 0.2.2",
        "command": shlex.join(cmd),
        "startup": settings,
    }
    if rc != 0:
        return {**row_out, "error": f"exit {rc}; see titan-{row}.log"}
    got = titan_result(log, ns.steps)
    row_out["startup"] += f"; peak {got['peak_reserved_gib']:.1f} GiB reserved"
    return {**row_out, **got}


def run_foundry(ns: argparse.Namespace, row: str, work: Path, out: Path) -> dict[str, Any]:
    cfg = foundry_config(
        SHAPES[ns.shape], row, work, seq=ns.seq, batch=ns.batch, steps=ns.steps,
        loss_chunk=ns.loss_chunk, mixed_precision=ns.mixed_precision,
    )  # fmt: skip
    if ns.profile:  # three batches inside the measured window, after it (kept out of tokens/s)
        cfg["callbacks"]["profiler"] = {"start_batch": ns.steps + 1, "batches": 3, "top": 30}
        cfg["max_duration"] = f"{ns.steps + 3}ba"
    path = work / f"foundry-{row}.yaml"
    write_foundry_yaml(path, cfg)
    cmd = [sys.executable, "-m", "foundry_train", str(path)]
    rc, log = _run(cmd, out / f"foundry-{row}.log", dict(os.environ))
    row_out: dict[str, Any] = {
        "framework": "foundry",
        "command": shlex.join(cmd),
        "startup": _attention_line(log),
        "config": cfg,
    }
    if rc != 0:
        return {**row_out, "error": f"exit {rc}; see foundry-{row}.log"}
    wrote = re.search(r"profiler: wrote (\S+)", log)
    if wrote and Path(wrote.group(1)).is_file():  # the profile summary goes into the run's log
        with open(out / f"foundry-{row}.log", "a") as f:
            f.write("\n" + Path(wrote.group(1)).read_text())
    got = foundry_result(Path(cfg["loggers"]["metrics_file"]), ns.steps)
    if got["peak_reserved_gib"] is not None and row_out["startup"]:
        row_out["startup"] += f"; peak {got['peak_reserved_gib']:.1f} GiB reserved"
    return {**row_out, **got}


def validate_foundry(work: Path, rows: list[str]) -> None:
    """`foundry_train validate --skip-hardware` on each written YAML (the --dry-run check)."""
    for row in rows:
        cmd = [sys.executable, "-m", "foundry_train", "validate"]
        cmd += [str(work / f"foundry-{row}.yaml"), "--skip-hardware"]
        subprocess.run(cmd, check=True)


def ratio_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Foundry / torchtitan tokens/s for each precision where both ran."""
    out = []
    for row in ("bf16", "fp8"):
        got = {
            r["framework"].split()[0]: r
            for r in results
            if r["precision"] == row and "tokens_per_s" in r
        }
        if "foundry" in got and "torchtitan" in got:
            ratio = got["foundry"]["tokens_per_s"] / got["torchtitan"]["tokens_per_s"]
            out.append({"ratio": "foundry/torchtitan tokens/s", "precision": row, "value": ratio})
    return out


def markdown(results: list[dict[str, Any]], ratios: list[dict[str, Any]], head: str) -> str:
    lines = [head, "", "| run | precision | tokens/s | MFU | own MFU | note |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        if "tokens_per_s" in r:
            own = "" if r.get("reported_mfu") is None else f"{100 * r['reported_mfu']:.1f}%"
            note = r.get("startup") or ""
            lines.append(
                f"| {r['framework']} | {r['precision']} | {r['tokens_per_s']:,.0f} | "
                f"{100 * r['mfu']:.1f}% | {own} | {note} |"
            )
        else:
            lines.append(f"| {r['framework']} | {r['precision']} | – | – | – | {r['error']} |")
    lines.append("")
    for q in ratios:
        lines.append(f"- {q['ratio']}, {q['precision']}: {q['value']:.3f}x")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out-dir", required=True, help="where peer.jsonl, peer.md and logs go")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama3-1b")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8, help="micro-batch = batch (no accumulation)")
    ap.add_argument("--steps", type=int, default=30, help="a multiple of 10, at least 20")
    ap.add_argument("--rows", nargs="+", choices=["bf16", "fp8"], default=["bf16", "fp8"])
    ap.add_argument(
        "--frameworks", nargs="+", choices=["titan", "foundry"], default=["titan", "foundry"]
    )
    ap.add_argument("--loss-chunk", type=int, default=8192, help="Foundry's; 0: plain loss")
    ap.add_argument(
        "--mixed-precision",
        choices=["none", "PURE"],
        default="none",
        help="Foundry's fsdp_config.mixed_precision: none (no fsdp_config; fp32 residual stream,"
        " as torchtitan's one-GPU autocast) or PURE (the shipped YAMLs'; bf16 residual stream)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="Foundry's runs train 3 more batches under callbacks.profiler (after the measured"
        " window), its summary appended to foundry-ROW.log",
    )
    ap.add_argument("--work-dir", default="", help="datasets and run folders (default: a temp dir)")
    ap.add_argument(
        "--dry-run", action="store_true", help="write the assets and configs, validate, no training"
    )
    ns = ap.parse_args(argv)
    if ns.steps < 2 * WINDOW or ns.steps % WINDOW:
        ap.error(f"--steps must be a multiple of {WINDOW} and at least {2 * WINDOW}")
    return ns


def _check_imports(ns: argparse.Namespace) -> None:
    import importlib.util

    if (
        "titan" in ns.frameworks
        and not ns.dry_run
        and importlib.util.find_spec("torchtitan") is None
    ):
        sys.stderr.write(
            "error: torchtitan is not importable here. Install the wheels of .titan/ first "
            "(`scripts/device-titan` where pip can download, then `. .titan/setup.sh` "
            "here), or run only Foundry with `--frameworks foundry`.\n"
        )
        raise SystemExit(2)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["titan-worker"]:
        _titan_worker(argv[1:])
        return
    ns = parse_args(argv)
    _check_imports(ns)
    out = Path(ns.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(ns.work_dir or tempfile.mkdtemp(prefix="titan-peer-"))
    work.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[ns.shape]
    write_assets(work, shape, ns.seq, samples=ns.steps * ns.batch + 64)
    if ns.dry_run:
        for row in ns.rows:
            cfg = foundry_config(
                shape, row, work, seq=ns.seq, batch=ns.batch, steps=ns.steps,
                loss_chunk=ns.loss_chunk, mixed_precision=ns.mixed_precision,
            )  # fmt: skip
            write_foundry_yaml(work / f"foundry-{row}.yaml", cfg)
            titan = titan_args(ns.shape, row, work, seq=ns.seq, batch=ns.batch, steps=ns.steps)
            print(f"torchtitan {row}: {shlex.join(titan)}")
        validate_foundry(work, ns.rows)
        return
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    fpt = shape.flops_per_token(ns.seq)
    common = {
        "card": card,
        "date": _dt.date.today().isoformat(),
        "shape": ns.shape,
        **dataclasses.asdict(shape),
        "ffn_hidden": shape.ffn_hidden,
        "n_params": shape.param_count(),
        "flops_per_token": fpt,
        "seq": ns.seq,
        "batch": ns.batch,
        "steps": ns.steps,
        "window": WINDOW,
        "torch": torch.__version__,
        "torchao": _version("torchao"),
        "torchtitan": _version("torchtitan"),
    }
    results = []
    for row in ns.rows:
        for fw in ns.frameworks:
            fn = run_titan if fw == "titan" else run_foundry
            r = {**common, "precision": row, **fn(ns, row, work, out)}
            if "tokens_per_s" in r:
                r["mfu"] = r["tokens_per_s"] * fpt / PEAK_FLOPS
            results.append(r)
            print(json.dumps({k: r.get(k) for k in ("framework", "precision", "tokens_per_s", "mfu", "error")}), flush=True)  # fmt: skip
    ratios = ratio_rows(results)
    with (out / "peer.jsonl").open("w") as f:
        for r in [*results, *ratios]:
            f.write(json.dumps(r) + "\n")
    head = (
        f"torchtitan 0.2.2 vs Foundry, {ns.shape} (d {shape.dim}, L {shape.n_layers}, "
        f"heads {shape.n_heads}/{shape.n_kv_heads} kv, ffn {shape.ffn_hidden}, vocab "
        f"{shape.vocab_size}, {shape.param_count() / 1e9:.2f}B params), seq {ns.seq}, batch "
        f"{ns.batch}, {ns.steps} steps (mean of the last {WINDOW}); {card}, {common['date']}. "
        f"MFU: 6N + 12 L d S = {fpt / 1e9:.2f} GFLOP/token against {PEAK_FLOPS / 1e12:.0f} "
        "TFLOP/s (bf16 peak, FP8 rows too)."
    )
    (out / "peer.md").write_text(markdown(results, ratios, head))
    print((out / "peer.md").read_text())
    if any("error" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
