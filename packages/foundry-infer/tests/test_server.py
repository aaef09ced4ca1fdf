"""The OpenAI-compatible server over real HTTP, with the official openai client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn
from foundry_infer import (
    OrtEngine,
    SamplingParams,
    SequenceState,
    generate_tokens,
    read_generation_defaults,
)
from foundry_infer.server import InferenceService, ServerSettings, create_app

KEY = "test-key"
NAME = "tiny-llama"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.port = free_port()
        config = uvicorn.Config(
            create_app(service), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture(scope="session")
def engine(llama_onnx_dir):
    return OrtEngine(llama_onnx_dir, provider="cpu")


def _service(engine, tokenizer, onnx_dir, **limits) -> InferenceService:
    settings = ServerSettings(model_name=NAME, api_key=KEY, **limits)
    return InferenceService(
        engine, tokenizer, read_generation_defaults(onnx_dir, tokenizer), settings
    )


@pytest.fixture(scope="session")
def server(engine, tokenizer, llama_onnx_dir):
    running = ServerThread(
        _service(engine, tokenizer, llama_onnx_dir, max_prompt_tokens=128, max_new_tokens=96)
    )
    yield running
    running.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def _local_greedy(engine, tokenizer, ids: list[int], n: int) -> str:
    """What the server should answer at temperature 0, computed without it."""
    eos = frozenset({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")})
    seq = SequenceState(ids, n, eos_token_ids=eos)
    return tokenizer.decode(list(generate_tokens(engine, seq)), skip_special_tokens=True)


def test_completion_matches_local_greedy_and_stream(client, engine, tokenizer):
    prompt = "def render_chat("
    resp = client.completions.create(model=NAME, prompt=prompt, max_tokens=20, temperature=0)
    expected = _local_greedy(engine, tokenizer, tokenizer(prompt).input_ids, 20)
    assert resp.choices[0].text == expected
    assert resp.usage is not None and resp.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    chunks = list(
        client.completions.create(
            model=NAME, prompt=prompt, max_tokens=20, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason in {"length", "stop"}


def test_chat_completion_and_stream(client, engine, tokenizer):
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "class Engine"},
    ]
    resp = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=24, temperature=0
    )
    message = resp.choices[0].message
    assert message.role == "assistant"
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(rendered, add_special_tokens=False).input_ids
    assert message.content == _local_greedy(engine, tokenizer, ids, 24)
    stream = client.chat.completions.create(
        model=NAME,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_sampling_with_seed_is_reproducible_and_n_choices(client):
    kwargs = dict(model=NAME, prompt="import ", max_tokens=12, temperature=1.0, seed=5, n=2)
    first, second = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert len(first.choices) == 2


def test_models_health_and_openapi(client, server):
    assert [m.id for m in client.models.list().data] == [NAME]
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == NAME
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(
        spec["paths"]
    )


def test_concurrent_requests_are_batched_and_exact(client, server):
    prompts = ["def ", "class ", "import ", "from .", "return ", "    if ", "# The ", "raise "]
    sequential = [
        client.completions.create(model=NAME, prompt=p, max_tokens=48, temperature=0)
        .choices[0]
        .text
        for p in prompts
    ]
    barrier = threading.Barrier(len(prompts))

    def ask(prompt: str) -> str:
        barrier.wait()
        return (
            client.completions.create(model=NAME, prompt=prompt, max_tokens=48, temperature=0)
            .choices[0]
            .text
        )

    with ThreadPoolExecutor(len(prompts)) as pool:
        concurrent = list(pool.map(ask, prompts))
    assert concurrent == sequential
    assert httpx.get(f"{server.url}/health").json()["largest_batch"] >= 2


BAD_COMPLETIONS = [
    ({"model": NAME, "prompt": "x", "max_tokens": "lots"}, 400),
    ({"model": NAME, "prompt": 5}, 400),
    ({"model": NAME, "prompt": "x", "temperature": -1}, 400),
    ({"model": NAME}, 400),
    ({"model": NAME, "prompt": []}, 400),
    ({"model": NAME, "prompt": [99999]}, 400),
    ({"model": NAME, "prompt": "x", "n": 100}, 400),
    ({"model": NAME, "prompt": "x", "logprobs": 50}, 400),
    ({"model": NAME, "prompt": "x", "max_tokens": 10_000}, 400),
    ({"model": NAME, "prompt": "x " * 2000}, 400),
    ({"model": "gpt-4", "prompt": "x"}, 404),
]


def test_bad_requests_get_4xx_json_and_server_keeps_serving(client, server):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
        for body, status in BAD_COMPLETIONS:
            r = http.post("/v1/completions", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["error"]["message"]
        raw = [
            http.post(
                "/v1/completions",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            http.post("/v1/chat/completions", json={"model": NAME, "messages": []}),
            http.post(
                "/v1/chat/completions",
                json={"model": NAME, "messages": [{"role": "robot", "content": "x"}]},
            ),
            http.post("/v1/completions", json={"model": NAME, "prompt": "x" * 5_000_000}),
            http.get("/v1/completions"),
            http.get("/v1/nothing-here"),
        ]
        assert [r.status_code for r in raw] == [400, 400, 400, 413, 405, 404]
        assert all(r.json()["error"]["message"] for r in raw)
        assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="bad", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="at most 128"):
        client.completions.create(model=NAME, prompt="word " * 400, max_tokens=2)
    ok = client.completions.create(model=NAME, prompt="def ", max_tokens=4, temperature=0)
    assert ok.choices[0].finish_reason in {"length", "stop"}


class SlowEngine:
    """The real engine, 20 ms slower per step, so a request is surely still running."""

    def __init__(self, engine) -> None:
        self.inner, self.name, self.layout = engine, engine.name, engine.layout

    def empty_past(self, batch: int):
        return self.inner.empty_past(batch)

    def step(self, *args):
        time.sleep(0.02)
        return self.inner.step(*args)


def test_queue_full_is_429_and_shutdown_is_503(engine, tokenizer, llama_onnx_dir):
    running = ServerThread(
        _service(
            SlowEngine(engine),
            tokenizer,
            llama_onnx_dir,
            max_batch_size=1,
            max_queue=1,
            max_new_tokens=200,
        )
    )
    scheduler = running.service.scheduler
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": NAME, "prompt": "def ", "max_tokens": 40, "temperature": 0}
    try:
        with httpx.Client(base_url=running.url, headers=headers, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as first:
                lines = first.iter_lines()
                next(lines)  # the first request now occupies the only batch slot
                with ThreadPoolExecutor(1) as pool:
                    waiting = pool.submit(http.post, "/v1/completions", json=body)
                    deadline = time.monotonic() + 30
                    while scheduler.waiting < 1:
                        assert time.monotonic() < deadline, "second request never queued"
                        time.sleep(0.005)
                    rejected = http.post("/v1/completions", json=body)
                    assert rejected.status_code == 429
                    assert rejected.json()["error"]["type"] == "rate_limit_error"
                    assert waiting.result().status_code == 200
                assert any(line.startswith("data: [DONE]") for line in lines)
            scheduler.close()
            assert http.post("/v1/completions", json=body).status_code == 503
            assert http.get("/health").status_code == 503
    finally:
        running.stop()


class CountingTokenizer:
    """The real tokenizer, counting how often the server encodes text with it."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_chunked_oversize_body_is_413_before_tokenizing(server, monkeypatch):
    counting = CountingTokenizer(server.service.tokenizer)
    monkeypatch.setattr(server.service, "tokenizer", counting)
    sent = 0

    def body():  # 12 MB of JSON with no Content-Length: httpx sends it chunked
        nonlocal sent
        yield b'{"model": "' + NAME.encode() + b'", "prompt": "'
        for _ in range(192):
            sent += 65536
            yield b"x" * 65536
        yield b'"}'

    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        r = http.post("/v1/completions", content=body())
        assert "content-length" not in r.request.headers
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
        assert counting.calls == 0  # refused before any tokenizing
        ok = http.post("/v1/completions", json={"model": NAME, "prompt": "def ", "max_tokens": 2})
        assert ok.status_code == 200 and counting.calls == 1


def _post(server, body: dict | bytes):
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        if isinstance(body, bytes):
            return http.post("/v1/completions", content=body)
        route = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        return http.post(route, json=body)


@pytest.mark.parametrize(
    "field, value",
    [
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "auto"),
        ("guided_json", {"type": "object"}),
        ("guided_regex", "[0-9]+"),
        ("functions", [{"name": "f"}]),
    ],
)
def test_unsupported_fields_are_refused_naming_the_field(server, field, value):
    for base in (
        {"model": NAME, "prompt": "def ", "max_tokens": 2},
        {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ):
        r = _post(server, {**base, field: value})
        assert r.status_code == 400, (field, r.text)
        error = r.json()["error"]
        assert error["param"] == field and field in error["message"]
    neutral = {"response_format": {"type": "text"}, "tools": [], "tool_choice": "none"}
    if field in neutral:  # the neutral value asks for nothing different: accepted
        r = _post(server, {"model": NAME, "prompt": "def ", "max_tokens": 2, field: neutral[field]})
        assert r.status_code == 200, r.text


def test_invalid_json_and_empty_prompt_have_their_own_codes(server):
    r = _post(server, b'{"model": "tiny-llama", "prompt": "x",, }')
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json" and error["param"] is None
    assert "not valid JSON" in error["message"]
    for prompt in ("", ["def ", ""]):
        r = _post(server, {"model": NAME, "prompt": prompt, "max_tokens": 2})
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "empty_prompt", r.text
        assert error["param"] == "prompt"


def test_sampling_fields_are_honoured_over_http(server, client, engine, tokenizer):
    ids = tokenizer("def render_chat(").input_ids
    eos = tokenizer.eos_token_id
    base = dict(model=NAME, prompt=ids, max_tokens=12, temperature=0)
    plain = client.completions.create(**base).choices[0].text
    first = tokenizer(plain, add_special_tokens=False).input_ids[0]
    banned = client.completions.create(**base, logit_bias={str(first): -100}).choices[0].text
    assert banned != plain and not banned.startswith(tokenizer.decode([first]))

    def usage(**extra):
        resp = client.completions.create(
            **{**base, "max_tokens": 6}, extra_body=extra, logit_bias={str(eos): 100}
        )
        return resp.usage.completion_tokens, resp.choices[0].finish_reason

    assert usage() == (1, "stop")
    assert usage(min_tokens=3) == (4, "stop")
    assert usage(ignore_eos=True) == (6, "length")
    penalised = client.completions.create(**base, extra_body={"repetition_penalty": 1.8})
    seq = SequenceState(
        ids,
        12,
        SamplingParams(repetition_penalty=1.8),
        frozenset({eos, tokenizer.convert_tokens_to_ids("<|end|>")}),
    )
    expected = tokenizer.decode(list(generate_tokens(engine, seq)), skip_special_tokens=True)
    assert penalised.choices[0].text == expected and expected != plain
    for extra, param in [
        ({"logit_bias": {"99999": 5}}, "logit_bias"),
        ({"logit_bias": {"1": 500}}, "logit_bias"),
        ({"logit_bias": {"²": 5}}, "logit_bias"),  # "²".isdigit(), but no int: it was a 500
        ({"min_tokens": 50}, "min_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ]:
        r = _post(server, {**base, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def _wait_for_health(proc, url: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


def test_sigterm_finishes_in_flight_requests_then_exits_0(llama_onnx_dir):
    """The real command: serves over HTTP, then SIGTERM mid-request: it completes, exit 0."""
    port = free_port()
    env = {**os.environ, "FOUNDRY_INFER_API_KEY": "k", "FOUNDRY_INFER_THREADS": "1"}
    argv = [sys.executable, "-m", "foundry_infer", "serve", str(llama_onnx_dir), "--port"]
    argv += [str(port), "--model-name", "m", "--max-batch-size", "1", "--log-level", "warning"]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(proc, url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        assert client.completions.create(model="m", prompt="def ", max_tokens=3).choices
        # 8 choices one at a time, 200 tokens each: seconds of work, surely running at SIGTERM
        body = {"model": "m", "prompt": "def ", "max_tokens": 200, "n": 8, "stream": True}
        body |= {"temperature": 0, "ignore_eos": True}
        headers = {"Authorization": "Bearer k"}
        finished = []
        with httpx.stream(
            "POST", f"{url}/v1/completions", json=body, headers=headers, timeout=120
        ) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest = list(lines)
        for line in rest:
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    if choice["finish_reason"]:
                        finished.append(choice["finish_reason"])
        assert finished == ["length"] * 8 and "data: [DONE]" in rest
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert time.monotonic() - signalled > 0.2  # the request really was still running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def hf_logprobs(trained_llama_dir):
    """Log-softmax of a full forward of the HF model (the reference for served logprobs)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained_llama_dir, dtype=torch.float32).eval()

    def compute(ids: list[int]):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        return torch.log_softmax(logits, dim=-1).numpy()

    return compute


def test_completion_logprobs_with_echo_as_lm_eval_asks(client, tokenizer, hf_logprobs):
    ids = tokenizer("def render_chat(tokenizer, messages):").input_ids
    resp = client.completions.create(
        model=NAME, prompt=[ids], max_tokens=1, temperature=0, echo=True, logprobs=1
    )
    lp = resp.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    assert lp.top_logprobs[0] is None and resp.choices[0].text.startswith(tokenizer.decode(ids))
    reference = hf_logprobs(ids)
    for t in range(1, len(ids)):
        assert abs(lp.token_logprobs[t] - reference[t - 1, ids[t]]) < 1e-4
        (best,) = lp.top_logprobs[t].values()
        assert abs(best - reference[t - 1].max()) < 1e-4
    # the generated (greedy) token is the most likely one
    assert abs(lp.token_logprobs[-1] - reference[-1].max()) < 1e-4
    assert lp.tokens == [tokenizer.decode([t]) for t in ids] + [lp.tokens[-1]]
    # without echo: the generated tokens only; streamed pieces add up to the same
    kwargs = dict(model=NAME, prompt="class Engine", max_tokens=8, temperature=0, logprobs=3)
    whole = client.completions.create(**kwargs).choices[0].logprobs
    assert len(whole.token_logprobs) == 8 and all(len(top) == 3 for top in whole.top_logprobs)
    streamed = [c.choices[0].logprobs for c in client.completions.create(**kwargs, stream=True)]
    joined = [x for part in streamed if part for x in part.token_logprobs]
    assert joined == pytest.approx(whole.token_logprobs)
    # each streamed chunk's text_offset continues where the previous chunk ended (they were 0)
    offsets = [x for part in streamed if part for x in part.text_offset]
    assert offsets == whole.text_offset and offsets[-1] > 0


def test_a_stop_string_on_the_last_allowed_token_finishes_with_stop(client):
    """The stop string completes on token k and max_tokens is k: the reason is "stop" (it was
    "length", streamed or not), and the text ends before the stop string."""
    base = dict(model=NAME, prompt="class Engine", temperature=0)
    tokens = client.completions.create(**base, max_tokens=8, logprobs=0).choices[0].logprobs.tokens
    k = next(
        k
        for k in range(3, len(tokens) + 1)
        if tokens[k - 1].strip() and tokens[k - 1] not in "".join(tokens[: k - 1])
    )
    stop = tokens[k - 1]
    done = client.completions.create(**base, max_tokens=k, stop=[stop]).choices[0]
    assert (done.text, done.finish_reason) == ("".join(tokens[: k - 1]), "stop")
    chunks = list(client.completions.create(**base, max_tokens=k, stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == done.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


def test_each_prompt_gets_its_own_budget_under_the_server_cap(engine, tokenizer, llama_onnx_dir):
    """Without max_tokens, a prompt's budget is the room its own length leaves (not the largest
    of the request's prompts, which ran a long prompt past the model's 256 positions), and never
    above the server's --max-new-tokens (a chat without max_tokens was refused when it was)."""
    running = ServerThread(
        _service(engine, tokenizer, llama_onnx_dir, max_prompt_tokens=250, max_new_tokens=200)
    )
    try:
        short, long = [5], [5] * 200
        body = {
            "model": NAME,
            "prompt": [short, long],
            "max_tokens": None,
            "temperature": 0,
            "ignore_eos": True,
            "logprobs": 0,
        }
        r = _post(running, body)
        assert r.status_code == 200, r.text
        generated = [len(c["logprobs"]["tokens"]) for c in r.json()["choices"]]
        assert generated == [200, 256 - 200]  # the cap; the room the long prompt leaves
        chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "ignore_eos": True}
        r = _post(running, chat)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 200
    finally:
        running.stop()


def test_chat_logprobs_and_top_logprobs(client, server):
    resp = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "class Engine"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 2 and tops[0] >= tops[1] and item.logprob == pytest.approx(tops[0])
        assert item.top_logprobs[0].token == item.token and item.bytes == list(item.token.encode())
    chat = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}
    bad = _post(server, chat)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"


def _metrics(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_tokenize_detokenize_version_and_metrics(server, tokenizer):
    from foundry_infer import __version__
    from foundry_infer.chat import render_chat

    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
        text = "def render_chat(tokenizer, messages):"
        tok = http.post("/tokenize", json={"model": NAME, "prompt": text}).json()
        assert tok["tokens"] == tokenizer(text).input_ids and tok["count"] == len(tok["tokens"])
        assert tok["max_model_len"] == 256
        messages = [{"role": "user", "content": "hi"}]
        assert http.post("/tokenize", json={"messages": messages}).json()["tokens"] == (
            render_chat(tokenizer, messages)
        )
        assert http.post("/detokenize", json={"tokens": tok["tokens"]}).json() == {"prompt": text}
        assert http.post("/detokenize", json={"tokens": [10**6]}).status_code == 400
        assert http.post("/tokenize", json={"prompt": "x", "model": "other"}).status_code == 404
        assert httpx.post(f"{server.url}/tokenize", json={"prompt": "x"}).status_code == 401
        assert httpx.get(f"{server.url}/version").json() == {"version": __version__}

        before = _metrics(server.url)
        body = {"model": NAME, "prompt": "def ", "max_tokens": 5, "temperature": 0}
        usage = http.post("/v1/completions", json=body).json()["usage"]
        http.post("/v1/completions", json={**body, "prompt": ""})  # a 400
        after = _metrics(server.url)
    ok = 'foundry_infer_requests_total{route="/v1/completions",status="200"}'
    bad = 'foundry_infer_requests_total{route="/v1/completions",status="400"}'
    assert after[ok] - before.get(ok, 0) == 1 and after[bad] - before.get(bad, 0) == 1
    grew = {k: after[k] - before.get(k, 0) for k in after}
    assert grew["foundry_infer_prompt_tokens_total"] == usage["prompt_tokens"]
    assert grew["foundry_infer_generation_tokens_total"] == usage["completion_tokens"]
    count = 'foundry_infer_request_duration_seconds_count{route="/v1/completions"}'
    inf = 'foundry_infer_request_duration_seconds_bucket{route="/v1/completions",le="+Inf"}'
    assert grew[count] == 2 and after[inf] == after[count]
    buckets = [v for k, v in after.items() if k.startswith(count.replace("_count", "_bucket")[:-1])]
    assert buckets == sorted(buckets)  # cumulative
    assert {"foundry_infer_queue_waiting", "foundry_infer_queue_running"} <= set(after)
