"""ONNX Runtime decode speed vs transformers' generate, on CPU, batch 1, ~125M parameters.

Same prompt (32 random tokens), same number of new tokens (greedy, end-of-sequence ignored).
Baseline: ``model.generate`` of transformers with its KV cache, in the same run. Reported:
end-to-end tokens/s and decode-only tokens/s (after the first token), best of --repeats.
Goals: ONNX Runtime >= 1.5x, ONNX Runtime int8 >= 2.5x the baseline's decode tokens/s.

    uv run python benchmarks/infer_decode.py            # llama-shaped 134M
    uv run python benchmarks/infer_decode.py --arch gpt2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from infer_common import add_common_args, build_model, set_threads


def time_hf_generate(hf_dir, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(total seconds, seconds to the first new token) for transformers' generate."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        clock = Clock()
        start = time.perf_counter()
        model.generate(
            ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=clock, **kwargs
        )
        total = time.perf_counter() - start
    return total, clock.times[1] - start  # times[0] is the prompt being "put"


def time_engine(engine, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    from foundry_infer import SequenceState, generate_tokens

    list(generate_tokens(engine, SequenceState(prompt, 4)))  # warm-up
    start = time.perf_counter()
    first = None
    count = 0
    for _ in generate_tokens(engine, SequenceState(prompt, new_tokens)):
        count += 1
        first = first or time.perf_counter() - start
    assert count == new_tokens
    return time.perf_counter() - start, first or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    hf_dir, onnx_dir, int8_dir = build_model(args.arch, args.work_dir)
    from foundry_infer import OrtEngine, TorchEngine

    prompt = np.random.default_rng(0).integers(1, 4000, args.prompt_tokens).tolist()
    n = args.new_tokens
    runners = {
        "transformers generate (baseline)": lambda: time_hf_generate(hf_dir, prompt, n),
        "foundry torch engine": lambda e=TorchEngine(hf_dir): time_engine(e, prompt, n),
        "onnxruntime fp32": lambda e=OrtEngine(onnx_dir, provider="cpu"): time_engine(e, prompt, n),
        "onnxruntime int8": lambda e=OrtEngine(int8_dir, provider="cpu"): time_engine(e, prompt, n),
    }
    results = {}
    for name, run in runners.items():
        runs = [run() for _ in range(args.repeats)]
        total, first = min(runs)  # best of repeats: the machine is shared
        results[name] = (n / total, (n - 1) / (total - first), first)
    base = results["transformers generate (baseline)"]
    print(
        f"{args.arch}, prompt {args.prompt_tokens}, {n} new tokens, batch 1, CPU, best of {args.repeats}"
    )
    print(f"{'':34}{'tok/s e2e':>10}{'tok/s decode':>14}{'TTFT ms':>9}{'x decode':>10}")
    for name, (e2e, decode, first) in results.items():
        print(f"{name:34}{e2e:>10.1f}{decode:>14.1f}{first * 1e3:>9.1f}{decode / base[1]:>10.2f}")
    print("goals: onnxruntime fp32 >= 1.5x, int8 >= 2.5x (decode tokens/s vs baseline)")


if __name__ == "__main__":
    main()
