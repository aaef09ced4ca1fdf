"""Batched generation with stopping strings (greedy for QA tasks, sampled for code)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from foundry_eval.prompts import GenerationRequest, Tokenizer

__all__ = ["generate_texts"]


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
    """Generated continuations for each request (``num_samples`` each), in input order."""
    from transformers import StoppingCriteriaList

    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
    out: list[list[str]] = [[] for _ in requests]
    keep = max(max_seq_len - max_new_tokens, 1)
    generator_seed = seed
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        prompts = [requests[i].prompt_ids[-keep:] for i in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding for generation
            ids[b, width - len(p) :] = torch.tensor(p)
            mask[b, width - len(p) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": tokenizer.eos_token_id,
            "num_return_sequences": num_samples,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            torch.manual_seed(generator_seed + start)
        else:
            kwargs.update(do_sample=False)
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
