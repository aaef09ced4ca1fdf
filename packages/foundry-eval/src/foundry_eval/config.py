"""Typed configuration: tasks, gauntlet and the eval run, parsed from YAML with pydantic v2."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from foundry_eval.errors import FoundryError
from foundry_eval.yaml_text import apply_overrides, read_yaml

__all__ = [
    "TASK_TYPES",
    "EvalConfig",
    "GauntletBenchmark",
    "GauntletCategory",
    "GauntletConfig",
    "ModelConfig",
    "OutputConfig",
    "TaskConfig",
    "TaskSpec",
    "apply_overrides",
    "format_validation_error",
    "parse_model",
    "read_yaml",
    "relative_data_path",
    "resolve_data_path",
]

TaskType = Literal[
    "language_modeling",
    "multiple_choice",
    "schema",
    "generation_task_with_answers",
    "code_evaluation",
]
TASK_TYPES: tuple[str, ...] = (
    "language_modeling",
    "multiple_choice",
    "schema",
    "generation_task_with_answers",
    "code_evaluation",
)
# llm-foundry spells the generation task type "question_answering" in some of its YAMLs.
M = TypeVar("M", bound=BaseModel)
_TASK_TYPE_ALIASES = {"question_answering": "generation_task_with_answers"}
# llm-foundry's dataset_uri values start with this; we read files relative to the user's data root.
_LLM_FOUNDRY_DATA_PREFIX = "eval/local_data/"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TaskFields(_Strict):
    """Fields shared by a task as written in YAML and a resolved task."""

    label: str
    dataset_uri: str
    icl_task_type: TaskType
    prompt_string: str = ""
    example_delimiter: str = "\n"
    continuation_delimiter: str = " "
    question_prelimiter: str = ""
    cot_delimiter: str = ""
    early_stopping_criteria: list[str] | None = None
    do_normalization: bool = True
    has_categories: bool = False
    pass_at_k: list[int] = Field(default_factory=lambda: [1])
    generations_per_sample: int = 1
    temperature: float = 0.2
    max_new_tokens: int | None = None
    fewshot_random_seed: int = 1234
    limit: int | None = Field(default=None, ge=1)

    @field_validator("icl_task_type", mode="before")
    @classmethod
    def _alias_task_type(cls, value: Any) -> Any:
        return _TASK_TYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("pass_at_k", mode="before")
    @classmethod
    def _listify_k(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _enough_samples_for_pass_at_k(self) -> _TaskFields:
        if self.icl_task_type != "code_evaluation":
            return self
        if not self.pass_at_k or min(self.pass_at_k) < 1:
            raise ValueError(f"pass_at_k must list k values of at least 1, got {self.pass_at_k}")
        if max(self.pass_at_k) > self.generations_per_sample:
            raise ValueError(
                f"pass_at_k {self.pass_at_k} needs at least {max(self.pass_at_k)} generations "
                f"per problem, but generations_per_sample is {self.generations_per_sample}: "
                "raise generations_per_sample or drop the larger k"
            )
        return self


class TaskSpec(_TaskFields):
    """One entry of ``icl_tasks`` in a task YAML (llm-foundry's schema; num_fewshot may be a list)."""

    num_fewshot: list[int] = Field(default_factory=lambda: [0])
    # Accepted for compatibility with llm-foundry YAMLs; foundry-eval batches on its own.
    batch_size: int | None = None
    num_beams: int | None = None
    post_processing_funcs: list[dict[str, Any]] | None = None

    @field_validator("num_fewshot", mode="before")
    @classmethod
    def _listify_shots(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class TaskConfig(_TaskFields):
    """One task at one few-shot setting, with its data file resolved.

    ``name`` (``"<label>/<n>-shot"``) keys the results.
    """

    num_fewshot: int = 0
    data_path: str = ""

    @property
    def name(self) -> str:
        return f"{self.label}/{self.num_fewshot}-shot"

    def is_available(self) -> bool:
        """Whether the task's data file exists (object-store paths are assumed present)."""
        return "://" in self.data_path or Path(self.data_path).is_file()


class GauntletBenchmark(_Strict):
    name: str
    num_fewshot: int
    random_baseline: float = Field(ge=0.0, lt=1.0)
    metric: str | None = None


class GauntletCategory(_Strict):
    name: str
    benchmarks: list[GauntletBenchmark]


class GauntletConfig(_Strict):
    """Categories, weights and random baselines (llm-foundry's ``eval_gauntlet`` schema)."""

    weighting: Literal["EQUAL", "SAMPLE_SZ", "LOG_SAMPLE_SZ"] = "EQUAL"
    subtract_random_baseline: bool = True
    rescale_accuracy: bool = True
    averages: dict[str, list[str]] = Field(default_factory=dict)
    categories: list[GauntletCategory]
    # Metric used for multiple-choice and schema tasks: llm-foundry's gauntlet uses its
    # mean-per-token-loss accuracy (``acc_foundry``); ``acc`` / ``acc_norm`` are lm-eval's.
    mc_metric: Literal["acc_foundry", "acc", "acc_norm"] = "acc_foundry"

    @model_validator(mode="after")
    def _averages_name_categories(self) -> GauntletConfig:
        known = [c.name for c in self.categories]
        for name, cats in self.averages.items():
            unknown = [c for c in cats if c not in known]
            if unknown:
                raise ValueError(
                    f"average '{name}' lists {', '.join(repr(c) for c in unknown)}, not a "
                    f"category of this gauntlet (its categories: {', '.join(known)})"
                )
        return self


class ModelConfig(_Strict):
    path: str
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False


class OutputConfig(_Strict):
    json_path: str | None = Field(default=None, alias="json")
    markdown: str | None = None
    png: str | None = None
    log_samples: bool = False
    overwrite: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EvalConfig(_Strict):
    """A whole eval run (the CLI's CONFIG.yaml)."""

    model: ModelConfig
    # None: the download cache (foundry_eval.task_data), filled on demand.
    data_root: str | None = None
    tasks: str | list[dict[str, Any]] = "gauntlet_v0.3"
    gauntlet: str | dict[str, Any] | None = "gauntlet_v0.3"
    task_names: list[str] | None = None
    num_fewshot: int | None = None
    batch_size: int = Field(default=16, ge=1)
    device: str = "auto"
    num_gpus: int | None = None
    max_seq_len: int | None = None
    limit: int | None = Field(default=None, ge=1)
    share_prefix: bool = True
    allow_code_execution: bool = False
    seed: int = 1234
    progress: bool = True
    output: OutputConfig = Field(default_factory=OutputConfig)


def _expected_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (for the did-you-mean of unknown keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        current = None
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = getattr(candidate, "__args__", (candidate,))
            for c in (candidate, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
    if current is None:
        return []
    names: list[str] = []
    for name, field in current.model_fields.items():
        names.append(field.alias or name)
    return names


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], where: str, prefix: str = ""
) -> str:
    """All problems at once: dotted key, what was expected, what was given, did-you-mean."""
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "<root>"
        if err["type"] == "extra_forbidden":
            options = _expected_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), options, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"unknown key '{key}'{hint}; allowed here: {', '.join(sorted(options))}")
        else:
            given = err.get("input")
            given_s = repr(given)
            if len(given_s) > 80:
                given_s = given_s[:77] + "..."
            lines.append(f"'{key}': {err['msg']} (given {given_s})")
    return f"invalid {where}: " + "; ".join(lines) + ". Fix these keys and retry."


def parse_model(model: type[M], data: Any, where: str, prefix: str = "") -> M:
    """Validate ``data`` into ``model`` or raise FoundryError listing every problem.

    ``prefix`` is prepended to dotted keys in messages (e.g. ``icl_tasks[3]``).
    """
    if not isinstance(data, dict):
        raise FoundryError(f"invalid {where}: expected a mapping, got {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FoundryError(format_validation_error(exc, model, where, prefix)) from None


def relative_data_path(dataset_uri: str) -> str | None:
    """A task file's path relative to a data root (None for absolute paths and URLs)."""
    if "://" in dataset_uri or Path(dataset_uri).is_absolute():
        return None
    return dataset_uri.removeprefix(_LLM_FOUNDRY_DATA_PREFIX)


def resolve_data_path(dataset_uri: str, data_root: str | Path) -> str:
    """Map a task's dataset_uri onto the user's data root (local dir or object-store prefix)."""
    if "://" in dataset_uri or Path(dataset_uri).is_absolute():
        return dataset_uri
    rel = dataset_uri
    if rel.startswith(_LLM_FOUNDRY_DATA_PREFIX):
        rel = rel[len(_LLM_FOUNDRY_DATA_PREFIX) :]
    root = str(data_root)
    if "://" in root:
        return root.rstrip("/") + "/" + rel
    return str(Path(root) / rel)
