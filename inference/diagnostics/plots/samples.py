"""Data, samples and latent codes: image grids, samples over the data, reconstructions, latent
scatter (PCA beyond two dimensions) and snapshots along a diffusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vi_models.errors import DataError

from ._figures import _array, _axes, _figure, _root_figure


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


# --------------------------------------------------------------------------- latent codes


def plot_latent_scatter(z: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence | None = None,
                        *, ax: Axes | None = None) -> Figure:
    """Latent codes ``(N, d)`` in the plane: the codes themselves for d = 2, their first two
    principal components for d > 2 (axis labels give the variance explained).

    Args:
        z: codes ``(N, d)``, d >= 2 (e.g. the encoder means ``guide.encode(x)[0]``).
        labels: ``(N,)`` class labels (colours and a legend, at most 20 classes) or numbers
            (a colour bar).
        ax: axes to draw on (a new figure when None).

    Returns:
        The figure.

    Raises:
        DataError: ``z`` not ``(N, d)`` with d >= 2, or ``labels`` of another length.
    """
    codes = _array(z, "z")
    if codes.ndim != 2 or codes.shape[1] < 2 or codes.shape[0] < 1:
        raise DataError(f"expected z of shape (N, d) with N >= 1 and d >= 2, got {codes.shape}; "
                        "for 1-D codes plot a histogram instead")
    d = codes.shape[1]
    if d > 2:
        centred = codes - codes.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T  # (N, 2)
        share = s**2 / max(float((s**2).sum()), np.finfo(float).tiny)
        axis_labels = [f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2)]
    else:
        xy, axis_labels = codes, ["z_1", "z_2"]
    fig, ax = _axes(ax, 5.0, 4.5)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7, color="C0")
    else:
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        lab = lab.reshape(-1)
        if lab.shape[0] != codes.shape[0]:
            raise DataError(f"expected labels of shape ({codes.shape[0]},) (one per code), got {lab.shape}")
        classes = np.unique(lab)
        # classes: integers, booleans, strings, or floats that are whole numbers (labels sent as floats)
        categorical = lab.dtype.kind in "iubUSO" or (lab.dtype.kind == "f" and bool(np.all(np.mod(lab, 1) == 0)))
        if categorical and len(classes) <= 20:
            cmap = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
            for i, c in enumerate(classes):
                keep = lab == c
                ax.scatter(xy[keep, 0], xy[keep, 1], s=6, alpha=0.7, color=cmap(i), label=str(c))
            ax.legend(loc="best", fontsize=7, markerscale=2, title="label")
        else:
            points = ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7, c=_array(lab, "labels"), cmap="viridis")
            fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(f"latent codes (d = {d}" + (", PCA to 2" if d > 2 else "") + ")")
    return fig


# --------------------------------------------------------------------------- diffusion


def plot_diffusion_trajectories(xs: torch.Tensor | np.ndarray, times: Sequence[float] | torch.Tensor | np.ndarray,
                                *, ax: Axes | None = None) -> Figure:
    """Snapshots of samples along a diffusion (forward noising or reverse sampling).

    Args:
        xs: ``(S, N, 2)``: N two-dimensional samples at each of the S ``times``, drawn as S
            scatter panels from left to right (with ``ax`` given: all in that axes, coloured by
            time, each sample's path as a thin line); or ``(S, N, H, W)`` images, drawn as one
            grid whose rows are the N samples and whose columns are the S times.
        times: ``(S,)`` the step (or time) of each snapshot, used as panel titles.
        ax: axes to draw on (a new figure when None).

    Returns:
        The figure.

    Raises:
        DataError: ``xs`` of another shape, ``times`` of another length, or non-finite values.
    """
    arr = _array(xs, "xs")
    steps = _array(times, "times").reshape(-1)
    if arr.ndim == 3 and arr.shape[-1] == 2:
        kind = "points"
    elif arr.ndim == 4:
        kind = "images"
    else:
        raise DataError(f"expected xs of shape (S, N, 2) (2-D samples) or (S, N, H, W) (images), got {arr.shape}; "
                        "reshape flat images to (S, N, H, W)")
    s, n = arr.shape[:2]
    if s < 1 or n < 1:
        raise DataError(f"expected at least one snapshot and one sample, got xs of shape {arr.shape}")
    if steps.shape[0] != s:
        raise DataError(f"expected {s} times (one per snapshot in xs of shape {arr.shape}), got {steps.shape[0]}")
    names = [f"t = {v:g}" for v in steps]
    if kind == "images":
        h, w = arr.shape[2:]
        canvas = np.full((n * (h + 1) - 1, s * (w + 1) - 1), np.nan)
        for i in range(n):
            for j in range(s):
                canvas[i * (h + 1): i * (h + 1) + h, j * (w + 1): j * (w + 1) + w] = arr[j, i]
        fig, ax = _axes(ax, max(3.5, 0.6 * s + 0.6), 0.6 * n + 0.8)
        lo, hi = np.nanmin(canvas), np.nanmax(canvas)
        ax.imshow(canvas, cmap="gray_r", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in range(s)], names, rotation=45, fontsize=7)
        ax.set_yticks([])
        ax.set_title("rows: samples; columns: steps", fontsize=9)
        return fig
    lo, hi = arr.reshape(-1, 2).min(0), arr.reshape(-1, 2).max(0)
    pad = 0.05 * np.maximum(hi - lo, 1e-12)
    if ax is not None:
        fig = _root_figure(ax)
        colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, s))
        for i in range(min(n, 200)):  # paths of the first samples, beneath the points
            ax.plot(arr[:, i, 0], arr[:, i, 1], color="grey", lw=0.3, alpha=0.4)
        for j in range(s):
            ax.scatter(arr[j, :, 0], arr[j, :, 1], s=4, color=colours[j], label=names[j])
        ax.legend(loc="best", fontsize=7, markerscale=2)
        ax.set_title("trajectories")
        return fig
    fig = _figure(2.6 * s, 2.9)
    for j in range(s):
        panel = fig.add_subplot(1, s, j + 1)
        panel.scatter(arr[j, :, 0], arr[j, :, 1], s=3, alpha=0.6, color="C0")
        panel.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        panel.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        panel.set_aspect("equal", adjustable="box")
        panel.set_title(names[j], fontsize=9)
        panel.tick_params(labelsize=7)
    return fig
