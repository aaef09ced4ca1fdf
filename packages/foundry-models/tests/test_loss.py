"""The chunked fused linear + cross-entropy agrees with the plain path on loss and gradients."""

from __future__ import annotations

import pytest
import torch
from foundry_models.loss import (
    chunked_cross_entropy_sum,
    chunked_linear_cross_entropy,
    reference_linear_cross_entropy,
)


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float32, 1e-6), (torch.bfloat16, 2e-3)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_matches_reference(dtype: torch.dtype, atol: float, chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 32, generator=gen).to(dtype).requires_grad_()
    weight = torch.randn(97, 32, generator=gen).to(dtype).requires_grad_()
    labels = torch.randint(0, 97, (300,), generator=gen)
    labels[::7] = -100

    loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=chunk, logit_scale=0.5)
    loss.backward()
    got = (loss.detach(), hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    ref = reference_linear_cross_entropy(hidden, weight, labels, logit_scale=0.5)
    ref.backward()

    torch.testing.assert_close(got[0], ref.detach(), atol=atol, rtol=0)
    torch.testing.assert_close(got[1].float(), hidden.grad.float(), atol=atol, rtol=1e-2)
    torch.testing.assert_close(got[2].float(), weight.grad.float(), atol=atol, rtol=1e-2)


def test_all_ignored_gives_zero_loss_and_grads() -> None:
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(5, 8, requires_grad=True)
    labels = torch.full((10,), -100)
    loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    loss.backward()
    assert loss.item() == 0.0
    assert hidden.grad is not None and torch.count_nonzero(hidden.grad) == 0


def test_no_grad_path_gives_same_loss() -> None:
    hidden = torch.randn(50, 8)
    weight = torch.randn(11, 8)
    labels = torch.randint(0, 11, (50,))
    with torch.no_grad():
        loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=16)
    torch.testing.assert_close(loss, reference_linear_cross_entropy(hidden, weight, labels))


def test_rejects_misaligned_shapes() -> None:
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_linear_cross_entropy(torch.randn(4, 8), torch.randn(3, 8), torch.zeros(5).long())


def test_model_with_loss_chunks_matches_plain_loss_and_grads() -> None:
    from foundry_models import MPTForCausalLM, preset_config

    torch.manual_seed(0)
    plain = MPTForCausalLM(preset_config("debug"))
    plain.init_weights_()
    fused = MPTForCausalLM(preset_config("debug", loss_chunk_size=5))
    fused.load_state_dict(plain.state_dict())
    ids = torch.randint(0, plain.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[0, :4] = -100
    losses, grads = [], []
    for model in (plain, fused):
        model.train()
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(model.get_input_embeddings().weight.grad.clone())
    assert fused(input_ids=ids, labels=labels).logits is None
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    fused.eval()
    with torch.no_grad():
        assert fused(input_ids=ids, labels=labels).logits is not None


@pytest.mark.parametrize("chunk", [1, 13, 300])
def test_scoring_sum_matches_reference(chunk: int) -> None:
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(120, 16, generator=gen), torch.randn(41, 16, generator=gen)
    labels = torch.randint(0, 41, (120,), generator=gen)
    labels[5:30] = -100
    total, count = chunked_cross_entropy_sum(
        hidden, weight, labels, chunk_size=chunk, logit_scale=2.0
    )
    ref = reference_linear_cross_entropy(hidden, weight, labels, logit_scale=2.0)
    assert int(count) == 95
    torch.testing.assert_close(total / count, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy_sum(hidden, weight, labels[:-1])


@pytest.mark.parametrize("loss_chunk_size", [None, 5])
def test_eval_without_logits_scores_like_the_logits(loss_chunk_size: int | None) -> None:
    """`return_logits=False` in eval: the loss of the full logits, with no logits built."""
    from foundry_models import MPTForCausalLM, preset_config

    torch.manual_seed(0)
    model = MPTForCausalLM(preset_config("debug", loss_chunk_size=loss_chunk_size)).eval()
    model.init_weights_()
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    labels = ids.clone()
    labels[1, :7] = -100
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels)
        scored = model(input_ids=ids, labels=labels, return_logits=False)
    assert full.logits is not None and scored.logits is None
    torch.testing.assert_close(scored.loss, full.loss, atol=1e-5, rtol=0)
    # with gradients on, the same call goes through the fused training path and can backprop
    model.train()
    trained = model(input_ids=ids, labels=labels, return_logits=False)
    trained.loss.backward()
    assert model.get_input_embeddings().weight.grad is not None
    torch.testing.assert_close(trained.loss.detach(), full.loss, atol=1e-5, rtol=0)


def test_loss_chunk_size_is_validated() -> None:
    from foundry_models import MPTConfigError, preset_config

    with pytest.raises(MPTConfigError, match="loss_chunk_size"):
        preset_config("debug", loss_chunk_size=0)
