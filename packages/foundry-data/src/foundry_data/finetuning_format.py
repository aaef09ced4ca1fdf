"""The fine-tuning sample layout, shared with llm-foundry.

A fine-tuning dataset has one MDS column, ``turns`` (encoding ``json``): a list of turns, each
``{"input_ids": [...], "labels": [...]}`` where ``input_ids`` holds the prompt (context) tokens of
the turn and ``labels`` its response tokens. This is the layout llm-foundry's
``convert_finetuning_dataset.py`` writes when it tokenizes, so llm-foundry's fine-tuning loader
reads our datasets and we read its. Prompt and response stay apart so that the trainer decides
what produces loss; :func:`decode_finetuning_sample` turns a stored sample into model inputs and
labels with ``-100`` on the tokens that produce none.

The last response of every sample we write ends with the tokenizer's EOS token (llm-foundry's
collator adds it when missing; storing it keeps the two identical).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, SupportsInt, cast

import numpy as np

__all__ = [
    "FINETUNING_COLUMNS",
    "IGNORE_INDEX",
    "FinetuningSample",
    "Turn",
    "decode_finetuning_sample",
    "encode_turns",
]

FINETUNING_COLUMNS: dict[str, str] = {"turns": "json"}
"""MDS columns of a fine-tuning dataset (llm-foundry's tokenized layout)."""

IGNORE_INDEX = -100
"""Label value that produces no loss (PyTorch's and Hugging Face's convention)."""


@dataclass(frozen=True)
class Turn:
    """One prompt/response exchange, tokenized."""

    prompt: list[int]
    response: list[int]


@dataclass(frozen=True)
class FinetuningSample:
    """A fine-tuning sample ready for a causal LM.

    ``input_ids`` is the whole token sequence (all prompts and responses in order); ``labels`` has
    the same length, equal to ``input_ids`` where the token is a training target and ``-100``
    elsewhere (prompt tokens). Labels are *not* shifted: the model shifts them, as Hugging Face
    causal LMs do.
    """

    input_ids: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.input_ids.shape != self.labels.shape:
            raise ValueError(
                f"input_ids {self.input_ids.shape} and labels {self.labels.shape} differ in shape"
            )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def encode_turns(turns: Sequence[Turn]) -> dict[str, Any]:
    """The MDS sample (for the ``turns`` column) holding ``turns``."""
    return {
        "turns": [
            {"input_ids": [int(t) for t in turn.prompt], "labels": [int(t) for t in turn.response]}
            for turn in turns
        ]
    }


def _as_int_list(value: Any, key: str) -> list[int]:
    if isinstance(value, np.ndarray):
        return value.astype(np.int64).tolist()
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes | bytearray):
        # llm-foundry's older tokenized layout stored int64 token bytes.
        return np.frombuffer(value, dtype=np.int64).tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        # A JSON list of token ids (numbers, as the json column encoding stores them).
        return [int(v) for v in cast("Sequence[SupportsInt]", value)]
    raise ValueError(f"fine-tuning sample field {key!r} is {type(value).__name__}, not token ids")


def _turns_of(sample: Mapping[str, Any]) -> list[Turn]:
    if "turns" in sample:
        raw_turns = sample["turns"]
    elif "input_ids" in sample and "labels" in sample:
        # Older llm-foundry layout: one turn stored as two columns.
        raw_turns = [{"input_ids": sample["input_ids"], "labels": sample["labels"]}]
    elif "prompt" in sample or "messages" in sample:
        raise ValueError(
            "this fine-tuning sample holds untokenized text (prompt/response or messages); "
            "convert the dataset with `foundry-data convert-finetuning SOURCE OUT --tokenizer "
            "TOKENIZER --max-seq-len N` so it stores tokens"
        )
    else:
        raise ValueError(
            f"not a fine-tuning sample: columns {sorted(sample)} (expected 'turns', "
            "the layout `foundry-data convert-finetuning` writes)"
        )
    turns: list[Turn] = []
    for raw in raw_turns:
        turns.append(
            Turn(
                prompt=_as_int_list(raw["input_ids"], "input_ids"),
                response=_as_int_list(raw["labels"], "labels"),
            )
        )
    if not turns:
        raise ValueError("fine-tuning sample has no turns")
    return turns


def decode_finetuning_sample(
    sample: Mapping[str, Any],
    *,
    target_responses: Literal["all", "last"] = "all",
    target_prompts: Literal["none", "all"] = "none",
) -> FinetuningSample:
    """Turn a stored fine-tuning sample into ``input_ids`` and ``labels``.

    Args:
        sample: a sample as ``streaming.StreamingDataset`` returns it (``{"turns": [...]}``); the
            older llm-foundry layout with ``input_ids``/``labels`` columns is read too.
        target_responses: ``"all"`` (default): every response is a training target;
            ``"last"``: only the final response is (llm-foundry's default), earlier responses
            become context.
        target_prompts: ``"none"`` (default): prompts never produce loss; ``"all"``: they do.

    Returns:
        A :class:`FinetuningSample` with int64 arrays of equal length; ``labels`` is ``-100`` on
        every token that is not a target.
    """
    turns = _turns_of(sample)
    input_ids: list[int] = []
    labels: list[int] = []
    for index, turn in enumerate(turns):
        is_last = index == len(turns) - 1
        input_ids += turn.prompt
        input_ids += turn.response
        labels += turn.prompt if target_prompts == "all" else [IGNORE_INDEX] * len(turn.prompt)
        if target_responses == "all" or is_last:
            labels += turn.response
        else:
            labels += [IGNORE_INDEX] * len(turn.response)
    return FinetuningSample(
        input_ids=np.asarray(input_ids, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
    )
