"""What :func:`inference.fit` returns: the fitted pair, the training history and its verdicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .convergence import ConvergenceReport

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model, guide: the fitted modules (trained in place; returned for convenience).
        history: per-epoch records: ``"loss"`` (training -ELBO per observation, averaged over
            the epoch), ``"val_loss"`` (validation -ELBO per observation, if validation data
            was given), ``"lr"``, ``"beta"``, ``"time"`` (seconds since the start).
        epochs_run: epochs completed in total (including epochs before a resume).
        best_epoch: the epoch (1-based) whose monitored loss was lowest.
        stopped_early: early stopping or a callback ended training.
        elapsed: wall-clock seconds of this call.
        num_train: number of training observations.
        config: the JSON-able arguments of the call (loss name, lr, batch size, ...).
        converged_: the verdict of :func:`inference.engine.convergence.elbo_converged` on the last
            per-step losses (``history["step_loss"]``); a :class:`ConvergenceWarning` is issued
            when it is False.
        convergence: the full :class:`~inference.engine.convergence.ConvergenceReport`.
    """

    model: Callable
    guide: Callable | None
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    elapsed: float
    num_train: int
    config: dict[str, Any] = field(default_factory=dict)
    converged_: bool | None = None
    convergence: ConvergenceReport | None = None

    @property
    def final_loss(self) -> float:
        """Training loss (-ELBO per observation) of the last epoch."""
        return self.history["loss"][-1] if self.history["loss"] else float("nan")

    def log_likelihood(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Per-observation log p(x) estimates for ``data``; see :func:`inference.log_likelihood`."""
        from .likelihood import log_likelihood

        return log_likelihood(self.model, self.guide, data, **kwargs)
