"""lm-eval's ``local-completions`` model against a real ``foundry-infer serve`` (issue 19).

A 20-example multiple-choice task, written here from foundry-infer's own source, is scored by
lm-eval over HTTP (``echo: true, logprobs: 1, max_tokens: 1`` for every context + choice) and by
foundry-eval in process on the same fp32 model: the same choice on every example and
log-likelihoods within 1e-3. No network: lm-eval reads the tokenizer from the model folder.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

EXAMPLES = 20
TASK = "fi_source_mc"
YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query.strip()}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""


def _write_task(folder, corpus: str) -> None:
    """Each query is a line of source code's first half; the choices are its own second half and
    the second halves of three other lines."""
    lines = sorted({line.strip() for line in corpus.splitlines() if 30 < len(line.strip()) < 70})
    rng = random.Random(0)
    rows = []
    for line in rng.sample(lines, EXAMPLES):
        cut = line.rfind(" ", 0, len(line) // 2 + 4)
        others = [o for o in rng.sample(lines, 6) if o != line][:3]
        choices = [line[cut + 1 :]] + [o[len(o) // 2 :].strip() for o in others]
        gold = rng.randrange(4)
        choices[0], choices[gold] = choices[gold], choices[0]
        rows.append({"query": line[:cut], "choices": choices, "gold": gold})
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{TASK}.yaml").write_text(YAML.format(name=TASK, data=data))


@pytest.fixture(scope="module")
def served_fp32(trained_llama_dir):
    """``foundry-infer serve`` of the HF directory: torch, float32, CPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "foundry_infer", "serve", str(trained_llama_dir), "--port"]
    argv += [str(port), "--backend", "torch", "--dtype", "float32", "--served-model-name", "tiny"]
    env = {**os.environ, "FOUNDRY_INFER_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv + ["--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_lm_eval_local_completions_agrees_with_foundry_eval(
    served_fp32, trained_llama_dir, corpus, tmp_path, monkeypatch
):
    foundry_eval = pytest.importorskip("foundry_eval")
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api] (tenacity)")
    import torch
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _write_task(tmp_path, corpus)
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={
            "model": "tiny",
            "base_url": f"{served_fp32}/v1/completions",
            "tokenizer_backend": "huggingface",
            "tokenizer": str(trained_llama_dir),
            "num_concurrent": 1,
            "max_retries": 1,
        },
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tmp_path)),
        limit=EXAMPLES,
        log_samples=True,
        bootstrap_iters=0,
    )
    theirs = {int(s["doc_id"]): s for s in out["samples"][TASK]}

    model = AutoModelForCausalLM.from_pretrained(trained_llama_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_llama_dir)
    spec = {"label": "mc", "dataset_uri": "mc.jsonl", "icl_task_type": "multiple_choice"}
    spec |= {"num_fewshot": 0, "continuation_delimiter": "\nAnswer: "}
    tasks = foundry_eval.load_tasks([spec], tmp_path)
    ours = foundry_eval.evaluate(model, tokenizer, tasks, batch_size=16, progress=False)
    records = ours.tasks["mc/0-shot"].examples
    assert len(records) == len(theirs) == EXAMPLES
    same, worst = 0, 0.0
    for rec in records:
        lls = [float(r[0]) for r in theirs[rec["index"]]["filtered_resps"]]
        assert np.allclose(rec["logprobs"], lls, atol=1e-3, rtol=0), (rec["logprobs"], lls)
        worst = max(worst, float(np.max(np.abs(np.subtract(rec["logprobs"], lls)))))
        same += rec["pred"]["acc"] == int(np.argmax(lls))
    print(f"same choice on {same}/{EXAMPLES}; largest log-likelihood difference {worst:.2e}")
    assert same == EXAMPLES
