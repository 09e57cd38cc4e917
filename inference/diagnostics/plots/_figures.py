"""Helpers the figures share: a bare :class:`~matplotlib.figure.Figure` (no pyplot), the axes to
draw into (given or new) and the figure that holds them, and inputs as validated numpy copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vi_models.errors import DataError


def _figure(width: float, height: float) -> Figure:
    # A bare Figure needs no GUI backend (scripts on servers, tests, CI).
    return Figure(figsize=(width, height))


def _array(value: Any, name: str) -> np.ndarray:
    """A finite float numpy copy of a tensor, array or nested sequence (never the caller's)."""
    if isinstance(value, torch.Tensor):
        arr = value.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.array(value, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataError(f"expected {name} to be numeric (a tensor, array or sequence), got "
                            f"{type(value).__name__}: {exc}") from None
    if arr.size and not np.all(np.isfinite(arr)):
        raise DataError(f"expected finite {name}, got NaN/inf at {int((~np.isfinite(arr)).sum())} entries; "
                        "drop or fix them before plotting")
    return arr


def _axes(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    if ax is None:
        fig = _figure(width, height)
        return fig, fig.add_subplot(1, 1, 1)
    return _root_figure(ax), ax


def _root_figure(ax: Axes) -> Figure:
    fig = ax.get_figure()
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's parent chain ends at the Figure
        fig = fig.figure
    return fig
