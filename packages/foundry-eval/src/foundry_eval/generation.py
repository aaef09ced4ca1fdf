"""Batched generation with stopping strings (greedy for QA tasks, sampled for code)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from foundry_eval.prompts import GenerationRequest, Tokenizer

__all__ = ["generate_texts", "sample_keys"]

_MASK32 = 0xFFFFFFFF


def _hash32(x: int) -> int:
    """A 32-bit integer mix (xorshift-multiply), on Python ints."""
    x &= _MASK32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 tensors holding 32-bit values, without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _hash32_t(x: torch.Tensor) -> torch.Tensor:
    """`_hash32` on an int64 tensor of 32-bit values (the same numbers)."""
    x = x & _MASK32
    x = _mul32(x ^ (x >> 16), 0x7FEB352D)
    x = _mul32(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


def sample_keys(seed: int, index: int, num_samples: int) -> list[int]:
    """The random keys of example ``index``'s samples: a function of the seed, the example and
    the sample number only, so its samples do not depend on the batch it is generated in."""
    base = _hash32(_hash32(seed) ^ _hash32(index + 0x9E3779B9))
    return [_hash32(base ^ _hash32(s + 0x7F4A7C15)) for s in range(num_samples)]


class _KeyedSampler:
    """Samples each row's next token from softmax(logits / temperature) with the Gumbel-max
    trick, on noise hashed from (row key, step, token): the same draw whatever the batch. It
    returns scores that are -inf but for the drawn token, which greedy decoding then takes."""

    def __init__(self, keys: list[int], temperature: float, prompt_width: int) -> None:
        self.keys = torch.tensor(keys, dtype=torch.int64)
        self.temperature = temperature
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_width
        keys = self.keys.to(scores.device)
        row = _hash32_t(keys ^ _hash32(step + 0x632BE5AB))
        vocab = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.int64)
        bits = _hash32_t(row[:, None] ^ vocab[None, :]) >> 8  # 24 random bits per token
        uniform = (bits.to(torch.float32) + 0.5) / float(1 << 24)  # strictly inside (0, 1)
        gumbel = -torch.log(-torch.log(uniform))
        drawn = (scores.float() / self.temperature + gumbel).argmax(dim=-1, keepdim=True)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn, 0.0)


class _StopOnStrings:
    """Stops generation once every row's new text contains one of the stop strings."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :]
        done = []
        for row in new.tolist():
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            done.append(any(s in text for s in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts left-padded to one width (for generation), and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        mask[b, width - len(p) :] = 1
    return ids, mask


def generate_texts(
    model: Any,
    tokenizer: Tokenizer,
    requests: list[GenerationRequest],
    *,
    batch_size: int,
    max_new_tokens: int,
    max_seq_len: int,
    pad_id: int,
    device: torch.device,
    stop_strings: list[str] | None = None,
    num_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 1234,
    on_progress: Callable[[int], object] | None = None,
) -> list[list[str]]:
    """Generated continuations for each request (``num_samples`` each), in input order.

    With ``temperature`` > 0 each sample is drawn with noise keyed by ``seed``, the request's
    index and the sample number (`sample_keys`), so a request gets the same samples whatever the
    batch size, the batch it lands in, or the number of GPUs sharing the task.
    """
    from transformers import LogitsProcessorList, StoppingCriteriaList

    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
    out: list[list[str]] = [[] for _ in requests]
    keep = max(max_seq_len - max_new_tokens, 1)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        # each prompt once per sample, consecutively: row b * num_samples + s
        prompts = [requests[i].prompt_ids[-keep:] for i in chunk for _ in range(num_samples)]
        ids, mask = _left_padded(prompts, pad_id)
        width = ids.shape[1]
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": tokenizer.eos_token_id,
            "do_sample": False,  # sampled rows draw in _KeyedSampler, not torch's generator
        }
        if temperature > 0:
            keys = [k for i in chunk for k in sample_keys(seed, requests[i].index, num_samples)]
            kwargs["logits_processor"] = LogitsProcessorList(
                [_KeyedSampler(keys, temperature, width)]
            )
        if stop_strings:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_StopOnStrings(tokenizer, stop_strings, width)]
            )
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = gen[:, width:].tolist()
        for b, i in enumerate(chunk):
            for s in range(num_samples):
                out[i].append(tokenizer.decode(new[b * num_samples + s], skip_special_tokens=True))
        if on_progress:
            on_progress(len(chunk))
    return out
