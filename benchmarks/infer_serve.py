"""Serving throughput: 8 concurrent clients vs the same 8 requests one at a time, over HTTP.

A ``foundry-infer`` server (ONNX Runtime fp32 back end by default, CPU) runs on 127.0.0.1 in
this process; clients use the official ``openai`` package. Each request asks for --max-tokens
greedy tokens from a different prompt. The baseline is the same server answering the requests one
after another (so no batching can happen); the ratio of aggregate completion tokens/s is printed.
Goal: >= 3x.

    uv run python benchmarks/infer_serve.py
    uv run python benchmarks/infer_serve.py --backend torch
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from infer_common import add_common_args, build_model, set_threads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, backend: str, clients: int):
    import uvicorn
    from foundry_infer import load_engine, load_tokenizer, read_generation_defaults
    from foundry_infer.server import InferenceService, ServerSettings, create_app

    engine = load_engine(model_dir, backend, provider="cpu")
    tokenizer = load_tokenizer(model_dir)
    settings = ServerSettings(model_name="bench", max_batch_size=clients)
    service = InferenceService(
        engine, tokenizer, read_generation_defaults(model_dir, tokenizer), settings
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, service, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--backend", choices=["onnx", "onnx-int8", "torch"], default="onnx")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    set_threads(args.threads)
    import openai

    hf_dir, onnx_dir, int8_dir = build_model(args.arch, args.work_dir)
    model_dir = {"onnx": onnx_dir, "onnx-int8": int8_dir, "torch": hf_dir}[args.backend]
    backend = "torch" if args.backend == "torch" else "onnx"
    server, thread, service, url = start_server(model_dir, backend, args.clients)
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    words = ["model", "cache", "export", "server", "batch", "token", "graph", "stream", "queue"]
    prompts = [
        f"The {words[i % 9]} of step {i} in the {words[(i * 5) % 9]} is"
        for i in range(args.clients)
    ]

    def ask(prompt: str) -> int:
        r = client.completions.create(
            model="bench", prompt=prompt, max_tokens=args.max_tokens, temperature=0
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    ask(prompts[0])  # warm-up
    start = time.perf_counter()
    sequential_tokens = sum(ask(p) for p in prompts)
    sequential = sequential_tokens / (time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        concurrent_tokens = sum(pool.map(ask, prompts))
    concurrent = concurrent_tokens / (time.perf_counter() - start)
    stats = service.scheduler.stats()
    server.should_exit = True
    thread.join(60)
    print(
        f"{args.arch}, backend {service.engine.name}, {args.clients} requests x {args.max_tokens} tokens, CPU"
    )
    print(f"one at a time:        {sequential:8.1f} tokens/s ({sequential_tokens} tokens)")
    print(
        f"{args.clients} concurrent clients: {concurrent:8.1f} tokens/s ({concurrent_tokens} tokens)"
        f"; largest batch {stats['largest_batch']}"
    )
    print(f"ratio: {concurrent / sequential:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
