"""The tiny real job of one package, run by `isolated_install.py` inside that package's own
virtual environment (made from its wheel with plain pip). Only that environment's libraries are
used; nothing from the source tree is importable (this file is run by path from outside it).

    <venv>/bin/python scripts/isolated_smoke.py foundry-data WORK_DIR --eval-data DIR

Each job imports the package's public API (every name in `__all__`), checks that the module
comes from the environment's site-packages, runs the console script's `--help`, then does a
small piece of real work through the command line and checks its output. Exit 0 on success;
on failure, a message naming the step and the output of the failing command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
EOS = "<|endoftext|>"


class SmokeFailure(Exception):
    """A step of the job went wrong; the message says which and shows its output."""


def step(title: str) -> None:
    print(f"[smoke {time.strftime('%H:%M:%S')}] {title}", flush=True)


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 900) -> str:
    """Run a command of this environment; return its stdout, fail with its output otherwise."""
    cmd = [str(a) for a in args]
    step("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SmokeFailure(
            f"`{' '.join(cmd)}` exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def import_public_api(module_name: str) -> object:
    """Import the package and every name in its `__all__`, from site-packages only."""
    module = importlib.import_module(module_name)
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    origin = Path(str(module.__file__)).resolve()
    check(site in origin.parents, f"{module_name} was imported from {origin}, not from {site}")
    exported = getattr(module, "__all__", None)
    check(bool(exported), f"{module_name} has no __all__")
    missing = [name for name in exported if not hasattr(module, name)]
    check(not missing, f"{module_name}.__all__ names {missing}, which do not import")
    version = getattr(module, "__version__", None)
    from importlib.metadata import version as dist_version

    expected = dist_version(module_name.replace("_", "-"))
    check(version == expected, f"{module_name}.__version__ is {version!r}, wheel says {expected}")
    step(f"imported {module_name} {version}: {len(exported)} public names")
    return module


def console_help(script: str) -> None:
    out = run(BIN / script, "--help")
    check("usage:" in out, f"`{script} --help` printed no usage line:\n{out}")


def corpus_text(module_name: str) -> str:
    """A few tens of KB of text the project wrote: the installed package's own source."""
    package_dir = Path(str(importlib.import_module(module_name).__file__)).parent
    text = "\n".join(p.read_text() for p in sorted(package_dir.rglob("*.py")))
    check(len(text) > 8000, f"only {len(text)} characters of source in {package_dir}")
    return text


def write_corpus_jsonl(text: str, path: Path, chunk: int = 600) -> Path:
    with path.open("w") as f:
        for start in range(0, len(text), chunk):
            f.write(json.dumps({"text": text[start : start + chunk]}) + "\n")
    return path


def build_tiny_model_dir(text: str, out: Path) -> Path:
    """A 2-layer Llama and a byte-level BPE trained on `text`, saved as an HF directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([text], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id
    ).save_pretrained(out)
    step(f"built a tiny Llama ({sum(p.numel() for p in model.parameters())} parameters) in {out}")
    return out


def make_tokenizer_and_mds(work: Path, text: str, seq_len: int) -> tuple[Path, Path]:
    """foundry-data's own commands: train a tokenizer, convert text to pretraining MDS."""
    corpus = write_corpus_jsonl(text, work / "corpus.jsonl")
    tokenizer = work / "tokenizer"
    run(BIN / "foundry-data", "train-tokenizer", corpus, tokenizer, "--vocab-size", "512",
        "--no-progress")  # fmt: skip
    check((tokenizer / "tokenizer.json").is_file(), f"train-tokenizer wrote no {tokenizer}")
    mds = work / "mds"
    run(BIN / "foundry-data", "convert", corpus, mds, "--tokenizer", tokenizer,
        "--concat-tokens", str(seq_len), "--workers", "1", "--no-progress")  # fmt: skip
    check((mds / "index.json").is_file(), f"convert wrote no {mds / 'index.json'}")
    return tokenizer, mds


# ----------------------------------------------------------------------------------------------
# One job per package


def smoke_data(work: Path, eval_data: Path) -> None:
    foundry_data = import_public_api("foundry_data")
    console_help("foundry-data")
    seq_len = 64
    _, mds = make_tokenizer_and_mds(work, corpus_text("foundry_data"), seq_len)
    out = run(BIN / "foundry-data", "inspect", mds)
    check(str(seq_len) in out, f"`foundry-data inspect` does not show the sequence length:\n{out}")
    manifest = foundry_data.read_manifest(str(mds))  # type: ignore[attr-defined]
    check(manifest.seq_len == seq_len and manifest.num_samples > 0, f"bad manifest {manifest}")
    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(mds), shuffle=False, batch_size=1)
    sample = dataset[0]
    tokens = sample["tokens"]
    check(
        tokens.dtype.name == "int32" and tokens.shape == (seq_len,),
        f"sample 0 has tokens {tokens.dtype} {tokens.shape}, expected int32 ({seq_len},)",
    )
    step(f"read {len(dataset)} samples of {seq_len} int32 tokens back with StreamingDataset")


def smoke_models(work: Path, eval_data: Path) -> None:
    import torch

    fm = import_public_api("foundry_models")
    config = fm.preset_config("debug")  # type: ignore[attr-defined]
    model = fm.MPTForCausalLM(config).eval()  # type: ignore[attr-defined]
    ids = torch.randint(0, config.vocab_size, (2, 16))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    check(
        tuple(out.logits.shape) == (2, 16, config.vocab_size),
        f"logits shape {tuple(out.logits.shape)}",
    )
    check(bool(torch.isfinite(out.loss)), f"loss is {out.loss}")
    from transformers import AutoModelForCausalLM

    model.save_pretrained(work / "debug-mpt")
    reloaded = AutoModelForCausalLM.from_pretrained(work / "debug-mpt")
    check(type(reloaded).__name__ == type(model).__name__, f"reloaded as {type(reloaded)}")
    step(f"debug preset forward: loss {out.loss.item():.3f}, saved and reloaded via Auto classes")


def smoke_eval(work: Path, eval_data: Path) -> None:
    import_public_api("foundry_eval")
    console_help("foundry-eval")
    model_dir = build_tiny_model_dir(corpus_text("foundry_eval"), work / "model")
    results = work / "results.json"
    run(BIN / "foundry-eval", model_dir, "--tasks", "piqa,lambada_openai", "--data-root",
        eval_data, "--limit", "8", "--batch-size", "4", "--device", "cpu", "--json", results,
        "--no-progress")  # fmt: skip
    tasks = json.loads(results.read_text()).get("tasks", {})
    scored = {t["label"]: t for t in tasks.values() if isinstance(t, dict) and "label" in t}
    check({"piqa", "lambada_openai"} <= set(scored), f"results lack the tasks: {sorted(tasks)}")
    for label in ("piqa", "lambada_openai"):
        task = scored[label]
        acc = task["metrics"].get("acc")
        check(task.get("num_examples") == 8, f"{label} scored {task.get('num_examples')} of 8")
        check(isinstance(acc, float) and 0.0 <= acc <= 1.0, f"{label} accuracy is {acc!r}")
    accs = {label: scored[label]["metrics"]["acc"] for label in ("piqa", "lambada_openai")}
    step(f"scored 8 examples each: accuracy {accs}")


def smoke_infer(work: Path, eval_data: Path) -> None:
    import_public_api("foundry_infer")
    console_help("foundry-infer")
    model_dir = build_tiny_model_dir(corpus_text("foundry_infer"), work / "model")
    out = run(BIN / "foundry-infer", "generate", model_dir, "--prompt", "def main",
              "--max-new-tokens", "8", "--temperature", "0", "--backend", "torch")  # fmt: skip
    check(out.strip() != "", "generate printed nothing")
    onnx_dir = work / "model-onnx"
    run(BIN / "foundry-infer", "export-onnx", model_dir, onnx_dir)
    check(any(onnx_dir.glob("*.onnx")), f"export-onnx wrote no .onnx file in {onnx_dir}")
    onnx_out = run(BIN / "foundry-infer", "generate", onnx_dir, "--prompt", "def main",
                   "--max-new-tokens", "8", "--temperature", "0")  # fmt: skip
    check(onnx_out.strip() != "", "generate with the ONNX model printed nothing")
    step(f"generated with torch ({out.strip()[:60]!r}) and ONNX ({onnx_out.strip()[:60]!r})")


def smoke_train(work: Path, eval_data: Path) -> None:
    foundry_train = import_public_api("foundry_train")
    console_help("foundry-train")
    tokenizer, mds = make_tokenizer_and_mds(work, corpus_text("foundry_train"), 128)
    yamls = Path(foundry_train.shipped_yamls_dir())  # type: ignore[attr-defined]
    config = yamls / "debug-cpu.yaml"
    check(config.is_file(), f"the wheel ships no {config}")
    overrides = [f"tokenizer.name={tokenizer}", f"train_loader.dataset.local={mds}",
                 f"save_folder={work / 'run'}", "max_duration=4ba", "save_interval=4ba",
                 "global_train_batch_size=4", "device_train_microbatch_size=4",
                 "autoresume=false", "callbacks.plot=false"]  # fmt: skip
    run(BIN / "foundry-train", "validate", config, *overrides)
    run(BIN / "foundry-train", config, *overrides, cwd=work)
    checkpoints = sorted((work / "run").rglob("*.pt"))
    check(bool(checkpoints), f"training wrote no checkpoint under {work / 'run'}")
    step(f"trained 4 CPU steps; checkpoints: {[c.name for c in checkpoints]}")
    # foundry-train pulls in foundry-models and foundry-eval under composer's and streaming's
    # pins (older torch and transformers 4.x with plain pip): run their jobs here too.
    for name, job in (("models", smoke_models), ("eval", smoke_eval)):
        (work / name).mkdir()
        job(work / name, eval_data)


JOBS: dict[str, Callable[[Path, Path], None]] = {
    "foundry-data": smoke_data,
    "foundry-models": smoke_models,
    "foundry-eval": smoke_eval,
    "foundry-infer": smoke_infer,
    "foundry-train": smoke_train,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=sorted(JOBS))
    parser.add_argument("work", type=Path, help="an empty scratch directory")
    parser.add_argument("--eval-data", type=Path, required=True, help="../shared/eval-data")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)
    try:
        JOBS[args.package](args.work.resolve(), args.eval_data.resolve())
    except SmokeFailure as err:
        print(f"error: {args.package} smoke job failed: {err}", file=sys.stderr)
        return 1
    step(f"{args.package}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
