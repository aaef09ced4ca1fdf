"""In-context-learning evaluation during training, through foundry-eval."""

from __future__ import annotations

from typing import Any

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

from foundry_train.callbacks.monitors import every
from foundry_train.config import TrainConfig
from foundry_train.data.tokenizer import load_tokenizer

__all__ = ["ICLEvalCallback"]


class ICLEvalCallback(Callback):
    """Scores the model on foundry-eval tasks every ``icl_eval.interval`` and at the end.

    Every rank runs the same batches (FSDP needs all ranks in each forward); rank 0 logs
    ``icl/<task>/<metric>``.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        assert cfg.icl_eval is not None
        self.cfg = cfg
        self.icl = cfg.icl_eval
        self.due = every(self.icl.interval)
        self.tasks: list[Any] = []
        self.tokenizer: Any = None
        self.last_batch = -1
        self.results: dict[str, dict[str, float]] = {}

    def fit_start(self, state: State, logger: Logger) -> None:
        import foundry_eval

        self.tasks = foundry_eval.load_tasks(self.icl.tasks, self.icl.data_root)
        self.tokenizer = load_tokenizer(self.cfg.tokenizer)

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.due(state, Event.BATCH_END):
            self._run(state, logger)

    def epoch_end(self, state: State, logger: Logger) -> None:
        if self.due(state, Event.EPOCH_END):
            self._run(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._run(state, logger)

    def _run(self, state: State, logger: Logger) -> None:
        import foundry_eval

        batch = int(state.timestamp.batch)
        if batch == self.last_batch:
            return
        self.last_batch = batch
        composer_model: Any = getattr(state.model, "module", state.model)
        network = composer_model.model
        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        with torch.no_grad():
            results = foundry_eval.evaluate(
                network,
                self.tokenizer,
                self.tasks,
                batch_size=self.icl.batch_size,
                device=device,
                progress=False,
                max_seq_len=self.cfg.max_seq_len,
                limit=self.icl.limit,
            )
        network.train(was_training)
        self.results = results.to_dict()
        if dist.get_global_rank() == 0:
            flat = {
                f"icl/{task}/{metric}": float(value)
                for task, metrics in self.results.items()
                if isinstance(metrics, dict)
                for metric, value in metrics.items()
                if isinstance(value, int | float)
            }
            logger.log_metrics(flat)
