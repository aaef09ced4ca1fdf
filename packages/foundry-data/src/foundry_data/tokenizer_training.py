"""Training a byte-level BPE tokenizer (``foundry-data train-tokenizer``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from foundry_data.errors import FoundryError

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "TokenizerTrainingResult",
    "train_bpe_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, IM_START, IM_END)
MAX_VOCAB_SIZE = 2**24  # 16.7M ids: far above any real vocabulary, well inside int32

# ChatML: every message is "<|im_start|>role\ncontent<|im_end|>\n". A generation prompt opens an
# assistant message. The assistant's "<|im_end|>\n" is part of its response, so a model learns to
# close its turns.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerTrainingResult:
    out: Path
    vocab_size: int
    num_documents: int
    num_bytes: int


def _batches(texts: Iterable[str], counter: list[int], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        counter[0] += 1
        counter[1] += len(text.encode("utf-8"))
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_vocab_size(vocab_size: int) -> None:
    """A vocabulary too small for the byte alphabet, or absurdly large, is a user error."""
    minimum = 256 + len(DEFAULT_SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise FoundryError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs the 256 byte "
            f"symbols plus {len(DEFAULT_SPECIAL_TOKENS)} special tokens. Use at least {minimum}."
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise FoundryError(
            f"--vocab-size {vocab_size:,} is too large: the trainer would try to allocate tables "
            f"of that size, and no practical vocabulary exceeds {MAX_VOCAB_SIZE:,} tokens "
            "(the largest published models use about 256k). Use a smaller --vocab-size."
        )


def train_bpe_tokenizer(
    texts: Iterable[str],
    out: Path,
    *,
    vocab_size: int,
    min_frequency: int = 2,
    chat_template: str | None = CHATML_TEMPLATE,
    overwrite: bool = False,
    show_progress: bool = True,
) -> TokenizerTrainingResult:
    """Train a byte-level BPE tokenizer on ``texts`` and save it where AutoTokenizer loads it.

    The tokenizer has ``<|endoftext|>`` as BOS/EOS/UNK, ``<|pad|>`` as padding and the ChatML
    markers ``<|im_start|>``/``<|im_end|>`` with a ChatML chat template (unless ``chat_template``
    is None). Decoding gives back the exact text: no normalization, no prefix space, no clean-up.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    _check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    counter = [0, 0]
    tokenizer.train_from_iterator(_batches(texts, counter), trainer=trainer)
    if counter[0] == 0:
        raise FoundryError("the source holds no documents to train a tokenizer on.")

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )
    if chat_template is not None:
        hf.chat_template = chat_template
    _save_atomically(hf, out, overwrite=overwrite)
    return TokenizerTrainingResult(
        out=out, vocab_size=len(hf), num_documents=counter[0], num_bytes=counter[1]
    )


def _name_portable_class(config_path: Path) -> None:
    """Write the config so that transformers 4.x loads it as well as 5.x: the class as
    ``PreTrainedTokenizerFast`` (5.x writes ``TokenizersBackend``, unknown to 4.x) and the extra
    special tokens as the list ``additional_special_tokens`` (4.x wants a dict under 5.x's key)."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _save_atomically(hf: object, out: Path, *, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FoundryError(f"{out} already exists. Choose another OUT or pass --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)  # type: ignore[attr-defined]
    _name_portable_class(tmp / "tokenizer_config.json")
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
