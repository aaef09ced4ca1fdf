"""Turning task rows into token requests, with llm-foundry's prompt and few-shot semantics.

Few-shot examples are drawn with one ``random.Random(fewshot_random_seed)`` consumed in dataset
order, excluding the example itself; the prompt is ``prompt_string`` + few-shot examples (each
``example_delimiter`` + ``question_prelimiter`` + context + ``continuation_delimiter`` + answer) +
the example's own context. The preamble and the context are tokenized separately (the preamble
with the tokenizer's special tokens), and continuations get a leading space when the tokenizer is
a GPT-2 style BPE that needs one.
"""

from __future__ import annotations

import hashlib
import random
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from foundry_eval.config import TaskConfig

__all__ = [
    "GenerationRequest",
    "LoglikelihoodQuestion",
    "Tokenizer",
    "build_generation_requests",
    "build_loglikelihood_questions",
    "fewshot_indices",
    "needs_prefix_space",
    "render_prompts",
    "strip_row",
]

# Extra generated tokens allowed beyond the longest chain-of-thought answer (llm-foundry: 10).
_ANSWER_BUFFER = 10


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer foundry-eval uses."""

    eos_token_id: int | None
    pad_token_id: int | None

    def __call__(self, text: Any, add_special_tokens: bool = True) -> Any: ...

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str: ...


@dataclass
class LoglikelihoodQuestion:
    """One example scored by log-likelihood.

    ``contexts`` holds one shared context (language modeling, multiple choice) or one per option
    (schema); ``continuations`` one per choice (multiple choice) or one shared (schema, LM).
    """

    index: int
    contexts: list[list[int]]
    continuations: list[list[int]]
    gold: int
    choice_texts: list[str]
    category: str | None = None


@dataclass
class GenerationRequest:
    """One example scored on generated text."""

    index: int
    prompt_ids: list[int]
    answers: list[str] = field(default_factory=list)
    category: str | None = None
    prompt_text: str = ""
    row: dict[str, Any] = field(default_factory=dict)


def strip_row(row: dict[str, Any]) -> dict[str, Any]:
    """Strip surrounding whitespace from string fields (lists are kept as they are)."""
    return {k: v.strip() if isinstance(v, str) else v for k, v in row.items()}


def needs_prefix_space(tokenizer: Tokenizer) -> bool:
    """GPT-2 style BPE encodes ' a' as one token and needs a space before continuations."""
    return len(_encode(tokenizer, " a", special=False)) == 1


def _encode(tokenizer: Tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def fewshot_indices(size: int, num_fewshot: int, example_idx: int, rng: random.Random) -> set[int]:
    """Few-shot example indices for ``example_idx``, sampled without replacement and excluding it."""
    num_fewshot = min(size - 1, num_fewshot)
    chosen = set(rng.sample(range(0, size), num_fewshot))
    if example_idx in chosen:
        chosen.remove(example_idx)
        if len(chosen) >= size - 1:
            return chosen
        replacement = rng.choice(range(0, size))
        while replacement in chosen or replacement == example_idx:
            replacement = rng.choice(range(0, size))
        chosen.add(replacement)
    return chosen


def _encode_many(tokenizer: Tokenizer, texts: list[str], *, special: bool) -> list[list[int]]:
    """Token ids of each text, from one batched tokenizer call."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]


def _with_space(text: str, prefix_space: bool) -> str:
    return f" {text}" if prefix_space and not text.startswith(" ") else text


class _PromptBuilder:
    """Builds few-shot text and contexts for one task."""

    def __init__(self, task: TaskConfig, rows: list[dict[str, Any]], tokenizer: Tokenizer):
        self.task = task
        self.rows = rows
        self.tokenizer = tokenizer
        self.prefix_space = needs_prefix_space(tokenizer)
        self.rng = random.Random(task.fewshot_random_seed)
        self.has_cot = any("chain_of_thought" in r for r in rows)

    # -- answers and contexts ------------------------------------------------------------
    def answer(self, row: dict[str, Any]) -> str:
        kind = self.task.icl_task_type
        if kind == "multiple_choice":
            return row["choices"][row["gold"]]
        if kind == "generation_task_with_answers":
            if self.has_cot:
                return f"{row.get('chain_of_thought', '')}{self.task.cot_delimiter}{row['answer']}"
            return row["answer"]
        if kind == "code_evaluation":
            return row.get("canonical_solution", "")
        return row["continuation"]

    def context(self, row: dict[str, Any], preceding: str, add_answer: bool) -> str:
        t = self.task
        if t.icl_task_type == "schema":
            text = row["context_options"][row["gold"]]
            if preceding:
                text = f"{t.example_delimiter}{text}"
            return f"{t.question_prelimiter}{text}{t.continuation_delimiter}{row['continuation']}"
        if t.icl_task_type == "code_evaluation":
            # a code example is its prompt and then its solution, with nothing between them: the
            # prompt ends where the function body starts (the test prompt gets no delimiter either)
            text = f"{t.question_prelimiter}{row['prompt']}"
            if preceding:
                text = f"{t.example_delimiter}{text}"
            return f"{text}{self.answer(row)}" if add_answer else text
        key = "query" if t.icl_task_type == "multiple_choice" else "context"
        text = f"{t.question_prelimiter}{row[key]}"
        if preceding:
            text = f"{t.example_delimiter}{text}"
        text = f"{text}{t.continuation_delimiter}"
        if add_answer:
            text = f"{text}{self.answer(row)}"
        return text

    def preamble(self, idx: int) -> str:
        text = self.task.prompt_string
        if self.task.num_fewshot > 0:
            for j in fewshot_indices(len(self.rows), self.task.num_fewshot, idx, self.rng):
                text += self.context(self.rows[j], text, add_answer=True)
        return text

    def preamble_ids(self, text: str) -> list[int]:
        return self._drop_eos(_encode(self.tokenizer, text, special=True))

    def _drop_eos(self, ids: list[int]) -> list[int]:
        eos = self.tokenizer.eos_token_id
        if eos is not None and len(ids) > 1 and ids[-1] == eos:
            ids = ids[:-1]
        return ids

    def encode(self, text: str) -> list[int]:
        return _encode(self.tokenizer, text, special=False)

    def preamble_ids_many(self, texts: list[str]) -> dict[str, list[int]]:
        """Token ids of each distinct preamble (0-shot tasks share one)."""
        unique = list(dict.fromkeys(texts))
        ids = _encode_many(self.tokenizer, unique, special=True)
        return {t: self._drop_eos(x) for t, x in zip(unique, ids, strict=True)}

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        return _encode_many(self.tokenizer, texts, special=False)


@dataclass
class _QuestionText:
    """One log-likelihood question as text, before tokenization."""

    index: int
    preamble: str
    contexts: list[str]  # each is tokenized after the preamble's tokens
    continuations: list[str]
    gold: int
    choice_texts: list[str]
    category: str | None


def _question_text(b: _PromptBuilder, idx: int, row: dict[str, Any]) -> _QuestionText:
    task = b.task
    pre_text = b.preamble(idx)
    category = row.get("category") if task.has_categories else None
    if task.icl_task_type == "schema":
        options = _schema_options(task, row, pre_text)
        cont = _with_space(row["continuation"], b.prefix_space)
        texts = list(row["context_options"])
        return _QuestionText(idx, pre_text, options, [cont], row["gold"], texts, category)
    ctx = b.context(row, pre_text, add_answer=False).rstrip()
    if task.icl_task_type == "multiple_choice":
        texts = list(row["choices"])
        gold = row["gold"]
    else:
        texts = [row["continuation"]]
        gold = 0
    conts = [_with_space(c, b.prefix_space) for c in texts]
    return _QuestionText(idx, pre_text, [ctx], conts, gold, texts, category)


def _schema_options(task: TaskConfig, row: dict[str, Any], pre_text: str) -> list[str]:
    if pre_text:
        delim = task.continuation_delimiter.rstrip()
        return [
            f"{task.question_prelimiter}{task.example_delimiter}{c}{delim}"
            for c in row["context_options"]
        ]
    return [f"{task.question_prelimiter}{c}" for c in row["context_options"]]


def build_loglikelihood_questions(
    task: TaskConfig, rows: list[dict[str, Any]], tokenizer: Tokenizer, count: int
) -> list[LoglikelihoodQuestion]:
    """Requests for the first ``count`` rows of a language_modeling, multiple_choice or schema task.

    All texts are built first and tokenized in two batched tokenizer calls (preambles, with
    special tokens; everything else, without), which is much faster than one call per string.
    """
    rows = [strip_row(r) for r in rows]
    b = _PromptBuilder(task, rows, tokenizer)
    drafts = [_question_text(b, idx, rows[idx]) for idx in range(count)]
    preambles = b.preamble_ids_many([d.preamble for d in drafts])
    pieces = b.encode_many([t for d in drafts for t in (*d.contexts, *d.continuations)])
    out: list[LoglikelihoodQuestion] = []
    k = 0
    for d in drafts:
        pre = preambles[d.preamble]
        contexts = [pre + ids for ids in pieces[k : k + len(d.contexts)]]
        k += len(d.contexts)
        conts = pieces[k : k + len(d.continuations)]
        k += len(d.continuations)
        out.append(
            LoglikelihoodQuestion(d.index, contexts, conts, d.gold, d.choice_texts, d.category)
        )
    return out


def build_generation_requests(
    task: TaskConfig, rows: list[dict[str, Any]], tokenizer: Tokenizer, count: int
) -> tuple[list[GenerationRequest], int]:
    """Prompts for the first ``count`` rows of a generation or code task, and max new tokens."""
    code = task.icl_task_type == "code_evaluation"
    if not code:
        rows = [strip_row(r) for r in rows]
    b = _PromptBuilder(task, rows, tokenizer)
    out: list[GenerationRequest] = []
    for idx in range(count):
        row = rows[idx]
        pre_text = b.preamble(idx)
        pre = b.preamble_ids(pre_text)
        if code:
            text = b.context(row, pre_text, add_answer=False)
            ids = pre + b.encode(text)
            answers: list[str] = []
        else:
            text = b.context(row, pre_text, add_answer=False).rstrip()
            ids = pre + b.encode(text)
            answers = list(dict.fromkeys([row["answer"], *row.get("aliases", [])]))
        category = row.get("category") if task.has_categories else None
        out.append(GenerationRequest(idx, ids, answers, category, pre_text + text, row))
    return out, _max_new_tokens(b, rows, code)


# Longest answer (in tokens) of each task file seen, per tokenizer: {tokenizer: {digest: longest}}.
_LONGEST_ANSWER: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


def _answer_texts(b: _PromptBuilder, rows: list[dict[str, Any]], code: bool) -> list[str]:
    """Every answer and alias of the whole file (llm-foundry sizes generation on all of them)."""
    if code:
        return [row.get("canonical_solution", "") for row in rows]
    texts: list[str] = []
    for row in rows:
        answers = [row["answer"], *row.get("aliases", [])]
        if b.has_cot:
            answers = [
                f"{row.get('chain_of_thought', '')}{b.task.cot_delimiter}{a}" for a in answers
            ]
        texts += answers
    return texts


def _token_counts(b: _PromptBuilder, texts: list[str]) -> list[int]:
    """Tokens in each of ``texts`` (no special tokens), from one batched call.

    A fast tokenizer's Rust backend is called directly: the same ids as ``tokenizer(texts)``
    without building a Python encoding object per text (about half the time).
    """
    backend = getattr(b.tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch"):
        return [len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in b.encode_many(texts)]


def _longest_answer(b: _PromptBuilder, texts: list[str]) -> int:
    """Tokens in the longest of ``texts``: tokenized in batched calls once per distinct set of
    texts and tokenizer, then cached (a task file's answers do not change between calls)."""
    digest = hashlib.sha1("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    try:
        cache = _LONGEST_ANSWER.setdefault(b.tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cache = {}
    if digest not in cache:
        unique = list(dict.fromkeys(texts))
        cache[digest] = max(
            max(_token_counts(b, unique[i : i + 8192])) for i in range(0, len(unique), 8192)
        )
    return cache[digest]


def _max_new_tokens(b: _PromptBuilder, rows: list[dict[str, Any]], code: bool) -> int:
    if b.task.max_new_tokens is not None:
        return b.task.max_new_tokens
    longest = _longest_answer(b, _answer_texts(b, rows, code))
    buffer = _ANSWER_BUFFER if (code or b.task.cot_delimiter) else 0
    return max(longest + buffer, 1)


def render_prompts(
    task: TaskConfig, rows: list[dict[str, Any]], tokenizer: Tokenizer, count: int
) -> list[dict[str, Any]]:
    """The text prompts foundry-eval scores for the first ``count`` rows (few-shot included).

    Useful to feed exactly the same prompts to another harness: language_modeling and
    multiple_choice rows get ``context`` (+ ``continuation`` / ``choices``, ``gold``), schema rows
    get the full ``context_options`` (+ ``continuation``, ``gold``). Continuations and choices are
    given without the leading space the scorer adds.
    """
    rows = [strip_row(r) for r in rows]
    b = _PromptBuilder(task, rows, tokenizer)
    out: list[dict[str, Any]] = []
    for idx in range(count):
        row = rows[idx]
        pre = b.preamble(idx)
        if task.icl_task_type == "schema":
            opts = _schema_options(task, row, pre)
            out.append(
                {
                    "context_options": [pre + o for o in opts],
                    "continuation": row["continuation"],
                    "gold": row["gold"],
                }
            )
            continue
        context = pre + b.context(row, pre, add_answer=False).rstrip()
        if task.icl_task_type == "multiple_choice":
            out.append({"context": context, "choices": list(row["choices"]), "gold": row["gold"]})
        else:
            out.append({"context": context, "continuation": row["continuation"]})
    return out
