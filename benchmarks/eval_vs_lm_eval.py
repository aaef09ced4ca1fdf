"""foundry-eval vs lm-evaluation-harness: examples/s on the same model, tasks and machine.

Both harnesses score the same examples of lambada_openai, piqa, arc_easy and winograd_wsc with
the same model and batch size, at the gauntlet's few-shot counts (``--shots zero`` for 0-shot).
lm-eval reads the exact prompts foundry-eval builds (few-shot examples included), rendered to a
JSONL in a temp dir, through local task YAMLs. The script checks that per-example
predictions are identical (acc, acc_norm, lambada greedy match) and prints both throughputs and
the ratio: for all four tasks in one run of each harness, and per task (each harness run on one
task at a time; ``--no-per-task`` skips these). Runs are interleaved and the best of
``--repeats`` counts; wall and CPU seconds are both shown, with the load average, since a shared
machine's load moves wall time most.

    # CPU, a small Llama trained here on the eval text (no hub access needed)
    uv run python benchmarks/eval_vs_lm_eval.py --data-root ../shared/eval-data

    # one GPU, any HF causal LM directory
    python benchmarks/eval_vs_lm_eval.py --model-dir /path/to/model --device cuda --limit 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# foundry label: (data file, foundry task fields). Few-shot counts follow llm-foundry's gauntlet v0.3.
TASKS = {
    "lambada_openai": (
        "language_understanding/lambada_openai.jsonl",
        {"icl_task_type": "language_modeling"},
    ),
    "piqa": (
        "commonsense_reasoning/piqa.jsonl",
        {"icl_task_type": "multiple_choice", "continuation_delimiter": "\nAnswer: "},
    ),
    "arc_easy": (
        "world_knowledge/arc_easy.jsonl",
        {"icl_task_type": "multiple_choice", "continuation_delimiter": "\nAnswer: "},
    ),
    "winograd": ("language_understanding/winograd_wsc.jsonl", {"icl_task_type": "schema"}),
}
GAUNTLET_SHOTS = {"lambada_openai": 0, "piqa": 0, "arc_easy": 3, "winograd": 3}
# lm-eval reads the prompts foundry-eval renders (few-shot examples included), so both score
# exactly the same text; the YAML only says how to turn a row into requests.
LM_EVAL_BODY = {
    "language_modeling": 'output_type: loglikelihood\ndoc_to_text: "{{context}}"\n'
    'doc_to_target: "{{\' \' + continuation}}"\ntarget_delimiter: ""\nmetric_list:\n  - metric: acc\n',
    "multiple_choice": 'output_type: multiple_choice\ndoc_to_text: "{{context}}"\n'
    'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
    "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
    "schema": 'output_type: multiple_choice\ndoc_to_text: "{{gold}}"\n'
    'doc_to_choice: "{{context_options}}"\ndoc_to_target: "{{continuation}}"\n'
    "metric_list:\n  - metric: acc\n",
}


def foundry_tasks(data_root: Path, shots: dict[str, int]):
    from foundry_eval import load_tasks

    specs = [
        {"label": label, "dataset_uri": rel, "num_fewshot": shots[label], **fields}
        for label, (rel, fields) in TASKS.items()
    ]
    return load_tasks(specs, data_root)


def train_small_model(
    data_root: Path, out: Path, steps: int, hidden: int, layers: int, device: str = "cpu"
) -> None:
    """A Llama with a byte-level BPE tokenizer, trained on the eval text itself (CPU: minutes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = []
    for rel, _ in TASKS.values():
        for i, line in enumerate((data_root / rel).open(encoding="utf-8")):
            if i >= 1500:
                break
            row = json.loads(line)
            texts.append(" ".join(str(v) for v in row.values()))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device)
    ids = [t for text in texts for t in tok(text)["input_ids"] + [tok.eos_token_id]]
    data = torch.tensor(ids, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        starts = torch.randint(0, len(data) - 129, (16,)).tolist()
        x = torch.stack([data[s : s + 128] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  train step {step} loss {loss.item():.3f}", file=sys.stderr)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def run_lm_eval(model_dir: Path, tasks, limit: int, batch_size: int, device: str, tmp: Path):
    import lm_eval
    from foundry_eval.data import read_task_rows
    from foundry_eval.prompts import render_prompts
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ydir = tmp / "lm_eval_tasks"
    ydir.mkdir(parents=True)
    for task in tasks:
        rows = read_task_rows(task.data_path, task.icl_task_type)
        rendered = render_prompts(task, rows, tok, min(limit, len(rows)))
        data = ydir / f"bench_{task.label}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rendered))
        head = (
            f"task: bench_{task.label}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        )
        (ydir / f"bench_{task.label}.yaml").write_text(head + LM_EVAL_BODY[task.icl_task_type])
    lm = HFLM(
        pretrained=str(model_dir),
        backend="causal",
        device=device,
        batch_size=batch_size,
        dtype="float32",
    )
    manager = TaskManager(include_path=str(ydir))
    start, cpu = time.perf_counter(), time.process_time()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[f"bench_{t.label}" for t in tasks],
        task_manager=manager,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    assert out is not None
    return out["samples"], seconds


def run_foundry(model_dir: Path, tasks, limit: int, batch_size: int, device: str, share: bool):
    from foundry_eval import evaluate
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    start, cpu = time.perf_counter(), time.process_time()
    res = evaluate(
        model, tok, tasks, batch_size=batch_size, limit=limit, progress=False, share_prefix=share
    )
    return res, (time.perf_counter() - start, time.process_time() - cpu)


def compare(ours, theirs, tasks) -> list[str]:
    """Differences in per-example predictions (empty when identical)."""
    problems = []
    for task in tasks:
        label = task.label
        recs = ours.tasks[task.name].examples
        samples = {int(s["doc_id"]): s for s in theirs[f"bench_{label}"]}
        for rec in recs:
            s = samples[rec["index"]]
            lls = [float(r[0]) for r in s["filtered_resps"]]
            if label == "lambada_openai":
                if rec["correct"]["acc"] != bool(s["filtered_resps"][0][1]):
                    problems.append(f"{label}#{rec['index']} greedy")
                continue
            if rec["pred"]["acc"] != int(np.argmax(lls)):
                problems.append(f"{label}#{rec['index']} acc")
            if "acc_norm" in rec["pred"]:
                lens = [len(c) for c in s["doc"]["choices"]]
                if rec["pred"]["acc_norm"] != int(np.argmax(np.array(lls) / lens)):
                    problems.append(f"{label}#{rec['index']} acc_norm")
    return problems


Timing = tuple[float, float]  # (wall seconds, CPU seconds)
_NEVER: Timing = (float("inf"), float("inf"))


def _best(a: Timing, b: Timing) -> Timing:
    return (min(a[0], b[0]), min(a[1], b[1]))


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _ratio_line(name: str, n: int, t: Timing, base: Timing) -> str:
    return (
        f"{name:28s}: wall {t[0]:7.2f} s {n / t[0]:7.1f} ex/s ratio {base[0] / t[0]:4.2f}x | "
        f"cpu {t[1]:7.2f} s {n / t[1]:7.1f} ex/s ratio {base[1] / t[1]:4.2f}x"
    )


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[1] / "../shared/eval-data")
    )
    p.add_argument("--model-dir", help="HF causal LM directory (default: train a small Llama here)")
    p.add_argument("--limit", type=int, default=200, help="examples per task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    p.add_argument(
        "--shots",
        choices=["gauntlet", "zero"],
        default="gauntlet",
        help="few-shot counts: the gauntlet's (arc_easy 3, winograd 3) or all 0",
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="timed runs of each harness (best counts)"
    )
    p.add_argument(
        "--no-per-task",
        action="store_true",
        help="skip the one-task-at-a-time runs that give per-task ratios",
    )
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    return p.parse_args()


def main() -> int:
    args = _parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = Path(args.data_root).resolve()
    shots = GAUNTLET_SHOTS if args.shots == "gauntlet" else dict.fromkeys(TASKS, 0)
    tasks = foundry_tasks(data_root, shots)
    bs, dev = args.batch_size, args.device
    per_task_lm = {t.name: _NEVER for t in tasks}
    per_task_ours = {t.name: _NEVER for t in tasks}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model_dir = Path(args.model_dir) if args.model_dir else tmp / "model"
        if not args.model_dir:
            print(
                f"training a {args.layers}-layer d{args.hidden} Llama for {args.train_steps} steps",
                file=sys.stderr,
            )
            train_small_model(data_root, model_dir, args.train_steps, args.hidden, args.layers, dev)
        # Warm-up (imports, kernel selection) on a handful of examples.
        run_foundry(model_dir, tasks, 4, bs, dev, True)
        load_before = _load()
        # Interleaved repeats; the best time of each counts (the CI box is shared and noisy).
        # Wall and CPU seconds; CPU time is less disturbed by other jobs on a shared box.
        t_lm = t_ours = t_full = _NEVER
        for r in range(args.repeats):
            theirs, t = run_lm_eval(model_dir, tasks, args.limit, bs, dev, tmp / f"r{r}")
            t_lm = _best(t_lm, t)
            ours, t = run_foundry(model_dir, tasks, args.limit, bs, dev, True)
            t_ours = _best(t_ours, t)
            ours_full, t = run_foundry(model_dir, tasks, args.limit, bs, dev, False)
            t_full = _best(t_full, t)
            problems += compare(ours, theirs, tasks) + compare(ours_full, theirs, tasks)
            if args.no_per_task:
                continue
            # One task at a time, each harness from scratch, for per-task ratios.
            for task in tasks:
                one_dir = tmp / f"r{r}-{task.label}"
                theirs1, t = run_lm_eval(model_dir, [task], args.limit, bs, dev, one_dir)
                per_task_lm[task.name] = _best(per_task_lm[task.name], t)
                ours1, t = run_foundry(model_dir, [task], args.limit, bs, dev, True)
                per_task_ours[task.name] = _best(per_task_ours[task.name], t)
                problems += compare(ours1, theirs1, [task])
        load_after = _load()
    n = sum(t.num_examples for t in ours.tasks.values())
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} examples={n} "
        f"({args.limit}/task: {', '.join(t.name for t in tasks)})"
    )
    print(f"load average (1/5/15 min): {load_before} before timing, {load_after} after")
    for name, t in ours.tasks.items():
        shared_s, full_s = t.seconds, ours_full.tasks[name].seconds
        print(
            f"  {name:24s} "
            + "  ".join(f"{k}={v:.4f}" for k, v in t.metrics.items())
            + f"   [{shared_s:.2f} s shared, {full_s:.2f} s unshared]"
        )
    if not args.no_per_task:
        print("per task (each harness run on that task alone; foundry-eval with shared prefix):")
        for name, t in ours.tasks.items():
            print("  " + _ratio_line(name, t.num_examples, per_task_ours[name], per_task_lm[name]))
    print("all tasks in one run:")
    print("  " + _ratio_line("lm-eval 0.4 (HFLM)", n, t_lm, t_lm))
    print("  " + _ratio_line("foundry-eval (shared prefix)", n, t_ours, t_lm))
    print("  " + _ratio_line("foundry-eval (no sharing)", n, t_full, t_lm))
    print(
        "per-example predictions identical to lm-eval: "
        + ("yes" if not problems else f"NO ({len(problems)}: {problems[:10]})")
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
