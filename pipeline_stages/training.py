"""Stage 4 of pipeline.py: train the debug model in rounds until the loss falls below its target."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_stages.run import LAST_N, LOSS_KEY, PipelineError, Run, command, run_stage


def train_config(run: Run, max_batches: int) -> str:
    """The training YAML (the debug preset, fp32 on CPU, bf16 autocast on a GPU)."""
    s = run.sizes
    return f"""\
# Written by pipeline.py: the `debug` MPT preset on the built-in text.
run_name: foundry-pipeline
seed: 17
max_seq_len: {s.seq_len}
model: {{name: mpt, preset: debug}}
tokenizer: {{name: tokenizer}}        # paths are relative to the output folder
train_loader:
  name: pretraining
  dataset: {{local: mds}}
optimizer: {{name: decoupled_adamw, lr: {s.lr}, betas: [0.9, 0.95], weight_decay: 0.0}}
scheduler: {{name: constant_with_warmup, t_warmup: 20ba}}
gradient_clipping: {{clipping_type: norm, clipping_threshold: 1.0}}
max_duration: {max_batches}ba
global_train_batch_size: {s.batch_size}
device_train_microbatch_size: {s.batch_size}
precision: amp_bf16          # CPU runs use fp32
save_folder: checkpoints
save_interval: {max_batches}ba
save_num_checkpoints_to_keep: 1
autoresume: true             # each round continues the previous one
progress_bar: true
callbacks:
  speed_monitor: {{window_size: 10}}
  loss_spike: {{window: 50, spike_ratio: 3.0}}
"""


def read_losses(metrics: Path) -> dict[int, float]:
    """``{batch: training loss}`` from foundry-train's metrics.jsonl."""
    losses: dict[int, float] = {}
    if not metrics.is_file():
        return losses
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if LOSS_KEY in row and row.get("step") is not None:
            losses[int(row["step"])] = float(row[LOSS_KEY])
    return losses


def loss_status(losses: dict[int, float], ratio: float) -> tuple[float, float, float]:
    """(first batch's loss, target, mean of the last LAST_N batches)."""
    steps = sorted(losses)
    start = losses[steps[0]]
    recent = [losses[s] for s in steps[-LAST_N:]]
    return start, ratio * start, sum(recent) / len(recent)


def train_until_halved(run: Run) -> None:
    s = run.sizes
    config = run.path("train.yaml")
    metrics = run.path("checkpoints") / "metrics.jsonl"
    total = s.first_round
    while True:
        config.write_text(train_config(run, total))
        run_stage(
            run, f"train the debug model to batch {total}", [*command("foundry-train"), config.name]
        )
        losses = read_losses(metrics)
        if len(losses) < LAST_N:
            raise PipelineError(f"{metrics} holds {len(losses)} loss values; expected {total}.")
        start, target, recent = loss_status(losses, run.target_ratio)
        print(
            f"    loss: first batch {start:.3f}, mean of the last {LAST_N} batches {recent:.3f}, "
            f"target < {target:.3f}",
            flush=True,
        )
        if recent < target:
            break
        if total >= s.max_batches:
            raise PipelineError(
                f"after {total} batches the loss ({recent:.3f}) is still above {target:.3f} "
                f"({run.target_ratio} x the first batch's {start:.3f}). Raise --max-batches or "
                "lower --target-ratio."
            )
        total = min(total + s.next_rounds, s.max_batches)
    run.facts["batches trained"] = total
    run.facts["tokens trained"] = f"{total * s.batch_size * s.seq_len:,}"
    run.facts["loss"] = (
        f"{start:.3f} (batch 0) -> {recent:.3f} (mean of the last {LAST_N}); "
        f"target < {target:.3f} = {run.target_ratio} x start: reached"
    )
    plot_loss(losses, target, run.target_ratio, run.path("loss_curve.png"))


def plot_loss(losses: dict[int, float], target: float, ratio: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(losses), list(losses.values()), color="tab:blue", label="training loss")
    ax.axhline(target, color="tab:red", linestyle="--", label=f"target ({ratio} x the first loss)")
    ax.set_title("pipeline.py: the debug MPT on the project's own text")
    ax.set_xlabel("batch")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
