"""Figures for fitted models: loss curves, sample grids, reconstructions, 2-D scatter.

Every function returns a :class:`matplotlib.figure.Figure`; the CLI saves them in the run
directory, notebooks display them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["plot_history", "image_grid", "plot_samples", "plot_reconstructions", "plot_khat"]


def _figure(width: float, height: float) -> Figure:
    # A bare Figure needs no GUI backend (scripts on servers, tests, CI).
    return Figure(figsize=(width, height))


def plot_history(history: dict[str, Sequence[float]], *, title: str = "training") -> Figure:
    """Per-epoch loss (and validation loss) against epochs."""
    fig = _figure(6, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax.plot(epochs, history.get("loss", []), label="train -ELBO / obs")
    if history.get("val_loss"):
        ax.plot(epochs[: len(history["val_loss"])], history["val_loss"], label="validation -ELBO / obs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per observation)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def image_grid(images: torch.Tensor, image_shape: Sequence[int], *, ncols: int | None = None,
               title: str | None = None, vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """Images ``(n, prod(image_shape))`` or ``(n, *image_shape)`` tiled in a grid."""
    arr = images.detach().cpu().reshape(images.shape[0], *image_shape).numpy()
    n = arr.shape[0]
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    h, w = image_shape[-2], image_shape[-1]
    canvas = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = arr[i].reshape(h, w)
    fig = _figure(0.45 * ncols + 0.5, 0.45 * nrows + 0.7)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas, cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def plot_samples(samples: torch.Tensor, *, image_shape: Sequence[int] | None = None,
                 reference: torch.Tensor | None = None, title: str = "samples") -> Figure:
    """Samples as an image grid (image data) or a scatter over the reference data (2-D data)."""
    if image_shape is not None:
        return image_grid(samples, image_shape, title=title)
    x = samples.detach().cpu().reshape(samples.shape[0], -1).numpy()
    fig = _figure(4.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if reference is not None:
        ref = reference.detach().cpu().reshape(reference.shape[0], -1).numpy()
        ax.scatter(ref[:, 0], ref[:, 1 % ref.shape[1]], s=2, alpha=0.3, color="grey", label="data")
    ax.scatter(x[:, 0], x[:, 1 % x.shape[1]], s=2, alpha=0.6, color="C0", label="samples")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    return fig


def plot_reconstructions(x: torch.Tensor, x_hat: torch.Tensor, image_shape: Sequence[int],
                         *, title: str = "data (odd rows) and reconstructions (even rows)") -> Figure:
    """Alternate rows of data and their reconstructions."""
    n = x.shape[0]
    ncols = min(n, 10)
    rows = []
    for start in range(0, n, ncols):
        rows.append(x[start : start + ncols])
        rows.append(x_hat[start : start + ncols])
    stacked = torch.cat([r.reshape(r.shape[0], -1) for r in rows])
    return image_grid(stacked, image_shape, ncols=ncols, title=title)


def plot_khat(khat: np.ndarray, *, title: str = "PSIS k-hat per observation") -> Figure:
    """Pareto k-hat of each observation with the 0.5 / 0.7 thresholds (Yao et al. 2018)."""
    k = np.atleast_1d(np.asarray(khat, dtype=float))
    fig = _figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = np.where(k >= 0.7, "C3", np.where(k >= 0.5, "C1", "C0"))
    ax.scatter(np.arange(len(k)), k, s=8, c=colours)
    for level, label in ((0.5, "0.5"), (0.7, "0.7")):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.text(len(k), level, label, va="bottom", ha="right", fontsize=8)
    ax.set_xlabel("observation")
    ax.set_ylabel("k-hat")
    ax.set_title(title)
    return fig
