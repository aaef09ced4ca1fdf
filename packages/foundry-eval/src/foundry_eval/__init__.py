"""foundry-eval: an in-context-learning eval harness and gauntlet for causal language models."""

from foundry_eval.config import EvalConfig, GauntletConfig, TaskConfig
from foundry_eval.errors import FoundryError
from foundry_eval.evaluate import evaluate
from foundry_eval.results import EvalResults, TaskResult
from foundry_eval.tasks import load_gauntlet, load_tasks

__all__ = [
    "EvalConfig",
    "EvalResults",
    "FoundryError",
    "GauntletConfig",
    "TaskConfig",
    "TaskResult",
    "evaluate",
    "load_gauntlet",
    "load_tasks",
]
__version__ = "0.1.0"
