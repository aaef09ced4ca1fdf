"""A bounded load test of ``foundry-infer serve`` on loopback.

The real command (``python -m foundry_infer serve``, started without --host) serves the tiny
random Llama of conftest.py with the torch back end. 1,000 requests come from 8 concurrent
clients in a fixed mix: non-streaming completions and chats, streamed completions read at full
speed, streamed chats read slowly (a pause after every event), and streams dropped after their
first event (the client disconnects mid-answer). Checked:
- the server listens on 127.0.0.1 only;
- every request that was accepted (200) got a complete answer: a JSON body with a finish_reason
  for every choice, or a stream that ends in ``data: [DONE]`` (or carries an error event); every
  rejected one got a JSON error with a message (429 when the queue is full);
- the server keeps answering during and after the load, and once the load is over no sequence
  is left running (the dropped streams were cancelled, not leaked);
- its resident memory after 1,000 requests is within 10% of that after the first 100.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow

NAME = "tiny"
TOTAL, WARMUP, CLIENTS = 1000, 100, 8
KINDS = ("completion", "chat", "stream", "slow_stream", "disconnect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_llama_dir: Path):
    port = _free_port()
    env = {**os.environ, "FOUNDRY_INFER_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundry_infer", "serve", str(tiny_llama_dir), "--port", str(port),
         "--backend", "torch", "--model-name", NAME, "--max-new-tokens", "16",
         "--max-batch-size", "8", "--max-queue", "64", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _body(kind: str, i: int) -> dict:
    if kind in ("chat", "slow_stream"):
        return {"model": NAME, "messages": [{"role": "user", "content": f"request {i}: hello"}],
                "max_tokens": 8 + i % 8, "temperature": 0.0 if i % 2 else 0.8, "seed": i,
                "stream": kind == "slow_stream"}  # fmt: skip
    return {"model": NAME, "prompt": f"def function_{i}(", "max_tokens": 4 + i % 12,
            "temperature": 0.0 if i % 3 else 1.0, "seed": i, "n": 1 + i % 2,
            "stream": kind in ("stream", "disconnect")}  # fmt: skip


def _events(lines) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def _one(client: httpx.Client, i: int) -> str:
    """Send request ``i``; return its outcome, raising AssertionError if it was not complete."""
    kind = KINDS[i % len(KINDS)]
    body = _body(kind, i)
    route = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    if not body["stream"]:
        r = client.post(route, json=body)
        if r.status_code != 200:
            assert r.json()["error"]["message"], r.text
            return f"{kind}:{r.status_code}"
        choices = r.json()["choices"]
        assert len(choices) == body.get("n", 1)
        assert all(c["finish_reason"] in ("length", "stop") for c in choices), r.text
        return f"{kind}:200"
    with client.stream("POST", route, json=body) as r:
        if r.status_code != 200:
            r.read()
            assert r.json()["error"]["message"], r.text
            return f"{kind}:{r.status_code}"
        if kind == "disconnect":
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break
            return f"{kind}:dropped"  # leaving the block closes the connection mid-stream
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if kind == "slow_stream" and line.startswith("data: "):
                time.sleep(0.01)
    events = _events(lines)
    if any('"error"' in e for e in events):
        return f"{kind}:error-event"
    assert events and events[-1] == "[DONE]", lines[-5:]
    finished = [json.loads(e)["choices"] for e in events[:-1]]
    assert any(c.get("finish_reason") for chunk in finished for c in chunk), lines[-5:]
    return f"{kind}:200"


def _idle_health(client: httpx.Client) -> dict:
    """/health once the scheduler has no sequence left: dropped streams were cancelled."""
    deadline = time.monotonic() + 30
    while True:
        health = client.get("/health").json()
        if health["running"] == 0 and health["waiting"] == 0:
            return health
        assert time.monotonic() < deadline, f"sequences left running after the load: {health}"
        time.sleep(0.1)


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_load_with_streams_slow_readers_and_disconnects(served) -> None:
    proc, url = served
    listening = [
        c.laddr for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening

    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    with (
        httpx.Client(base_url=url, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(CLIENTS) as pool,
    ):
        outcomes.update(pool.map(lambda i: _one(client, i), range(WARMUP)))
        rss_100 = _rss(proc.pid)
        outcomes.update(pool.map(lambda i: _one(client, i), range(WARMUP, TOTAL)))
        rss_1000 = _rss(proc.pid)
        health = _idle_health(client)
        assert health["status"] == "ok" and health["largest_batch"] >= 2, health
        last = client.post("/v1/completions", json=_body("completion", 1) | {"stream": False})
        assert last.status_code == 200
    assert proc.poll() is None, "the server died under load"
    assert sum(outcomes.values()) == TOTAL
    answered = sum(n for k, n in outcomes.items() if k.endswith(":200"))
    assert answered > TOTAL // 2, outcomes
    assert all(k.split(":")[1] in ("200", "dropped", "429", "error-event") for k in outcomes), (
        outcomes
    )
    print(f"outcomes {dict(outcomes)}; RSS after {WARMUP}: {rss_100 / 2**20:.1f} MiB, "
          f"after {TOTAL}: {rss_1000 / 2**20:.1f} MiB")  # fmt: skip
    assert rss_1000 <= 1.10 * rss_100, (rss_100, rss_1000)
