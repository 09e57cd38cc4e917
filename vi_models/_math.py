"""Numerical helpers shared by the models and the engine (below both layers)."""

from __future__ import annotations

import math

import torch

__all__ = ["logmeanexp"]


def logmeanexp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log mean exp along ``dim``, stable (THEORY T33: shift by the max before exponentiating).

    Parameters
    ----------
    x
        Any shape; ``x.shape[dim] >= 1``.
    dim
        The dimension averaged over.

    Returns
    -------
    Tensor
        ``x``'s shape without ``dim``.

    Examples
    --------
    >>> float(logmeanexp(torch.tensor([0.0, 0.0])))
    0.0
    """
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])
