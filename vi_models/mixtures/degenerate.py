r"""Covariances that stop being positive definite: float64 factors, jitter retries, re-seeding.

A Gaussian component's covariance after the M-step is its empirical covariance plus
``reg_covar`` on the diagonal (scikit-learn's ``_estimate_gaussian_covariances_*``), in float64
(:mod:`.statistics`). :func:`factorize` takes its Cholesky factor (full, tied) or checks its
variances (diag, spherical) in float64 whatever the model's dtype, and where that fails retries
with a growing jitter

.. code-block:: text

    Sigma_k + tau I,    tau = s_k * 1e-12, 1e-10, 1e-8      s_k = mean of diag(Sigma_k)

(each jitter named in a :class:`NumericalJitterWarning`), as GPyTorch's ``psd_safe_cholesky``.
A component is **degenerate** (:func:`degenerate_components`) when no jitter of that ladder
helps, when its parameters are not finite, or when it has collapsed beyond what ``reg_covar``
holds up: ``s_k <= 1e-12`` times the data's mean per-feature variance (a point mass: with
``reg_covar = 0`` a component that owns one point, or identical points, has ``Sigma_k = 0`` up to
rounding). A component held up by ``reg_covar`` alone, ``Sigma_k = reg_covar I``, is not
degenerate: scikit-learn keeps it, and :func:`inference.fit_em` names it at the end.

:func:`replace_components` writes other means and covariances into the M-step's parameters for
such components: :func:`inference.fit_em` re-seeds them at the observations worst explained by the
current fit (the lowest ``log p(x_i)``, as VLFeat's GMM and scikit-learn's k-means relocate empty
clusters) with the pooled covariance of the healthy components (:func:`pooled_covariance`), or
keeps their previous parameters.
"""

from __future__ import annotations

import warnings
from typing import Final

import torch
from torch import Tensor

from vi_models.errors import DataError, DegenerateFitWarning

__all__ = [
    "COLLAPSE_RATIO",
    "JITTERS",
    "NumericalJitterWarning",
    "degenerate_components",
    "factorize",
    "pooled_covariance",
    "replace_components",
    "reseed_components",
]

#: Jitters tried, relative to the mean variance of the component, before giving up.
JITTERS: Final = (1e-12, 1e-10, 1e-8)
#: A component whose mean variance is at most this times the data's has collapsed onto a point.
COLLAPSE_RATIO: Final = 1e-12


class NumericalJitterWarning(DegenerateFitWarning):
    """A covariance was not positive definite in float64 and got a small jitter on its diagonal."""


def _batch(cov: Tensor, covariance: str) -> Tensor:
    """``cov`` in float64 as ``(K, d, d)`` (full, tied: K = 1) or ``(K, d)`` (diag; spherical: d = 1)."""
    c = cov.detach().double()
    if covariance in ("full", "tied"):
        return c.reshape(-1, c.shape[-1], c.shape[-1])
    return c.reshape(c.shape[0], -1)


def _scale(batch: Tensor) -> Tensor:
    """Mean variance ``s_k`` of each matrix or variance vector of a batch ``(K,)``."""
    return (batch.diagonal(dim1=-2, dim2=-1) if batch.dim() == 3 else batch).mean(-1)


def _try(batch: Tensor) -> tuple[Tensor, Tensor]:
    """(factor or variances, ok per item): Cholesky of ``(K, d, d)``, positivity of ``(K, d)``."""
    if batch.dim() == 3:
        factor, info = torch.linalg.cholesky_ex(batch)
        return factor, (info == 0) & torch.isfinite(factor).all(-1).all(-1)
    return batch, ((batch > 0) & torch.isfinite(batch)).all(-1)


def factorize(cov: Tensor, covariance: str) -> tuple[Tensor, list[int], dict[int, float]]:
    """Cholesky factors (full, tied) or checked variances (diag, spherical) in float64, with jitter.

    Args:
        cov: covariances in scikit-learn's layout: full ``(K, d, d)``, tied ``(d, d)``, diag
            ``(K, d)``, spherical ``(K,)``.
        covariance: the layout's name.

    Returns:
        ``(value, failed, jitter)``: ``value`` float64 in the layout of ``cov`` (``L`` with
        ``L L^T = Sigma + tau I`` for full and tied, the variances plus ``tau`` otherwise);
        ``failed``, the components that no jitter of :data:`JITTERS` made positive definite (their
        entries of ``value`` are not usable); ``jitter``, the ``tau`` added to each component that
        needed one (tied: component 0).
    """
    batch = _batch(cov, covariance)
    value, ok = _try(batch)
    value, jitter = value.clone(), {}
    scale = _scale(batch)
    for k in torch.nonzero(~ok).flatten().tolist():
        s = float(scale[k])
        if not (s > 0 and torch.isfinite(scale[k])):
            continue
        eye = torch.eye(batch.shape[-1], dtype=batch.dtype, device=batch.device) if batch.dim() == 3 else 1.0
        for relative in JITTERS:
            tried, good = _try(batch[k : k + 1] + relative * s * eye)
            if bool(good[0]):
                value[k], jitter[k] = tried[0], relative * s
                break
    failed = [k for k in torch.nonzero(~ok).flatten().tolist() if k not in jitter]
    return value.reshape(cov.shape), failed, jitter


def warn_jitter(jitter: dict[int, float], what: str, stacklevel: int = 3) -> None:
    """One :class:`NumericalJitterWarning` naming the jittered components and their jitter."""
    if jitter:
        named = ", ".join(f"{k}: {tau:.1e}" for k, tau in sorted(jitter.items()))
        warnings.warn(
            f"the {what} of component(s) {sorted(jitter)} is not positive definite in float64 (after reg_covar); "
            f"added a jitter to its diagonal ({named}); increase reg_covar, or scale the input data",
            NumericalJitterWarning,
            stacklevel=stacklevel,
        )


def raise_not_positive_definite(failed: list[int], what: str) -> None:
    """The :class:`~vi_models.errors.DataError` of covariances no jitter makes positive definite."""
    if failed:
        raise DataError(
            f"expected a positive definite {what} for every component, got component(s) {failed} whose {what} is "
            f"not, even with a jitter of up to {JITTERS[-1]:g} times its mean variance: the component collapsed onto "
            "a single point or a subspace (ill-defined empirical covariance); increase reg_covar (e.g. 1e-6), lower "
            "n_components, or scale the input data"
        )


def degenerate_components(params: dict[str, Tensor], covariance: str, *, data_variance: float) -> list[int]:
    """Components of an M-step's ``params`` that cannot go on (module docstring).

    Args:
        params: ``weights`` ``(K,)``, ``means`` ``(K, d)`` and ``covariances`` (scikit-learn's layout).
        covariance: the layout.
        data_variance: the data's mean per-feature variance (the scale of "collapsed").

    Returns:
        Sorted component indices; for ``"tied"``, every component when the shared covariance is
        degenerate.
    """
    batch = _batch(params["covariances"], covariance)
    k = params["means"].shape[0]
    finite = torch.isfinite(params["means"].double()).all(-1) & torch.isfinite(params["weights"].double())
    collapsed = ~(_scale(batch) > COLLAPSE_RATIO * data_variance)  # NaN counts as collapsed
    _, failed, _ = factorize(params["covariances"], covariance)
    if covariance == "tied":
        bad = bool(collapsed[0]) or bool(failed)
        return [j for j in range(k) if bad or not bool(finite[j])]
    return sorted(set(failed) | set(torch.nonzero(collapsed | ~finite).flatten().tolist()))


def pooled_covariance(params: dict[str, Tensor], covariance: str, healthy: list[int]) -> Tensor:
    """``sum_j pi_j Sigma_j / sum_j pi_j`` over the ``healthy`` components (equal weights if theirs
    sum to 0), in the layout of one component; positive definite when each ``Sigma_j`` is."""
    cov = params["covariances"].double()
    if covariance == "tied":
        return cov
    w = params["weights"].double()[healthy]
    w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(healthy))
    return torch.tensordot(w, cov[healthy], dims=1)


def replace_components(params: dict[str, Tensor], covariance: str, components: list[int], means: Tensor,
                       covariances: Tensor | None, min_weight: float = 0.0) -> dict[str, Tensor]:
    """A copy of ``params`` with the means ``(m, d)`` and covariances (one per component, or one
    shared for tied, or ``None`` to keep them) of ``components``; their weights at least
    ``min_weight``, all weights renormalised."""
    out = {name: value.detach().double().clone() for name, value in params.items()}
    index = torch.as_tensor(components, dtype=torch.long, device=out["means"].device)
    out["means"][index] = means.double().to(out["means"].device)
    if covariances is not None:
        if covariance == "tied":
            out["covariances"] = covariances.double()
        else:
            out["covariances"][index] = covariances.double()
    w = out["weights"]
    w[index] = w[index].clamp_min(min_weight)
    out["weights"] = w / w.sum()
    return out


def reseed_components(params: dict[str, Tensor], covariance: str, components: list[int], points: Tensor | None, *,
                      current: tuple[Tensor, Tensor], min_weight: float = 0.0) -> dict[str, Tensor]:
    """``params`` with ``components`` re-seeded at ``points`` ``(m, d)`` with the
    :func:`pooled_covariance` of the others and a weight of at least ``min_weight``; or, with
    ``points=None``, with their ``current`` ``(means, covariances)`` (the model's) kept.

    Raises:
        DataError: re-seeding when no component is healthy (every one, or the tied covariance, collapsed).
    """
    if points is None:
        means, covs = current
        kept = covs.double() if covariance == "tied" else covs.double()[components]
        return replace_components(params, covariance, components, means[components], kept)
    healthy = [j for j in range(params["means"].shape[0]) if j not in components]
    if not healthy:
        raise DataError(
            "expected a healthy component to re-seed the collapsed ones from, got every component's covariance "
            f"({'the tied one' if covariance == 'tied' else components}) collapsed, so none can be re-seeded; "
            "increase reg_covar, lower n_components, or scale the input data"
        )
    pooled = pooled_covariance(params, covariance, healthy)
    return replace_components(params, covariance, components, points, pooled.expand(len(components), *pooled.shape),
                              min_weight)
