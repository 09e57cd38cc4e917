"""Gaussian mixtures in 2-D: the data with each component's ellipses of equal Mahalanobis
distance, from any of scikit-learn's covariance layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from vi_models.errors import ConfigError, DataError

from ._figures import _array, _axes


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
