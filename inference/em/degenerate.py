"""The degenerate ends of an EM fit (THEORY T13), found in one pass over the data, chunk by chunk.

After :func:`~inference.em.loop.fit_em` the fitted model's responsibilities are summarised over
every row, on every rank, and the sums reduced, so that a streamed or distributed fit warns
exactly as an in-memory one:

- **identical** components ``j, k``: ``log r_ij - log r_ik`` is the same for every ``i``, so
  they receive proportional responsibilities forever. With ``c_ik = max(log r_ik, floor)``,
  centred as ``c_ik - m_k`` (``m_k`` the mean over ``i``), they are identical when
  ``max_i |(c_ij - m_j) - (c_ik - m_k)| <= atol (1 + max_ik |c_ik - m_k|)``. Both maxima follow
  from the extrema of ``c_ij - c_ik`` and of ``c_ik`` and the sums ``sum_i c_ik``
  (``max_i |d_i - mean d| = max(max d - mean d, mean d - min d)``), which chunks and ranks
  combine exactly;
- **empty** components: ``N_k = sum_i r_ik`` below :data:`EMPTY_COMPONENT_MASS`;
- **collapsed** components (the model's ``collapsed_components``): a variance held up by
  ``reg_covar`` alone, judged against the data's mean per-feature variance.

During the fit, :func:`worst_rows` finds the observations that re-seed a component an M-step
could not go on with (:mod:`vi_models.mixtures.degenerate`): the lowest ``log p(x_i)`` over every
rank, the same on each.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from inference.engine import distributed
from vi_models.errors import DegenerateFitWarning
from vi_models.mixtures.chunks import sub_chunks

from .sources import RowSource, model_device
from .steps import e_step

__all__ = ["EMPTY_COMPONENT_MASS", "ComponentSummary", "identical_component_groups", "summarise", "warn_degenerate",
           "worst_rows"]

#: A component whose total responsibility is below this many observations counts as empty.
EMPTY_COMPONENT_MASS = 1e-6


class ComponentSummary:
    """Sums and extrema over rows of the log-responsibilities ``(K, n)`` and the data ``(n, d)``."""

    def __init__(self, n_components: int, n_rows: int, shift: Tensor) -> None:
        k, f = n_components, {"dtype": torch.float64, "device": shift.device}
        self.shift = shift
        # a floor on log r that stays finite when summed over every row
        self.floor = torch.finfo(torch.float64).min / 4 / max(n_rows, 1)
        self.sums = {"c": torch.zeros(k, **f), "mass": torch.zeros(k, **f), "n": torch.zeros(1, **f),
                     "x": torch.zeros_like(shift, **f), "x2": torch.zeros_like(shift, **f)}
        inf = float("inf")
        self.lows = {"c": torch.full((k,), inf, **f), "d": torch.full((k, k), inf, **f)}
        self.highs = {"c": torch.full((k,), -inf, **f), "d": torch.full((k, k), -inf, **f)}

    def update(self, log_resp: Tensor, x: Tensor) -> None:
        """Add a chunk: ``log r`` ``(K, n)`` and its rows ``x`` ``(n, d)``."""
        c = log_resp.double().clamp_min(self.floor)  # (K, n)
        xc = x.double() - self.shift
        for name, value in (("c", c.sum(-1)), ("mass", log_resp.double().exp().sum(-1)), ("x", xc.sum(0)),
                            ("x2", xc.square().sum(0))):
            self.sums[name] += value
        self.sums["n"] += x.shape[0]
        self.lows["c"] = torch.minimum(self.lows["c"], c.amin(-1))
        self.highs["c"] = torch.maximum(self.highs["c"], c.amax(-1))
        for j in range(c.shape[0]):  # row j of the extrema of c_j - c_k: (K, n) at a time, not (K, K, n)
            d = c[j] - c
            self.lows["d"][j] = torch.minimum(self.lows["d"][j], d.amin(-1))
            self.highs["d"][j] = torch.maximum(self.highs["d"][j], d.amax(-1))

    def reduce(self) -> None:
        """Combine the ranks' summaries (sums by all-reduce, extrema by gathering them)."""
        if not distributed.is_distributed():
            return
        keys = sorted(self.sums)
        flat = distributed.all_reduce_sum(torch.cat([self.sums[k].reshape(-1) for k in keys]))
        offset = 0
        for k in keys:
            self.sums[k] = flat[offset : offset + self.sums[k].numel()].view_as(self.sums[k])
            offset += self.sums[k].numel()
        gathered = distributed.all_gather_objects(({k: v.cpu() for k, v in self.lows.items()},
                                                   {k: v.cpu() for k, v in self.highs.items()}))
        for k in self.lows:
            dev = self.lows[k].device
            self.lows[k] = torch.stack([g[0][k] for g in gathered]).amin(0).to(dev)
            self.highs[k] = torch.stack([g[1][k] for g in gathered]).amax(0).to(dev)

    def identical_groups(self, atol: float = 1e-9) -> list[list[int]]:
        """Groups (size >= 2) of components with the same density (module docstring)."""
        mean = self.sums["c"] / self.sums["n"]  # (K,)
        spread = torch.maximum(self.highs["c"] - mean, mean - self.lows["c"]).amax()
        gap = mean.unsqueeze(-1) - mean.unsqueeze(0)  # (K, K): m_j - m_k
        deviation = torch.maximum(self.highs["d"] - gap, gap - self.lows["d"])
        same = deviation <= atol * (1 + spread)
        groups, seen = [], set()
        for k in range(same.shape[0]):
            if k in seen:
                continue
            members = torch.nonzero(same[k]).flatten().tolist()
            seen.update(members)
            if len(members) > 1:
                groups.append(members)
        return groups

    def data_variance(self) -> float:
        """Mean over features of the unbiased per-feature variance of the rows."""
        n = float(self.sums["n"])
        return float(((self.sums["x2"] - self.sums["x"].square() / n) / max(n - 1, 1)).mean())


def identical_component_groups(log_resp: Tensor, atol: float = 1e-9) -> list[list[int]]:
    """Groups (size >= 2) of components with the same density, from in-memory ``log r`` ``(K, N)``.

    Such components receive proportional responsibilities forever, so EM keeps them
    identical (THEORY T13).
    """
    summary = ComponentSummary(log_resp.shape[0], log_resp.shape[1], torch.zeros(1, device=log_resp.device))
    summary.update(log_resp, torch.zeros(log_resp.shape[1], 1, device=log_resp.device))
    return summary.identical_groups(atol)


@torch.no_grad()
def summarise(model: Any, source: RowSource, *, n_components: int, depth: int, shift: Tensor) -> ComponentSummary:
    """The fitted model's :class:`ComponentSummary` over this rank's rows (sub-chunk by sub-chunk:
    :mod:`vi_models.mixtures.chunks`), reduced over the ranks."""
    summary = ComponentSummary(n_components, source.n_rows, shift.double())
    for _, x in source.chunks():
        for rows in sub_chunks(x.shape[0], n_components):
            summary.update(e_step(model, x[rows], max_plate_nesting=depth)[1], x[rows])
        del x  # before the next chunk is read
    summary.reduce()
    return summary


@torch.no_grad()
def worst_rows(model: Any, source: RowSource, m: int, *, depth: int, n_components: int) -> tuple[list[int], Tensor]:
    """The ``m`` observations of all ranks with the lowest ``log p(x_i)`` under the model: their rows
    (ties to the lower row) and values ``(m, D)``, the same on every rank.

    Each rank keeps its own ``m`` lowest ``(log p, row, x)`` over its shard; one gather of those
    (``m (D + 2)`` numbers per rank) lets every rank pick the same ``m``.
    """
    values, rows, points = [], [], []
    for offset, x in source.chunks():
        for part in sub_chunks(x.shape[0], n_components):
            log_norm = e_step(model, x[part], max_plate_nesting=depth)[0].double().nan_to_num(nan=-math.inf)
            low = torch.topk(log_norm, min(m, log_norm.shape[0]), largest=False).indices
            values += log_norm[low].tolist()
            rows += (offset + part.start + low).tolist()
            points.append(x[part][low].cpu())
        del x
    order = sorted(range(len(rows)), key=lambda i: (values[i], rows[i]))[:m]
    mine = [(values[i], rows[i]) for i in order], torch.cat(points)[order]
    candidates = distributed.all_gather_objects(mine) if distributed.is_distributed() else [mine]
    chosen = sorted((v, r, rank, j) for rank, (pairs, _) in enumerate(candidates) for j, (v, r) in enumerate(pairs))[:m]
    points = torch.stack([candidates[rank][1][j] for _, _, rank, j in chosen])
    return [r for _, r, _, _ in chosen], points.to(model_device(model))


def warn_degenerate(model: Any, summary: ComponentSummary, reg_covar: float) -> None:
    """Name the identical, collapsed and empty components of a fitted model (THEORY T13)."""
    groups = summary.identical_groups()
    if groups:
        warnings.warn(
            f"components {groups} are identical (every observation gives them proportional responsibilities); "
            "components that start identical stay identical under EM. Initialise with init='k-means++' or "
            "'random_from_data', or give distinct initial means",
            DegenerateFitWarning,
            stacklevel=3,
        )
    empty = torch.nonzero(summary.sums["mass"] < EMPTY_COMPONENT_MASS).flatten().tolist()
    if empty:
        warnings.warn(
            f"component(s) {empty} are empty (total responsibility below {EMPTY_COMPONENT_MASS:g} observations): "
            "their weight is ~0 and their parameters are not informed by the data; lower n_components or use "
            "n_init > 1",
            DegenerateFitWarning,
            stacklevel=3,
        )
    collapsed = getattr(model, "collapsed_components", None)
    if callable(collapsed) and float(summary.sums["n"]) > 1:
        names = [k for k in collapsed(reg_covar, data_variance=summary.data_variance()) if k not in empty]
        if names:
            warnings.warn(
                f"component(s) {names} collapsed onto a single point: their variance "
                + (f"sits at the reg_covar={reg_covar:g} floor" if reg_covar > 0 else "went to 0")
                + " (the likelihood would grow without bound); increase reg_covar, lower n_components, or "
                "initialise away from outliers",
                DegenerateFitWarning,
                stacklevel=3,
            )
