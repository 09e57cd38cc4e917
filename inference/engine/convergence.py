"""A noise-robust convergence verdict for stochastic optimisation of the ELBO.

SVI losses are noisy, so "the loss stopped changing" is a statistical statement. Over the
last ``window`` steps the per-step losses are grouped into ``num_batches`` consecutive batch
means (which removes most of the autocorrelation of successive steps), and a least-squares
line is fitted to them. The fit is declared converged when the predicted change over the
window is not significantly negative (a t-statistic above ``-z``), or is smaller than ``rtol``
times the loss's magnitude: the stationarity idea of Pflug (1990), in the batch-means form
used for MCMC output analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ConvergenceReport", "elbo_converged"]


@dataclass(frozen=True)
class ConvergenceReport:
    """Outcome of :func:`elbo_converged`.

    Attributes:
        converged: the verdict.
        slope: fitted change of the loss per step over the window.
        t_statistic: slope divided by its standard error (negative: still decreasing).
        relative_change: |predicted change over the window| / |mean loss|.
        window: number of steps the verdict used.
        reason: the verdict in words.
    """

    converged: bool
    slope: float
    t_statistic: float
    relative_change: float
    window: int
    reason: str


def elbo_converged(
    losses: Sequence[float],
    *,
    window: int = 200,
    num_batches: int = 10,
    z: float = 2.0,
    rtol: float = 1e-3,
) -> ConvergenceReport:
    """Whether the last ``window`` per-step losses look stationary.

    Args:
        losses: per-step loss values, oldest first.
        window: how many of the most recent steps to test (fewer if fewer were run).
        num_batches: batch means the window is cut into (at least 3 are needed).
        z: significance threshold on the t-statistic of the slope.
        rtol: changes smaller than this fraction of the loss count as converged.

    Returns:
        A :class:`ConvergenceReport`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> elbo_converged(list(5.0 + rng.normal(size=400))).converged
        True
        >>> elbo_converged(list(np.linspace(10.0, 5.0, 400))).converged
        False
    """
    values = np.asarray(losses, dtype=float)[-window:]
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 3 * 2:
        return ConvergenceReport(False, float("nan"), float("nan"), float("nan"), n,
                                 f"too few steps ({n}) to judge convergence")
    b = max(3, min(num_batches, n // 2))
    size = n // b
    means = values[n - b * size :].reshape(b, size).mean(1)
    centres = (np.arange(b) + 0.5) * size
    x = centres - centres.mean()
    slope = float((x * (means - means.mean())).sum() / (x**2).sum())
    resid = means - means.mean() - slope * x
    se = math.sqrt(max(float((resid**2).sum()) / (b - 2), 1e-300) / float((x**2).sum()))
    t_stat = slope / se if se > 0 else (-math.inf if slope < 0 else math.inf)
    change = abs(slope) * b * size
    relative = change / max(abs(float(values.mean())), 1e-12)
    if t_stat > -z:
        return ConvergenceReport(True, slope, t_stat, relative, n, "no significant decrease over the window")
    if relative < rtol:
        return ConvergenceReport(True, slope, t_stat, relative, n,
                                 f"still decreasing, but by less than rtol={rtol:g} of the loss")
    return ConvergenceReport(False, slope, t_stat, relative, n,
                             f"the loss still decreases significantly (t = {t_stat:.1f}, "
                             f"{100 * relative:.2g}% over the last {n} steps)")
