"""Training throughput harness: tokens/s, MFU, peak memory and step time of a composer run.

One measurement (`run`) trains a model for a fixed number of steps on synthetic tokens with
composer's Trainer and reports figures measured between the end of the warm-up steps and the last
step. `grid` runs a named grid of measurements, each in its own process (so compile caches and
allocator state never leak between them), always including the baseline of issue 7 (transformers'
LlamaForCausalLM of the same size, SDPA attention, same batch, amp_bf16), and renders a Markdown
datasheet with the card, date, command and every figure.

MFU = tokens/s x FLOPs per token / (989e12 x GPUs), FLOPs per token = 6N + 12 L d S with N the
non-embedding parameters plus the embedding when a tied lm_head uses it in a matmul.

  # one measurement on one GPU
  python benchmarks/train_throughput.py run --model mpt --preset 125m --compile --out r.jsonl
  # the datasheet grid, each row its own process (GPUS>1: launched through composer)
  python benchmarks/train_throughput.py grid --grid h100 --out-dir bench-output --gpus 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PEAK_FLOPS = 989e12  # H100/H200 dense bf16


@dataclass
class RunSpec:
    model: str = "mpt"  # mpt | llama
    preset: str = "125m"
    seq_len: int = 2048
    micro_batch: int = 16
    grad_accum: int = 1
    attn_impl: str = "torch"  # mpt: torch | flash | triton ; llama: sdpa
    compile: bool = False  # torch.compile each transformer block
    full_compile: bool = False  # torch.compile the whole model (blocks, head and loss together)
    act_ckpt: bool = False
    fsdp: bool = False
    sharding: str = "FULL_SHARD"  # with fsdp: FULL_SHARD | SHARD_GRAD_OP | NO_SHARD
    prefetch: bool = False  # with fsdp: forward prefetch, BACKWARD_PRE, no all-gather limit
    steps: int = 30
    warmup: int = 10
    fused_optimizer: bool = True
    loss_chunk: int = 0  # >0: MPTConfig.loss_chunk_size, fused head + loss (mpt only)
    meta_init: bool = False  # mpt with fsdp: build on meta, FSDP initialises unit by unit

    def label(self) -> str:
        parts = [
            self.model,
            self.preset,
            f"s{self.seq_len}",
            f"mb{self.micro_batch}",
            self.attn_impl,
        ]
        if self.compile:
            parts.append("compile")
        if self.full_compile:
            parts.append("fullcompile")
        if self.act_ckpt:
            parts.append("actckpt")
        if self.loss_chunk:
            parts.append(f"ce{self.loss_chunk}")
        if self.fsdp:
            parts.append("fsdp" if self.sharding == "FULL_SHARD" else self.sharding.lower())
            if self.prefetch:
                parts.append("prefetch")
            if self.meta_init:
                parts.append("meta")
        return "-".join(parts)


def _build_model(spec: RunSpec):
    import torch
    from foundry_models import MPTForCausalLM, preset_config

    # Under a launcher every rank builds on its own GPU (FSDP refuses a mismatch).
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)

    cfg = preset_config(spec.preset, max_seq_len=spec.seq_len)
    if spec.model == "mpt":
        cfg.attn_config = {**cfg.attn_config, "attn_impl": spec.attn_impl}
        cfg.loss_chunk_size = spec.loss_chunk or None
        cfg = type(cfg).from_dict(cfg.to_dict())  # re-validate
        if spec.meta_init and spec.fsdp:
            # Left on meta: composer's FSDP calls model.param_init_fn on each unit it materialises.
            with torch.device("meta"):
                model = MPTForCausalLM(cfg)
            return model, list(model.transformer.blocks)
        with device:
            model = MPTForCausalLM(cfg)
        model.init_weights_()
        blocks = list(model.transformer.blocks)
        return model, blocks
    if spec.model == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        # Same width, depth, heads and vocabulary; SwiGLU hidden size chosen so the FFN holds as
        # many parameters as MPT's 4x GELU MLP (3 * d * h == 2 * d * 4d).
        hidden = int(round(cfg.d_model * cfg.expansion_ratio * 2 / 3))
        lcfg = LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model,
            intermediate_size=hidden,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_heads,
            max_position_embeddings=spec.seq_len,
            tie_word_embeddings=True,
            attn_implementation="sdpa",
        )
        with device:
            model = LlamaForCausalLM(lcfg)
        return model, list(model.model.layers)
    raise SystemExit(f"unknown --model {spec.model!r}: use mpt or llama")


def run_one(spec: RunSpec, out: Path) -> dict:
    import torch
    from composer import Callback, Trainer
    from composer.models import ComposerModel
    from composer.utils import dist
    from foundry_train.model import flops_per_token
    from torch.utils.data import DataLoader, Dataset

    class Synthetic(Dataset):
        def __init__(self, n: int, seq: int, vocab: int) -> None:
            g = torch.Generator().manual_seed(0)
            self.data = torch.randint(0, vocab, (min(n, 4096), seq), generator=g, dtype=torch.int64)
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            x = self.data[i % len(self.data)]
            return {"input_ids": x, "labels": x}

    class Wrapped(ComposerModel):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch):
            return self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False)

        def loss(self, outputs, batch):
            return outputs.loss

    class Timer(Callback):
        def __init__(self, warmup: int) -> None:
            self.warmup = warmup
            self.t0 = self.t1 = 0.0
            self.done = 0

        def batch_end(self, state, logger) -> None:
            b = int(state.timestamp.batch)
            if b == self.warmup:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.t0 = time.perf_counter()
            elif b > self.warmup:
                self.done = b - self.warmup

        def fit_end(self, state, logger) -> None:
            torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model, blocks = _build_model(spec)
    fpt = flops_per_token(model, spec.seq_len)  # the trainer's own 6N + 12 L d S
    if spec.model == "llama":
        for b in blocks:
            b._fsdp_wrap = True
            if spec.act_ckpt:
                b._activation_checkpointing = True
    elif spec.act_ckpt:
        model.gradient_checkpointing_enable()
    if spec.compile:
        for b in blocks:
            b.compile()
    if spec.full_compile:
        model.compile()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_rank = spec.micro_batch * spec.grad_accum
    ds = Synthetic((spec.steps + 2) * per_rank * world, spec.seq_len, model.config.vocab_size)
    sampler = dist.get_sampler(ds, shuffle=False, drop_last=True)
    loader = DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=2, pin_memory=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=spec.fused_optimizer)
    timer = Timer(spec.warmup)
    parallelism = None
    if spec.fsdp:
        parallelism = {
            "fsdp": {
                "sharding_strategy": spec.sharding,
                "mixed_precision": "PURE",
                "activation_checkpointing": spec.act_ckpt,
                "limit_all_gathers": not spec.prefetch,
                "forward_prefetch": spec.prefetch,
                "backward_prefetch": "BACKWARD_PRE" if spec.prefetch else "BACKWARD_POST",
                "use_orig_params": True,
            }
        }
    trainer = Trainer(
        model=Wrapped(model),
        train_dataloader=loader,
        optimizers=opt,
        max_duration=f"{spec.steps}ba",
        precision="amp_bf16",
        device_train_microbatch_size=spec.micro_batch,
        parallelism_config=parallelism,
        callbacks=[timer],
        progress_bar=False,
        log_to_console=False,
        loggers=[],
        save_folder=None,
        seed=0,
    )
    # Memory once the model is built and wrapped, before the first step: what meta init saves.
    init_peak = torch.cuda.max_memory_allocated() / 2**30
    trainer.fit()
    elapsed = timer.t1 - timer.t0
    steps = timer.done
    tokens = steps * per_rank * spec.seq_len * world
    tps = tokens / elapsed
    result = {
        **asdict(spec),
        "label": spec.label(),
        "gpus": world,
        "card": torch.cuda.get_device_name(),
        "flops_per_token": fpt,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "tokens_per_s": tps,
        "tokens_per_s_per_gpu": tps / world,
        "mfu": tps * fpt / (PEAK_FLOPS * world),
        "step_time_s": elapsed / max(steps, 1),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "init_peak_mem_gib": init_peak,
        "measured_steps": steps,
        "torch": torch.__version__,
    }
    result["command"] = shlex.join(["python", *sys.argv])
    if dist.get_global_rank() == 0:
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
    trainer.close()
    return result


# The issue's baseline: composer training transformers' Llama of MPT-125M's size with SDPA.
_BASELINE = RunSpec(model="llama", preset="125m", attn_impl="sdpa", steps=20, warmup=8)
_MPT125 = RunSpec(
    model="mpt", preset="125m", attn_impl="flash", full_compile=True, steps=20, warmup=8
)
_MPT1B = RunSpec(
    model="mpt",
    preset="1b",
    attn_impl="flash",
    compile=True,
    loss_chunk=8192,
    micro_batch=8,
    steps=16,
    warmup=6,
)
_MPT1B1 = replace(_MPT1B, micro_batch=16, steps=20, warmup=6)
_MPT7B_SHORT = replace(
    _MPT1B, preset="7b", attn_impl="torch", compile=False, micro_batch=2, steps=4, warmup=2
)
_SHORT = {"seq_len": 512, "micro_batch": 2, "steps": 6, "warmup": 2}

GRIDS: dict[str, list[RunSpec]] = {
    # The baseline of issue 7 first, then our model with each lever turned on in turn.
    "h100": [
        _BASELINE,
        _MPT125,
        replace(_MPT125, loss_chunk=8192),
        replace(_MPT125, loss_chunk=8192, micro_batch=32),
        replace(_MPT125, attn_impl="triton", loss_chunk=8192, micro_batch=32),
        replace(_MPT125, preset="350m", loss_chunk=8192, micro_batch=16, steps=16, warmup=6),
        replace(_MPT1B, compile=False, full_compile=True, steps=14, warmup=5),
    ],
    "tune125": [
        _BASELINE,
        _MPT125,
        replace(_MPT125, micro_batch=32),
        replace(_MPT125, full_compile=False, compile=True, loss_chunk=8192, micro_batch=32),
        replace(_MPT125, attn_impl="triton"),
    ],
    # FSDP scaling with its baseline: run with --gpus 1, 2 and 4; on N > 1 GPUs every row is
    # FULL_SHARD. Tokens/s per GPU of the 1B row on N GPUs against 1 GPU is the scaling figure.
    "scaling": [_BASELINE, _MPT1B],
    # The 1B row of "scaling" with FSDP's communication tuned (run with --gpus 2 and 4).
    "scaling_tuned": [
        replace(_MPT1B, prefetch=True),
        replace(_MPT1B, sharding="SHARD_GRAD_OP", prefetch=True),
    ],
    # Two more scaling levers for the 1B row, each against its own 1-GPU run (--gpus 1, then N):
    # micro-batch 16 (twice the compute per all-gather and reduce-scatter) and the whole model
    # compiled under FSDP. The Llama baseline comes first, for the 1-GPU run.
    "scaling_levers": [
        _BASELINE,
        replace(
            _MPT1B, micro_batch=16, steps=14, warmup=5, sharding="SHARD_GRAD_OP", prefetch=True
        ),
        replace(_MPT1B, compile=False, full_compile=True, sharding="SHARD_GRAD_OP", prefetch=True),
    ],
    # The three sharding strategies for the micro-batch 16 row of "scaling_levers", with more
    # measured steps (--gpus 1 measures the shared 1-GPU row once, then --only mpt-1b --gpus 4).
    # NO_SHARD moves as many bytes as SHARD_GRAD_OP (one all-reduce in the backward) and needs
    # no all-gather before the forward; a 1B model's full optimizer state fits every GPU.
    "scaling4": [
        _BASELINE,
        replace(_MPT1B1, sharding="SHARD_GRAD_OP", prefetch=True),
        replace(_MPT1B1, sharding="NO_SHARD"),
        replace(_MPT1B1, sharding="FULL_SHARD", prefetch=True),
    ],
    # Meta init: the 7B preset under FULL_SHARD with its weights materialised on every rank
    # before FSDP wraps it, then left on meta for FSDP to initialise one unit at a time (compare
    # init_peak_mem_gib, the memory before the first step). Run with --gpus 2 or more.
    "meta_init": [_MPT7B_SHORT, replace(_MPT7B_SHORT, meta_init=True)],
    # FSDP scaling: the same 1B run on 1 GPU (no FSDP) and, with --gpus N, FULL_SHARD on N.
    "scale1b": [replace(_MPT1B, attn_impl="triton", steps=14, warmup=5)],
    "smoke": [
        replace(_BASELINE, **_SHORT),
        RunSpec(model="mpt", preset="125m", attn_impl="torch", **_SHORT),
    ],
}


def _spec_args(spec: RunSpec) -> list[str]:
    args = []
    for k, v in asdict(spec).items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args += [flag] if v else [f"--no-{k.replace('_', '-')}"]
        else:
            args += [flag, str(v)]
    return args


def run_grid(specs: list[RunSpec], out_dir: Path, gpus: int, timeout: int) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "throughput.jsonl"
    rows: list[dict] = []
    seen: set[str] = set()
    for spec in specs:
        if gpus > 1:
            spec = replace(spec, fsdp=True)
        if spec.label() in seen:
            # Rows that differ only in FSDP settings are the same run on one GPU (no wrapper).
            print(f"== {spec.label()} ({gpus} GPU): measured above, not repeated", flush=True)
            continue
        seen.add(spec.label())
        cmd = [sys.executable, __file__, "run", *_spec_args(spec), "--out", str(results_path)]
        if gpus > 1:
            cmd = ["composer", "-n", str(gpus), *cmd[1:]]
        print(f"== {spec.label()} ({gpus} GPU): {shlex.join(cmd)}", flush=True)
        before = results_path.read_text().count("\n") if results_path.exists() else 0
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
            log = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            log = f"timed out after {timeout}s\n{e.stdout or ''}{e.stderr or ''}"
        (out_dir / f"{spec.label()}-{gpus}gpu.log").write_text(log if isinstance(log, str) else "")
        lines = results_path.read_text().splitlines() if results_path.exists() else []
        if len(lines) > before:
            row = json.loads(lines[-1])
            row["command"] = shlex.join(cmd)
            rows.append(row)
            print(
                f"   {row['tokens_per_s']:.0f} tok/s  MFU {row['mfu']:.1%}  mem {row['peak_mem_gib']:.1f} GiB",
                flush=True,
            )
        else:
            tail = "\n".join(str(log).splitlines()[-15:])
            print(f"   FAILED:\n{tail}", flush=True)
            rows.append({**asdict(spec), "label": spec.label(), "gpus": gpus, "error": tail[-500:]})
    return rows


def _fsdp_cell(r: dict) -> str:
    if not r.get("fsdp"):
        return "-"
    cell = r.get("sharding", "FULL_SHARD") + ("+prefetch" if r.get("prefetch") else "")
    return cell + (", meta init" if r.get("meta_init") else "")


def datasheet(rows: list[dict]) -> str:
    date = _dt.date.today().isoformat()
    base = next((r for r in rows if r.get("model") == "llama" and "tokens_per_s" in r), None)
    head = (
        "| card | GPUs | model | preset | seq | mb | attn | compile | loss chunk | act ckpt | FSDP "
        "| tokens/s | tokens/s/GPU | MFU | vs baseline | step (s) | peak mem (GiB) |"
    )
    lines = [
        f"Measured {date}. Baseline: composer training transformers' LlamaForCausalLM (SDPA) of "
        "the same size and batch, in the same run. MFU with 6N + 12·L·d·S FLOPs/token, "
        "989 TFLOP/s peak. compile: `blocks` = torch.compile per transformer block, `model` = "
        "the whole model (head and loss included). FSDP: the sharding strategy (`+prefetch`: "
        "forward prefetch, BACKWARD_PRE, no all-gather limit); `-` on one GPU (no wrapper).",
        "",
        head,
        "|" + " --- |" * (head.count("|") - 1),
    ]
    for r in rows:
        compiled = "model" if r.get("full_compile") else ("blocks" if r.get("compile") else "no")
        chunk = r.get("loss_chunk") or "-"
        cells = [
            r.get("card", "-"),
            r["gpus"],
            r["model"],
            r["preset"],
            r["seq_len"],
            r["micro_batch"],
            r["attn_impl"],
            compiled,
            chunk,
            r["act_ckpt"],
            _fsdp_cell(r),
        ]
        if "tokens_per_s" not in r:
            cells += ["failed", "", "", "", "", ""]
        else:
            same = base is not None and r["preset"] == base["preset"]
            ratio = f"{r['mfu'] / base['mfu']:.2f}x" if same else "-"
            cells += [
                f"{r['tokens_per_s']:,.0f}",
                f"{r['tokens_per_s_per_gpu']:,.0f}",
                f"{r['mfu']:.1%}",
                ratio,
                f"{r['step_time_s']:.3f}",
                f"{r['peak_mem_gib']:.1f}",
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    commands = [r["command"] for r in rows if r.get("command")]
    if commands:
        lines += ["", "Commands (each row, in order):", ""] + [f"- `{c}`" for c in commands]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one measurement in this process")
    for k, v in asdict(RunSpec()).items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            r.add_argument(flag, dest=k, action=argparse.BooleanOptionalAction, default=v)
        else:
            r.add_argument(flag, dest=k, type=type(v), default=v)
    r.add_argument("--out", type=Path, default=Path("throughput.jsonl"))
    rd = sub.add_parser("render", help="render a datasheet from a throughput.jsonl")
    rd.add_argument("jsonl", type=Path)
    rd.add_argument("--out", type=Path, default=None)
    g = sub.add_parser("grid", help="a named grid, each measurement in its own process")
    g.add_argument("--grid", choices=sorted(GRIDS), default="h100")
    g.add_argument("--out-dir", type=Path, default=Path("bench-output"))
    g.add_argument("--gpus", type=int, default=1)
    g.add_argument("--timeout", type=int, default=300)
    g.add_argument(
        "--only", default="", help="run only the rows whose label contains this (e.g. mpt-1b)"
    )
    args = p.parse_args()
    if args.cmd == "run":
        fields = {k: getattr(args, k) for k in asdict(RunSpec())}
        run_one(RunSpec(**fields), args.out)
        return
    if args.cmd == "render":
        rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
        sheet = datasheet(rows)
        if args.out:
            args.out.write_text(sheet)
        print(sheet)
        return
    # --only matches the label each row runs under (with its FSDP settings on several GPUs).
    specs = [s for s in GRIDS[args.grid] if args.only in replace(s, fsdp=args.gpus > 1).label()]
    if not specs:
        sys.exit(f"no row of grid {args.grid!r} has {args.only!r} in its label")
    rows = run_grid(specs, args.out_dir, args.gpus, args.timeout)
    sheet = datasheet(rows)
    (args.out_dir / "DATASHEET.md").write_text(sheet)
    print(sheet)


if __name__ == "__main__":
    main()
