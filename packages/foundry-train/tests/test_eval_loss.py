"""Evaluation scores sums, not logits: the same cross-entropy and perplexity as composer's own
metrics over the full logits, for a Foundry MPT (chunked, no logits built) and an HF model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from foundry_train.config import parse_config
from foundry_train.eval_loss import EvalLoss, TokenCrossEntropy
from foundry_train.model import build_composer_model
from torch.utils._python_dispatch import TorchDispatchMode


def _config(model: dict) -> dict:
    return {
        "model": model,
        "tokenizer": {"name": "tok"},
        "train_loader": {"dataset": {"local": "data"}},
        "max_duration": "10ba",
        "global_train_batch_size": 8,
    }


def _reference(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """composer's LanguageCrossEntropy / LanguagePerplexity on the full fp32 logits."""
    ce, ppl = LanguageCrossEntropy(), LanguagePerplexity()
    for metric in (ce, ppl):
        metric.update(logits[:, :-1].float().contiguous(), labels[:, 1:].contiguous())
    return float(ce.compute()), float(ppl.compute())


@pytest.mark.parametrize("which", ["mpt", "mpt-loss-chunks", "hf-llama"])
def test_eval_metrics_equal_composers_on_full_logits(which: str, assets: dict[str, Path]) -> None:
    if which == "hf-llama":
        spec = {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(assets["llama"])}
    else:
        overrides = {"n_layers": 2, "d_model": 32, "n_heads": 4, "vocab_size": 64}
        if which == "mpt-loss-chunks":
            overrides["loss_chunk_size"] = 7
        spec = {"name": "mpt", "preset": "debug", "config_overrides": overrides}
    torch.manual_seed(0)
    composer_model = build_composer_model(parse_config(_config(spec)).model, max_seq_len=16)
    composer_model.eval()
    batches = []
    for _ in range(2):  # two batches: the metric adds them up
        ids = torch.randint(0, 64, (3, 16))
        labels = ids.clone()
        labels[0, :9] = -100
        batches.append({"input_ids": ids, "labels": labels})
    metrics = composer_model.get_metrics(is_train=False)
    with torch.no_grad():
        for batch in batches:
            scored = composer_model.eval_forward(batch)
            assert isinstance(scored, EvalLoss)
            for metric in metrics.values():
                composer_model.update_metric(batch, scored, metric)
        full = [composer_model.model(**batch, use_cache=False).logits for batch in batches]
    ce, ppl = _reference(torch.cat(full), torch.cat([b["labels"] for b in batches]))
    assert int(metrics["LanguageCrossEntropy"].total_items) == 2 * (3 * 15 - 8)
    assert float(metrics["LanguageCrossEntropy"].compute()) == pytest.approx(ce, rel=1e-5)
    assert float(metrics["LanguagePerplexity"].compute()) == pytest.approx(ppl, rel=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_mpt_eval_never_builds_the_logits() -> None:
    """No op of the MPT's evaluation forward returns a tensor near the size of the (B, T, V)
    logits, while the plain forward does (so the check can fail)."""
    vocab = 4096
    overrides = {"vocab_size": vocab, "loss_chunk_size": 16}
    spec = {"name": "mpt", "preset": "debug", "config_overrides": overrides}
    composer_model = build_composer_model(parse_config(_config(spec)).model, max_seq_len=128)
    composer_model.eval()
    ids = torch.randint(0, vocab, (2, 128))
    logits_size = 2 * 128 * vocab
    with torch.no_grad(), _LargestTensor() as scoring:
        scored = composer_model.eval_forward({"input_ids": ids, "labels": ids})
    assert isinstance(scored, EvalLoss) and int(scored.count) == 2 * 127
    assert scoring.largest < logits_size // 2
    with torch.no_grad(), _LargestTensor() as plain:
        composer_model({"input_ids": ids, "labels": ids})
    assert plain.largest >= logits_size


def test_metric_states_add_across_updates() -> None:
    metric = TokenCrossEntropy()
    metric.update(EvalLoss(torch.tensor(6.0), torch.tensor(3)))
    metric.update(EvalLoss(torch.tensor(2.0), torch.tensor(1)))
    assert float(metric.compute()) == pytest.approx(2.0)
