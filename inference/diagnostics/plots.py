"""Figures for fitted models: loss and ELBO-term curves, DDPM bound terms, sample grids,
reconstructions, mixture ellipses, latent scatter, diffusion trajectories, PSIS k-hat.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (safe on the
Agg backend, on servers and in tests); the CLI saves them in the run directory, notebooks
display them. The newer functions take ``ax=None`` to draw into an existing axes, validate
their inputs (:class:`inference.errors.DataError` with the expected and the given shapes) and
never modify them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from vi_models.errors import ConfigError, DataError

__all__ = [
    "plot_history",
    "image_grid",
    "plot_samples",
    "plot_reconstructions",
    "plot_khat",
    "plot_elbo_terms",
    "plot_vlb_terms",
    "plot_mixture_ellipses",
    "plot_latent_scatter",
    "plot_diffusion_trajectories",
]


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


# --------------------------------------------------------------------------- helpers of the new plots


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


# --------------------------------------------------------------------------- ELBO terms


def _term_kind(name: str) -> str:
    return name.split(":", 1)[0] if ":" in name else ""


def plot_elbo_terms(terms: Mapping[str, Sequence[float]], *, ax: Axes | None = None) -> Figure:
    """Reconstruction term and KL per latent site against epochs (THEORY T2).

    Args:
        terms: name -> per-epoch values, as recorded by :class:`inference.elbo_terms.ElboTerms`
            (its ``history``): keys ``"reconstruction:<site>"`` (E_q[log p(x|z)] per observation,
            drawn on the left axis) and ``"kl:<site>"`` (KL(q || p) per observation, drawn on a
            second axis on the right, whose scale is usually much smaller). An ``"epoch"`` key,
            if present, gives the x values (default 1, 2, ...). Other keys are drawn on the left
            axis under their own name.
        ax: axes to draw on (a new figure when None).

    Returns:
        The figure.

    Raises:
        DataError: no terms, sequences of different lengths, or non-finite values.
    """
    if not isinstance(terms, Mapping) or not terms:
        raise DataError(f"expected terms to be a non-empty mapping name -> per-epoch values, got {terms!r}; "
                        "pass ElboTerms(...).history")
    curves = {str(k): _array(v, f"terms[{k!r}]").reshape(-1) for k, v in terms.items()}
    lengths = {k: len(v) for k, v in curves.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(f"expected every term to have the same non-zero number of epochs, got lengths {lengths}")
    epochs = curves.pop("epoch", np.arange(1, next(iter(lengths.values())) + 1))
    if not curves:
        raise DataError("expected at least one term besides 'epoch', got none")
    fig, ax = _axes(ax, 6.5, 3.8)
    marker = "o" if len(epochs) < 30 else None
    kl = {k: v for k, v in curves.items() if _term_kind(k) == "kl"}
    left = {k: v for k, v in curves.items() if k not in kl}
    handles = []
    for i, (name, values) in enumerate(left.items()):
        label = f"E_q[log p(x|z)] at {name.split(':', 1)[1]!r}" if _term_kind(name) == "reconstruction" else name
        handles += ax.plot(epochs, values, color=f"C{i}", marker=marker, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reconstruction (nats / observation)")
    ax.grid(alpha=0.3)
    if kl:
        right = ax.twinx() if left else ax
        for j, (name, values) in enumerate(kl.items()):
            handles += right.plot(epochs, values, color=f"C{len(left) + j}", ls="--", marker=marker,
                                  label=f"KL(q || p) at {name.split(':', 1)[1]!r}")
        right.set_ylabel("KL (nats / observation)")
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best", fontsize=8)
    ax.set_title("ELBO = reconstruction - sum of KL terms")
    return fig


# --------------------------------------------------------------------------- DDPM bound terms


def plot_vlb_terms(terms: torch.Tensor | np.ndarray, *, ax: Axes | None = None, log: bool = True) -> Figure:
    """Per-timestep terms L_0, ..., L_T of the DDPM bound (THEORY T18), averaged over observations.

    Args:
        terms: ``(T + 1,)`` or ``(B, T + 1)`` as returned by :meth:`vi_models.DDPM.vlb_terms`:
            column 0 the decoder term L_0 = -log p(x_0 | x_1), columns 1..T-1 the KL terms
            L_{t-1}, column T the prior term L_T; a batch is averaged over ``B``.
        ax: axes to draw on (a new figure when None).
        log: logarithmic y axis (symmetric-log when a term is <= 0, as L_0 of continuous data
            can be).

    Returns:
        The figure; the title carries the total L_VLB (nats per observation).

    Raises:
        DataError: ``terms`` not of shape ``(T + 1,)`` or ``(B, T + 1)`` with T >= 1, or non-finite.
    """
    arr = _array(terms, "terms")
    if arr.ndim not in (1, 2) or arr.shape[-1] < 2 or (arr.ndim == 2 and arr.shape[0] == 0):
        raise DataError(f"expected terms of shape (T + 1,) or (B, T + 1) with T >= 1, got {arr.shape}; "
                        "pass model.vlb_terms(x) (B, T + 1) or its mean over the batch")
    mean = arr.mean(0) if arr.ndim == 2 else arr
    t = np.arange(mean.shape[0])
    fig, ax = _axes(ax, 6.5, 3.8)
    ax.plot(t[1:-1], mean[1:-1], color="C0", lw=1.2, label="L_t = KL(q(x_t|x_t+1,x_0) || p(x_t|x_t+1))")
    ax.plot([0], mean[:1], "o", color="C1", label=f"L_0 = -log p(x_0|x_1): {mean[0]:.3g}")
    ax.plot([t[-1]], mean[-1:], "s", color="C2", label=f"L_T = KL(q(x_T|x_0) || p(x_T)): {mean[-1]:.3g}")
    if log:
        if np.all(mean > 0):
            ax.set_yscale("log")
        else:
            positive = np.abs(mean[mean != 0])
            ax.set_yscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax.set_xlabel("t")
    ax.set_ylabel("nats / observation")
    ax.set_title(f"L_VLB = sum_t L_t = {mean.sum():.4g} nats"
                 + (f" (mean of {arr.shape[0]} observations)" if arr.ndim == 2 else ""))
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


# --------------------------------------------------------------------------- mixtures


def _full_covariances(cov: np.ndarray, k: int, covariance_type: str | None) -> np.ndarray:
    """``(K, 2, 2)`` from scikit-learn's layouts: full ``(K,2,2)``, tied ``(2,2)``, diag ``(K,2)``, spherical ``(K,)``."""
    shapes = {"full": (k, 2, 2), "tied": (2, 2), "diag": (k, 2), "spherical": (k,)}
    if covariance_type is None:
        matches = [name for name, shape in shapes.items() if cov.shape == shape]
        if len(matches) > 1:
            raise DataError(f"covariances of shape {cov.shape} are ambiguous for K={k} components (diag or tied); "
                            "pass covariance_type='diag' or 'tied'")
        if not matches:
            raise DataError(f"expected covariances of shape {shapes['full']} (full), {shapes['tied']} (tied), "
                            f"{shapes['diag']} (diag) or {shapes['spherical']} (spherical) for K={k} components "
                            f"in 2-D, got {cov.shape}")
        covariance_type = matches[0]
    if covariance_type not in shapes:
        raise ConfigError(f"expected covariance_type in {tuple(shapes)}, got {covariance_type!r}")
    if cov.shape != shapes[covariance_type]:
        raise DataError(f"expected {covariance_type} covariances of shape {shapes[covariance_type]}, got {cov.shape}")
    if covariance_type == "full":
        full = cov
    elif covariance_type == "tied":
        full = np.broadcast_to(cov, (k, 2, 2))
    elif covariance_type == "diag":
        full = np.stack([np.diag(row) for row in cov])
    else:
        full = cov[:, None, None] * np.eye(2)
    if not np.allclose(full, np.swapaxes(full, -1, -2), atol=1e-8) or np.any(np.linalg.eigvalsh(full)[:, 0] <= 0):
        raise DataError("expected symmetric positive-definite covariances; got a matrix with a non-positive "
                        "eigenvalue or asymmetry (pass covariances, not precisions or Cholesky factors)")
    return full


def plot_mixture_ellipses(
    x: torch.Tensor | np.ndarray,
    means: torch.Tensor | np.ndarray,
    covariances: torch.Tensor | np.ndarray,
    weights: torch.Tensor | np.ndarray | None = None,
    *,
    ax: Axes | None = None,
    n_std: Sequence[float] = (1.0, 2.0),
    covariance_type: Literal["full", "diag", "spherical", "tied"] | None = None,
) -> Figure:
    """2-D data with the ellipses ``(y - mu_k)^T Sigma_k^-1 (y - mu_k) = r^2`` of each component.

    Args:
        x: data ``(N, 2)``.
        means: ``(K, 2)``.
        covariances: ``(K, 2, 2)`` or scikit-learn's other layouts (tied ``(2, 2)``, diag
            ``(K, 2)``, spherical ``(K,)``), e.g. :attr:`vi_models.GaussianMixture.covariances`.
        weights: mixing weights ``(K,)``; they set each component's opacity and label.
        ax: axes to draw on (a new figure when None).
        n_std: radii r, in standard deviations, of the ellipses drawn per component.
        covariance_type: the layout of ``covariances`` when its shape is ambiguous (K = 2,
            shape ``(2, 2)``); inferred from the shape otherwise.

    Returns:
        The figure: one scatter of the data, ``K * len(n_std)`` ellipse patches, the means as
        crosses.

    Raises:
        DataError: shapes that do not match, data that is not 2-D, non-finite values,
            covariances that are not positive definite, or weights that are not a distribution.
    """
    xs = _array(x, "x")
    mu = _array(means, "means")
    if xs.ndim != 2 or xs.shape[1] != 2:
        raise DataError(f"expected x of shape (N, 2), got {xs.shape}; mixture ellipses need 2-D data "
                        "(project higher-dimensional data first, e.g. to two features)")
    if mu.ndim != 2 or mu.shape[1] != 2:
        raise DataError(f"expected means of shape (K, 2), got {mu.shape}")
    k = mu.shape[0]
    cov = _full_covariances(_array(covariances, "covariances"), k, covariance_type)
    w = None
    if weights is not None:
        w = _array(weights, "weights").reshape(-1)
        if w.shape != (k,) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-4:
            raise DataError(f"expected weights of shape ({k},), non-negative, summing to 1; got shape {w.shape} "
                            f"summing to {w.sum():.4g}")
    radii = [float(r) for r in np.atleast_1d(np.asarray(n_std, dtype=float))]
    if not radii or any(not (r > 0 and math.isfinite(r)) for r in radii):
        raise ConfigError(f"expected n_std to be positive numbers, got {n_std!r}")
    fig, ax = _axes(ax, 5.0, 4.5)
    ax.scatter(xs[:, 0], xs[:, 1], s=4, alpha=0.4, color="grey", label="data")
    evals, evecs = np.linalg.eigh(cov)  # ascending eigenvalues: (K, 2), columns of (K, 2, 2)
    for j in range(k):
        colour = f"C{j % 10}"
        alpha = 0.35 + 0.65 * (w[j] / w.max() if w is not None and w.max() > 0 else 1.0)
        major = evecs[j][:, 1]
        angle = math.degrees(math.atan2(major[1], major[0]))
        for r in radii:
            # semi-axes r sqrt(lambda): the width/height of matplotlib's Ellipse are full axes
            ax.add_patch(Ellipse(mu[j], 2 * r * math.sqrt(evals[j, 1]), 2 * r * math.sqrt(evals[j, 0]),
                                 angle=angle, fill=False, lw=1.5, edgecolor=colour, alpha=alpha))
        label = f"component {j}" + (f" (pi = {w[j]:.2f})" if w is not None else "")
        ax.plot(mu[j, 0], mu[j, 1], "x", color=colour, ms=8, mew=2, label=label)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_title(f"{k} components, ellipses at {', '.join(f'{r:g}' for r in radii)} standard deviations")
    if k <= 12:
        ax.legend(loc="best", fontsize=7, markerscale=0.8)
    return fig


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
