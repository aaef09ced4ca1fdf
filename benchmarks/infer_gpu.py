"""foundry-infer on one GPU: the static-slot CUDA-graph engine against transformers, ORT CUDA, serving.

Builds random-weight 1B-class models itself (MPT ``1b`` preset via foundry_models' export, and a
Llama of the same size; bf16; no hub access) into --work-dir, then measures, same prompts:

1. batch-1 decode tokens/s: our engine (``torch-static-cuda-cudagraphs``), transformers
   ``generate`` eager bf16 with its default cache, and transformers' static cache, whose decoding
   forward ``generate`` compiles itself (checked; uncompiled on a CPU); the fraction of the
   memory-bandwidth limit our batch 1 reaches;
2. ``foundry-infer bench`` rows (TTFT, ms/token, tokens/s) for batch sizes 1..64;
3. teacher-forced top-1 agreement, bf16, of our engine (10 prompts decoded together) with the
   single-request eager path, 10 prompts x 64 tokens, and both bf16 paths (and our engine at
   batch 1) against the same weights teacher-forced in fp32, and transformers' own eager forward
   batched against one at a time (the bf16 noise floor); the same for ONNX Runtime CUDA fp16
   (``export-onnx --dtype float16``, IO binding) against torch fp16;
4. a load test of ``foundry-infer serve`` on 127.0.0.1: 32 concurrent clients against one client
   at a time, counting 5xx answers.

Each result is a JSON line in OUT_DIR/results.jsonl as soon as it is measured, and the table is
OUT_DIR/results.md. Sections past --budget-s are skipped (and say so). On an H100/H200:

    python benchmarks/infer_gpu.py --out-dir /tmp/infer-gpu

CPU smoke run (what CI checks): ``python benchmarks/infer_gpu.py --device cpu --tiny ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import infer_gpu_models as M  # noqa: E402


class Results:
    """JSON lines as they come, and a markdown table at the end."""

    def __init__(self, out_dir: Path, budget_s: float) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "results.jsonl"
        self.path.write_text("")
        self.md = out_dir / "results.md"
        self.rows: list[dict[str, Any]] = []
        self.deadline = time.monotonic() + budget_s

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)

    def in_time(self, section: str, need_s: float = 0.0) -> bool:
        """Whether ``section`` (about ``need_s`` long) fits before the deadline; says if not."""
        left = self.deadline - time.monotonic()
        if left > need_s:
            return True
        self.add(section=section, skipped=f"needs ~{need_s:.0f} s, {left:.0f} s of --budget-s left")
        return False

    def write_table(self, header: dict[str, Any]) -> None:
        lines = [f"# foundry-infer GPU benchmark ({header['device_name']}, {header['date']})", ""]
        lines += [
            f"Command: `{header['command']}`",
            "",
            "| section | what | value |",
            "|---|---|---|",
        ]
        for row in self.rows:
            section = row.get("section", "")
            for key, value in row.items():
                if key != "section":
                    shown = _shown(value)
                    lines.append(f"| {section} | {key} | {shown} |")
        self.md.write_text("\n".join(lines) + "\n")


def _shown(value: object) -> object:
    """A float as a whole number with grouped thousands from 10,000 to a billion (10,686, not
    1.069e+04), else to four significant figures."""
    if not isinstance(value, float):
        return value
    return f"{value:,.0f}" if 10_000 <= abs(value) < 1e9 else f"{value:.4g}"


def prompts_for(vocab: int, count: int, length: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(10, min(vocab, 4096), length).tolist() for _ in range(count)]


def open_static(
    hf_dir: Path, args: argparse.Namespace, dtype: str = "bfloat16", compile_decode: bool = False
) -> Any:
    from foundry_infer.slot_engine import SlotEngine

    max_len = args.prompt_tokens + max(args.new_tokens, args.agree_tokens) + 8
    dtype = "float32" if args.tiny else dtype
    return SlotEngine(
        hf_dir,
        args.device,
        dtype,
        max_batch_size=64,
        max_len=max_len,
        compile_decode=compile_decode,
    )


def batch1_section(res: Results, arch: str, hf_dir: Path, args: argparse.Namespace) -> None:
    """Our engine vs transformers eager vs transformers static cache compiled by ``generate``."""
    import torch
    from foundry_infer.bench import bench_engine, peak_bandwidth_for
    from transformers import AutoModelForCausalLM

    prompt = prompts_for(50368, 1, args.prompt_tokens)[0]
    engine = open_static(hf_dir, args)
    # one step at a time, then queued one ahead (FOUNDRY_DECODE_OVERLAP, on by default on CUDA)
    ours = M.overlap_rate(engine, prompt, args.new_tokens, on=False)
    peak = args.peak_bandwidth or (peak_bandwidth_for(_device_name(args)) or (None, ""))[0]
    with M.overlap_env(False):
        row = bench_engine(engine, 1, args.prompt_tokens, args.new_tokens, peak_bandwidth=peak)
    weights = engine.weight_bytes_per_token()
    overlapped = M.overlap_rate(engine, prompt, args.new_tokens)
    del engine
    fused: Any = "skipped (--tiny)"  # --compile-decode: inductor-fused layers in the CUDA graphs
    if not args.tiny:
        engine = open_static(hf_dir, args, compile_decode=True)
        rate = M.overlap_rate(engine, prompt, args.new_tokens, on=False)
        with M.overlap_env(False):
            fraction = bench_engine(
                engine, 1, args.prompt_tokens, args.new_tokens, peak_bandwidth=peak
            ).bandwidth_fraction
        with M.overlap_env(True):
            overlap_fraction = bench_engine(
                engine, 1, args.prompt_tokens, args.new_tokens, peak_bandwidth=peak
            ).bandwidth_fraction
        fused = {
            "tokens_per_s": rate,
            "bandwidth_fraction": fraction,
            "overlap_tokens_per_s": M.overlap_rate(engine, prompt, args.new_tokens),
            "overlap_bandwidth_fraction": overlap_fraction,
        }
        del engine
    triton_attention = "skipped (--tiny)" if args.tiny else triton_rates(hf_dir, args, prompt, peak)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype).to(args.device).eval()
    eager = M.hf_generate_rate(model, prompt, args.new_tokens)
    del model
    compiled: float | str = "skipped (--compiled-baseline)"
    how = "n/a"
    if arch in args.compiled_baseline.split(","):
        # transformers' static cache, compiled by generate itself; a CPU run (the smoke test)
        # stays uncompiled, as transformers auto-compiles only on cuda/xpu, and its row says so
        try:
            compiled, how = M.compiled_static_rate(
                hf_dir, args.device, prompt, args.new_tokens, str(dtype).removeprefix("torch.")
            )
        except Exception as exc:  # a transformers limitation for this architecture: record it
            compiled = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            how = "failed"
    res.add(
        section=f"batch1-{arch}",
        ours_tokens_per_s=ours,
        hf_eager_tokens_per_s=eager,
        hf_static_compiled_tokens_per_s=compiled,
        hf_static_compile=how,
        speedup_vs_eager=ours / eager,
        speedup_vs_compiled=ours / compiled if isinstance(compiled, float) else "n/a",
        weight_bytes_per_token=weights,
        peak_bandwidth=peak or "unknown (pass --peak-bandwidth)",
        bandwidth_fraction=row.bandwidth_fraction if row.bandwidth_fraction else "n/a",
        ms_per_token=row.per_token_ms,
        ours_overlap_tokens_per_s=overlapped,
        ours_compile_decode=fused,
        ours_triton_attention=triton_attention,
    )


def triton_rates(hf_dir: Path, args: argparse.Namespace, prompt: list[int], peak: Any) -> Any:
    """The lever FOUNDRY_DECODE_ATTENTION=triton (cache write and attention in one kernel):
    batch-1 tokens/s of the static engine, then with --compile-decode, both with overlap (the
    default), and the compiled one's bandwidth fraction; a failure is recorded, not raised."""
    from foundry_infer.bench import bench_engine

    out: dict[str, Any] = {}
    try:
        with M.env_set("FOUNDRY_DECODE_ATTENTION", "triton"):
            for key, compile_decode in (("static", False), ("compile_decode", True)):
                engine = open_static(hf_dir, args, compile_decode=compile_decode)
                out[f"{key}_overlap_tokens_per_s"] = M.overlap_rate(engine, prompt, args.new_tokens)
                if compile_decode:
                    with M.overlap_env(True):
                        out["compile_decode_overlap_bandwidth_fraction"] = bench_engine(
                            engine, 1, args.prompt_tokens, args.new_tokens, peak_bandwidth=peak
                        ).bandwidth_fraction
                del engine
                _free(args)
    except Exception as exc:  # a lever: its failure must not cost the section's other rows
        out["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return out


def batch_sizes_section(res: Results, arch: str, hf_dir: Path, args: argparse.Namespace) -> None:
    from foundry_infer.bench import bench_engine

    engine = open_static(hf_dir, args)
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        if not res.in_time(f"batch-{arch}-{batch}"):
            return
        row = bench_engine(engine, batch, args.prompt_tokens, args.bench_tokens)
        res.add(section=f"bench-{arch}", **row.to_dict())


def agreement_section(res: Results, arch: str, hf_dir: Path, args: argparse.Namespace) -> None:
    """bf16 teacher-forced top-1: our batched engine vs the single-request eager path (the issue's
    ``top1_agreement``: eager's full forward over the sequence; ``ours_vs_eager_decode``: eager's
    token-by-token decode, whose greedy tokens are its top-1s); then both against an fp32 truth,
    and our engine at batch 1."""
    import torch
    from transformers import AutoModelForCausalLM

    prompts = prompts_for(50368, args.agree_prompts, args.prompt_tokens, seed=1)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype).to(args.device).eval()
    runs = [M.reference_run(model, p, args.agree_tokens) for p in prompts]
    forced = [tokens for tokens, _ in runs]  # eager's greedy tokens: its decode path's top-1s
    eager = [top for _, top in runs]  # eager's top-1s from one full forward over them
    eager_batched = M.batched_top1(model, prompts, forced)  # the same, all prompts in one batch
    del model
    _free(args)
    truth, gaps, ulps = M.fp32_truth(hf_dir, args.device, prompts, forced)
    engine = open_static(hf_dir, args)
    ours = M.slot_engine_top1(engine, prompts, forced)
    ours1 = [M.slot_engine_top1(engine, [p], [f])[0] for p, f in zip(prompts, forced, strict=True)]
    res.add(
        section=f"agreement-{arch}",
        dtype=str(dtype).removeprefix("torch."),
        prompts=len(prompts),
        tokens=args.agree_tokens,
        top1_agreement=M.agreement(ours, eager),
        ours_batch1_vs_eager=M.agreement(ours1, eager),
        # eager's own decode path (generate, one token a step with its cache): its greedy tokens
        # are its top-1s, so these compare step-by-step decoding with step-by-step decoding
        ours_vs_eager_decode=M.agreement(ours, forced),
        ours_batch1_vs_eager_decode=M.agreement(ours1, forced),
        # truth: the same weights in fp32, teacher-forced on eager's tokens
        ours_vs_fp32=M.agreement(ours, truth),
        ours_batch1_vs_fp32=M.agreement(ours1, truth),
        eager_vs_fp32=M.agreement(eager, truth),
        eager_decode_vs_fp32=M.agreement(forced, truth),
        # control: transformers' eager forward against itself, batched against one at a time
        eager_batched_vs_eager=M.agreement(eager_batched, eager),
        **M.margin_stats(ours, eager, gaps, ulps),
    )


def ort_section(res: Results, arch: str, hf_dir: Path, args: argparse.Namespace) -> None:
    """export-onnx --dtype float16, ONNX Runtime (CUDA, IO binding) vs torch fp16, teacher-forced."""
    from foundry_infer import OrtEngine, TorchEngine, export_onnx

    onnx_dir = Path(args.work_dir) / ("tiny" if args.tiny else "1b") / f"{arch}-onnx-fp16"
    start = time.perf_counter()
    if not onnx_dir.exists():
        export_onnx(hf_dir, onnx_dir, dtype="float16", progress=False)
    exported = time.perf_counter() - start
    provider = "cuda" if args.device.startswith("cuda") else "cpu"
    ort = OrtEngine(onnx_dir, provider=provider, io_binding=True)
    torch_fp16 = TorchEngine(hf_dir, device=args.device, dtype="float16")
    prompts = prompts_for(50368, args.agree_prompts, args.prompt_tokens, seed=2)
    forced = [M.greedy_tokens(torch_fp16, p, args.agree_tokens) for p in prompts]
    # torch's teacher-forced top-1 on its own greedy tokens are those tokens
    ours = [M.step_engine_top1(ort, p, f) for p, f in zip(prompts, forced, strict=True)]
    rate = M.engine_rate(ort, prompts[0], args.new_tokens)
    res.add(
        section=f"ort-{arch}",
        engine=ort.name,
        provider=ort.provider,
        export_s=exported,
        export_reused=exported < 1.0,
        top1_agreement_vs_torch_fp16=M.agreement(ours, forced),
        batch1_tokens_per_s=rate,
    )


def server_section(res: Results, hf_dir: Path, args: argparse.Namespace) -> None:
    """`foundry-infer serve` on 127.0.0.1: one client at a time, then 32 concurrent clients;
    with ``--server-compile-decode``, once more with ``serve --compile-decode``."""
    server_run(res, hf_dir, args, compile_decode=False)
    if args.server_compile_decode:
        server_run(res, hf_dir, args, compile_decode=True)


def server_run(res: Results, hf_dir: Path, args: argparse.Namespace, compile_decode: bool) -> None:
    import httpx
    from serve_process import serving

    context = "256" if args.tiny else "512"
    flags = ["--device", args.device, "--max-batch-size", "64", "--max-model-len", context]
    flags += ["--dtype", "float32" if args.tiny else "bfloat16", "--max-queue", "256"]
    flags += ["--engine", "static"] + (["--compile-decode"] if compile_decode else [])
    body = {"prompt": "def main(", "max_tokens": args.server_tokens, "temperature": 0}
    body |= {"ignore_eos": True, "model": hf_dir.name}
    # serve captures every decode graph before it answers; compiled, each shape compiles first
    with serving(str(hf_dir), flags, timeout=600 if compile_decode else 300) as url:
        client = httpx.Client(base_url=url, timeout=120)
        statuses: list[int] = []

        def ask(_: int) -> int:
            r = client.post("/v1/completions", json=body)
            statuses.append(r.status_code)
            return r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0

        ask(0)  # warm-up (captures graphs)
        rates = {}
        for clients, requests in ((1, args.server_requests), (32, 2 * 32)):
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                tokens = sum(pool.map(ask, range(requests)))
            rates[clients] = tokens / (time.perf_counter() - start)
        health = client.get("/health").json()
    res.add(
        section="server-compiled" if compile_decode else "server",
        backend=health.get("backend"),
        one_client_tokens_per_s=rates[1],
        clients_32_tokens_per_s=rates[32],
        ratio=rates[32] / rates[1],
        status_5xx=sum(s >= 500 for s in statuses),
        non_200=sum(s != 200 for s in statuses),
        largest_batch=health.get("largest_batch"),
    )


def _device_name(args: argparse.Namespace) -> str:
    import torch

    if args.device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(args.device))
    return "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument("--work-dir", default="/tmp/foundry-infer-gpu-bench", help="model cache")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny fp32 models (a CPU smoke run)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128, help="batch-1 decode tokens")
    p.add_argument("--bench-tokens", type=int, default=32, help="tokens per batch-size row")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--agree-prompts", type=int, default=10)
    p.add_argument("--agree-tokens", type=int, default=64)
    p.add_argument("--server-tokens", type=int, default=64)
    p.add_argument("--server-requests", type=int, default=6, help="one-at-a-time requests")
    p.add_argument(
        "--server-compile-decode",
        action="store_true",
        help="also load-test `serve --compile-decode` (a second server row)",
    )
    p.add_argument(
        "--compiled-baseline", default="mpt,llama", help="archs given the compile baseline"
    )
    p.add_argument("--peak-bandwidth", type=float, default=None, help="bytes/s (default: by card)")
    p.add_argument("--sections", default="batch1,batch-sizes,agreement,ort,server")
    p.add_argument(
        "--budget-s", type=float, default=300, help="skip sections that would end after this"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    res = Results(Path(args.out_dir), args.budget_s)
    dirs = M.build_models(Path(args.work_dir), args.tiny, args.device)
    sections = args.sections.split(",")
    plan = [  # the goals first, so a spent --budget-s drops the extras; ~seconds each
        ("batch1", "mpt", 0 if args.tiny else 120),
        ("agreement", "mpt", 0),
        ("server", "mpt", 0),
        ("batch-sizes", "mpt", 0),
        ("ort", "mpt", 0 if args.tiny else 120),
        ("batch1", "llama", 0 if args.tiny else 90),
        ("agreement", "llama", 0),
    ]
    runs = {
        "batch1": batch1_section,
        "agreement": agreement_section,
        "batch-sizes": batch_sizes_section,
        "ort": ort_section,
        "server": lambda res, arch, hf_dir, args: server_section(res, hf_dir, args),
    }
    failures = 0
    for name, arch, need_s in plan:
        if name in sections and res.in_time(f"{name}-{arch}", need_s):
            try:
                runs[name](res, arch, dirs[arch], args)
            except Exception as exc:  # one GPU call: record the failure, go on to the next section
                import traceback

                traceback.print_exc()
                res.add(section=f"{name}-{arch}", failed=f"{type(exc).__name__}: {exc}"[:300])
                failures += 1
            _free(args)
    header = {
        "device_name": _device_name(args),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
    }
    res.add(section="run", **header, total_s=time.monotonic() - started)
    res.write_table(header)
    print(res.md.read_text())
    return 1 if failures else 0


def _free(args: argparse.Namespace) -> None:
    import gc

    gc.collect()
    if args.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
