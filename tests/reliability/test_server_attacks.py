"""The HTTP server against hostile and generated requests, over real HTTP on 127.0.0.1.

- schemathesis generates requests for every operation of the server's own /openapi.json
  (valid and invalid bodies, odd strings, boundary numbers): never a 5xx, and every 4xx is a JSON
  error with a message;
- with an API key set, every /v1 route (streaming included) answers 401 without it or with a
  wrong one;
- no endpoint reads a file named in a request: paths to a planted secret and to a planted model
  directory go into every string field, and a Python audit hook watches every file the process
  opens while the requests are served;
- ``foundry-infer serve`` binds the loopback address unless --host says otherwise.

The server is foundry-infer's own app (create_app over InferenceService) in a uvicorn thread,
with the torch back end and the tiny random Llama of conftest.py.
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

KEY = "reliability-key"
NAME = "tiny"
AUTH = {"Authorization": f"Bearer {KEY}"}


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path) -> Iterator[ServerThread]:
    import torch
    from foundry_infer.engines import load_engine
    from foundry_infer.model_dir import load_tokenizer, read_generation_defaults
    from foundry_infer.server import InferenceService, ServerSettings, create_app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread is faster here
    tokenizer = load_tokenizer(tiny_llama_dir)
    settings_ = ServerSettings(
        model_name=NAME, api_key=KEY, max_prompt_tokens=64, max_new_tokens=16,
        default_chat_max_tokens=8, max_batch_size=8, max_queue=32,
    )  # fmt: skip
    service = InferenceService(
        load_engine(tiny_llama_dir, "torch"),
        tokenizer,
        read_generation_defaults(tiny_llama_dir, tokenizer),
        settings_,
    )
    running = ServerThread(create_app(service))
    try:
        yield running
    finally:
        running.stop()
        torch.set_num_threads(threads)


EXAMPLES_PER_OPERATION_AND_MODE = 20


def _served_model(case: Any) -> Any:
    """Name the served model in a generated body (a random name is a plain 404)."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = NAME
    if case.path_parameters and "model_id" in case.path_parameters:
        case.path_parameters["model_id"] = NAME
    return case


def test_generated_requests_never_get_a_server_error(server: ServerThread) -> None:
    # (schemathesis' pytest plugin does not run under pytest 9 yet, so its strategies are driven
    # by Hypothesis directly: valid and invalid requests for every operation of the document)
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions"}
    seen: dict[int, int] = {}
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if mode == schemathesis.GenerationMode.POSITIVE:
                strategy = strategy.map(_served_model)  # valid requests reach generation

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=server.url, headers=AUTH, timeout=60)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                where = (case.method, case.path, case.path_parameters, case.body)
                assert response.status_code < 500, (where, response.text[:500])
                if 400 <= response.status_code < 500:
                    assert response.json()["error"]["message"], (where, response.text[:500])

            try:
                check()
            except Unsatisfiable:  # no invalid request exists (e.g. GET /health takes no input)
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.path
    print("status codes of generated requests:", seen)
    assert seen.get(200, 0) > 10 and sum(v for k, v in seen.items() if k >= 400) > 10, seen


def test_every_v1_route_needs_the_api_key(server: ServerThread) -> None:
    completion = {"model": NAME, "prompt": "def ", "max_tokens": 2}
    chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    calls = [
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{NAME}", None),
        ("POST", "/v1/completions", completion),
        ("POST", "/v1/completions", {**completion, "stream": True}),
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.json()["error"]["type"] == "authentication_error"
            assert http.request(method, path, json=body, headers=AUTH).status_code == 200


@pytest.fixture
def bait(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """A folder with a secret file and a complete model directory that nothing may read."""
    root = tmp_path / "bait"
    root.mkdir()
    (root / "secret.txt").write_text("TOP-SECRET-CONTENT")
    shutil.copytree(tiny_llama_dir, root / "other-model")
    return root


def test_no_endpoint_reads_a_file_named_in_a_request(server: ServerThread, bait: Path) -> None:
    opened: list[str] = []
    watching = threading.Event()
    root = str(bait)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if watching.is_set() and event in ("open", "os.listdir", "os.scandir"):
            target = args[0] if args else None
            if isinstance(target, (str, bytes, Path)) and root in str(target):
                opened.append(f"{event} {target}")

    sys.addaudithook(hook)  # cannot be removed; it is idle once `watching` is cleared
    paths = [str(bait / "secret.txt"), str(bait / "other-model"), f"file://{bait}/secret.txt",
             f"{bait}/../bait/secret.txt", str(bait / "other-model" / "config.json")]  # fmt: skip
    watching.set()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
            for path in paths:
                bodies = [
                    ("/v1/completions", {"model": path, "prompt": "x", "max_tokens": 2}),
                    ("/v1/completions", {"model": NAME, "prompt": path, "max_tokens": 2,
                                         "stop": [path], "user": path, "echo": True}),
                    ("/v1/chat/completions", {"model": NAME, "max_tokens": 2, "user": path,
                                              "messages": [{"role": "user", "content": path,
                                                            "name": path}]}),
                    ("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2,
                                         "tokenizer": path, "model_path": path, "file": path}),
                ]  # fmt: skip
                for route, body in bodies:
                    r = http.post(route, json=body)
                    assert r.status_code in (200, 400, 404), (route, body, r.text[:300])
                    assert "TOP-SECRET" not in r.text
                r = http.get(f"/v1/models/{path}")
                assert r.status_code == 404 and "TOP-SECRET" not in r.text
    finally:
        watching.clear()
    assert not opened, f"the server touched files named in requests: {opened}"


def test_serve_binds_loopback_unless_told_otherwise() -> None:
    from foundry_infer.cli import build_parser

    args = build_parser().parse_args(["serve", "some-model"])
    assert args.host == "127.0.0.1"
    # (the load test starts the real command without --host and checks the bound socket)
