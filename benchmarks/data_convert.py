"""Benchmark: `foundry-data convert` against llm-foundry 0.22's convert_dataset_json.

What it measures, on the same JSON-lines corpus and the same tokenizer, in the same run:
throughput (tokens/s, input MB/s), wall time and peak memory (the sum of the resident set sizes
of the process and all its children, sampled every 50 ms), plus CPU seconds (user + system of
all its processes), which stay meaningful on a busy machine. Both tools run with their defaults
(64 MiB shards) on the full corpus; llm-foundry also on a quarter with --baseline-both-sizes.
Ours is measured again at two input sizes (a quarter of the corpus and all of it) with 8 MiB
shards, so that both sizes span several shards: the writer holds one shard in memory, so peak
memory is bounded by the shard size and must not grow with the input. It then checks that both
tools stored the same tokens.

On a shared machine the figures move with what else runs, so each row also shows the 1-minute
load average when the run ended (it counts the run's own processes) and "others": the share of
the machine's CPU time that other processes used during the run. `--repeat N` runs the full-size
comparison N times, the two tools interleaved, and takes each tool's fastest run for the ratio.

The corpus is built from text at hand, nothing downloaded: every Python source file of this
interpreter's standard library (code) and every string of at least 200 characters in the eval
data beside the checkout (../shared/eval-data: passages, questions, programs; prose), interleaved,
one JSON line per document, cycled in a fixed order until the corpus reaches --size-mb. The tokenizer is a
byte-level BPE (--vocab-size) that `foundry-data train-tokenizer` trains on the first few MB.

llm-foundry must be installed in a separate environment (it pins torch 2.7 and transformers
4.5x), for example:

    uv venv /tmp/llmf-venv --python 3.11
    uv pip install --python /tmp/llmf-venv/bin/python "llm-foundry==0.22.*" "setuptools<70"

(setuptools<70: llm-foundry 0.22 still imports pkg_resources). Its scripts/data_prep/
convert_dataset_json.py is a thin argparse wrapper around
llmfoundry.command_utils.convert_dataset_json_from_args, which the installed wheel holds; the
benchmark calls that function with the script's arguments.

Run (from the repository root; about 3 minutes on 2 quiet cores, 1.5 more per extra repeat):

    uv run python benchmarks/data_convert.py --llm-foundry-python /tmp/llmf-venv/bin/python
    uv run python benchmarks/data_convert.py --repeat 3   # on a busy machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdlib_text import stdlib_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL_DATA = ROOT.parent / "shared" / "eval-data"

LLM_FOUNDRY_CALL = """
import sys
from llmfoundry.command_utils import convert_dataset_json_from_args
convert_dataset_json_from_args(
    path=sys.argv[1], out_root=sys.argv[2], compression="zstd", concat_tokens=int(sys.argv[3]),
    split="train", tokenizer=sys.argv[4], bos_text="", eos_text=sys.argv[5], no_wrap=False,
    num_workers=None,
)
"""


@dataclass
class Run:
    tool: str
    input_bytes: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    tokens: int
    samples: int
    load: float = 0.0  # 1-minute load average when the run ended (counts this run too)
    others: float | None = None  # share of the machine's CPU time other processes used meanwhile

    def row(self) -> str:
        return (
            f"{self.tool:<22} {self.input_bytes / 1e6:>8.1f} {self.seconds:>8.1f} "
            f"{self.tokens / self.seconds / 1e6:>10.3f} {self.input_bytes / self.seconds / 1e6:>8.2f} "
            f"{self.peak_rss / 2**20:>10.0f} {self.samples:>9,} {self.cpu_seconds:>8.1f} "
            f"{self.tokens / self.cpu_seconds / 1e6:>12.3f} {self.load:>5.1f} "
            f"{'n/a' if self.others is None else f'{self.others:.0%}':>7}"
        )


HEADER = (
    f"{'tool':<22} {'input MB':>8} {'seconds':>8} {'Mtokens/s':>10} {'MB/s':>8} "
    f"{'peak MiB':>10} {'samples':>9} {'CPU s':>8} {'Mtokens/CPUs':>12} {'load':>5} {'others':>7}"
)


def corpus_documents() -> list[str]:
    """Code and prose documents, interleaved (so any prefix of the corpus holds both)."""
    code = list(stdlib_sources())
    prose: list[str] = []
    for path in sorted(EVAL_DATA.rglob("*.jsonl")) if EVAL_DATA.is_dir() else []:
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                prose.extend(v for v in record.values() if isinstance(v, str) and len(v) >= 200)
    docs: list[str] = []
    for i in range(max(len(code), len(prose))):
        docs += code[i : i + 1] + prose[i : i + 1]
    return docs


def build_corpus(path: Path, size_mb: float) -> tuple[int, int]:
    """Write documents cyclically until ``size_mb``; returns (bytes, documents)."""
    docs = corpus_documents()
    target = int(size_mb * 1e6)
    written = count = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for doc in docs:
                line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                count += 1
                if written >= target:
                    break
    return written, count


def prefix_corpus(src: Path, dst: Path, fraction: float) -> int:
    limit = int(src.stat().st_size * fraction)
    written = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for line in fin:
            if written >= limit:
                break
            fout.write(line)
            written += len(line)
    return written


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def others_share(before: tuple[int, int] | None, own_cpu: float) -> float | None:
    """Share of the machine's CPU time since ``before`` that processes other than the measured
    one used: how contended the run was."""
    after = machine_cpu_ticks()
    if before is None or after is None or after[1] <= before[1]:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (after[0] - before[0]) / tick
    total = (after[1] - before[1]) / tick
    return max(0.0, (busy - own_cpu) / total)


def measure(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, int, float | None]:
    """Run ``command``; wall seconds, CPU seconds (user + system, all its processes), peak
    summed RSS of its process tree, and the share of the machine's CPU others used meanwhile."""
    ticks = machine_cpu_ticks()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{stdout}\n{stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, peak, others_share(ticks, cpu)


def read_tokens(dataset: Path) -> tuple[int, list]:
    """Sample count and all samples' tokens (to compare the two tools' outputs)."""
    import tempfile

    from streaming import StreamingDataset

    with tempfile.TemporaryDirectory() as cache:
        ds = StreamingDataset(remote=str(dataset), local=cache, shuffle=False, batch_size=1)
        return ds.num_samples, [ds[i]["tokens"] for i in range(ds.num_samples)]


def run_ours(
    corpus: Path, out: Path, tokenizer: Path, seq: int, workers: int, shard_size: str = "64MiB"
) -> Run:
    command = [sys.executable, "-m", "foundry_data", "convert", str(corpus), str(out),
               "--tokenizer", str(tokenizer), "--concat-tokens", str(seq), "--no-progress",
               "--overwrite"]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    command += ["--shard-size", shard_size]
    seconds, cpu, peak, others = measure(command)
    manifest = json.loads((out / "foundry_manifest.json").read_text())
    label = f"foundry-data w={workers or os.cpu_count()} {shard_size}"
    return Run(
        label,
        corpus.stat().st_size,
        seconds,
        cpu,
        peak,
        manifest["num_tokens"],
        manifest["num_samples"],
        os.getloadavg()[0],
        others,
    )


def run_llm_foundry(
    python: str, corpus: Path, out: Path, tokenizer: Path, seq: int, eos: str, cache: Path
) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    # Its own Arrow cache (fresh, so its JSON -> Arrow step is timed too); default settings.
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1")
    command = [python, "-c", LLM_FOUNDRY_CALL, str(corpus), str(out), str(seq), str(tokenizer), eos]
    seconds, cpu, peak, others = measure(command, env)
    index = json.loads((out / "index.json").read_text())
    samples = sum(s["samples"] for s in index["shards"])
    return Run(
        "llm-foundry 0.22",
        corpus.stat().st_size,
        seconds,
        cpu,
        peak,
        samples * seq,
        samples,
        os.getloadavg()[0],
        others,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=100.0, help="corpus size (default 100)")
    parser.add_argument("--seq", type=int, default=2048, help="--concat-tokens (default 2048)")
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--workers", type=int, default=0, help="ours: 0 = all cores")
    parser.add_argument("--work-dir", default=str(ROOT / "bench-output" / "data_convert"))
    parser.add_argument(
        "--llm-foundry-python",
        default="/tmp/llmf-venv/bin/python",
        help="python of an environment with llm-foundry 0.22 ('' to skip it)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the full-size comparison (ours, then llm-foundry) this many times; the ratio "
        "uses each tool's fastest run (on a shared machine, the least disturbed one)",
    )
    parser.add_argument(
        "--baseline-both-sizes",
        action="store_true",
        help="also run llm-foundry on the small corpus",
    )
    args = parser.parse_args()

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    if not corpus.exists() or corpus.stat().st_size < args.size_mb * 1e6:
        nbytes, ndocs = build_corpus(corpus, args.size_mb)
        print(f"built {corpus}: {nbytes / 1e6:.1f} MB, {ndocs:,} documents")
    small = work / "corpus-quarter.jsonl"
    prefix_corpus(corpus, small, 0.25)
    sample = work / "tokenizer-sample.jsonl"
    prefix_corpus(corpus, sample, min(1.0, 4e6 / corpus.stat().st_size))
    tokenizer = work / "tokenizer"
    if not tokenizer.exists():
        subprocess.run([sys.executable, "-m", "foundry_data", "train-tokenizer", str(sample), str(tokenizer),
                        "--vocab-size", str(args.vocab_size), "--no-progress"], check=True)  # fmt: skip

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs ({platform_cpu()}), load average before the runs "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    runs: list[Run] = []
    runs.append(run_ours(small, work / "ours-q-8m", tokenizer, args.seq, args.workers, "8MiB"))
    runs.append(run_ours(corpus, work / "ours-8m", tokenizer, args.seq, args.workers, "8MiB"))
    if args.llm_foundry_python and args.baseline_both_sizes:
        runs.append(run_llm_foundry(args.llm_foundry_python, small, work / "llmf-quarter", tokenizer,
                                    args.seq, "<|endoftext|>", work / "hf-cache"))  # fmt: skip
    ours_runs: list[Run] = []
    baseline_runs: list[Run] = []
    for _ in range(max(1, args.repeat)):  # interleaved, so both tools meet the same conditions
        ours_runs.append(run_ours(corpus, work / "ours", tokenizer, args.seq, args.workers))
        runs.append(ours_runs[-1])
        if args.llm_foundry_python:
            baseline_runs.append(run_llm_foundry(args.llm_foundry_python, corpus, work / "llmf", tokenizer,
                                                 args.seq, "<|endoftext|>", work / "hf-cache"))  # fmt: skip
            runs.append(baseline_runs[-1])

    print(HEADER)
    for run in runs:
        print(run.row())
    ours_small, ours_big = runs[0], runs[1]
    print(
        f"foundry-data peak memory (8 MiB shards): {ours_small.peak_rss / 2**20:.0f} MiB at "
        f"{ours_small.input_bytes / 1e6:.0f} MB input, {ours_big.peak_rss / 2**20:.0f} MiB at "
        f"{ours_big.input_bytes / 1e6:.0f} MB (x{ours_big.peak_rss / ours_small.peak_rss:.2f} "
        f"for x{ours_big.input_bytes / ours_small.input_bytes:.1f} input)"
    )
    if baseline_runs:
        report_ratio(ours_runs, baseline_runs)
        n_ours, ours_tokens = read_tokens(work / "ours")
        n_base, base_tokens = read_tokens(work / "llmf")
        same = n_ours == n_base and all(
            (a == b).all() for a, b in zip(ours_tokens, base_tokens, strict=True)
        )
        print(
            f"same samples as llm-foundry: {'yes' if same else 'NO'} ({n_ours:,} vs {n_base:,} samples)"
        )


def report_ratio(ours_runs: list[Run], baseline_runs: list[Run]) -> None:
    """The throughput ratio of each tool's fastest full-size run (and of the CPU time those runs
    took); with one run each, simply the ratio of the two."""
    ours = min(ours_runs, key=lambda r: r.seconds)
    baseline = min(baseline_runs, key=lambda r: r.seconds)
    ratio = (ours.tokens / ours.seconds) / (baseline.tokens / baseline.seconds)
    cpu_ratio = (ours.tokens / ours.cpu_seconds) / (baseline.tokens / baseline.cpu_seconds)
    which = f" (fastest of {len(ours_runs)} runs each)" if len(ours_runs) > 1 else ""
    print(
        f"throughput ratio foundry-data / llm-foundry{which}: {ratio:.2f}x wall-clock, "
        f"{cpu_ratio:.2f}x per CPU second "
        f"(peak memory {ours.peak_rss / 2**20:.0f} vs {baseline.peak_rss / 2**20:.0f} MiB)"
    )


def platform_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
