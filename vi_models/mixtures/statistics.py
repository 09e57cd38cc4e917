r"""Sufficient statistics of the mixtures' closed-form M-steps: sums that add over chunks of data.

The M-step of every mixture here depends on the data only through sums over the observations
(Bishop 2006, eqs. 9.24-9.27 for Gaussians, 9.59-9.60 for Bernoullis). The statistics of
disjoint chunks therefore add up to those of their union, and the M-step of the sum is the
M-step of all the data: that is how :func:`inference.fit_em` streams a file chunk by chunk and
runs on several processes (the sums are all-reduced, every rank runs the same M-step). Each
mixture answers the pair

.. code-block:: text

    stats  = model.sufficient_statistics(x, resp, shift=c)        per chunk; dict of tensors
    params = model.m_step_from_statistics(sum of stats, shift=c, reg_covar=...)

and its ``m_step(x, resp)`` is the two in a row (:class:`~.base.MixtureModel`), so an in-memory
fit and a streamed one run the same arithmetic.

Gaussian, for responsibilities ``r_ik`` and a reference point ``c`` (the *shift*):

.. code-block:: text

    N_k   = sum_i r_ik                                   "nk"      (K,)
    S1_k  = sum_i r_ik (x_i - c)                         "sum_x"   (K, d)
    S2_k  = sum_i r_ik (x_i - c)(x_i - c)^T              "sum_xx"  full (K, d, d)
          = sum_i r_ik (x_i - c)^2                                 diag, spherical (K, d)
    S2    = sum_i (sum_k r_ik)(x_i - c)(x_i - c)^T                 tied (d, d)

    mu_k    = c + S1_k / N_k                                                      (eq. 9.24)
    Sigma_k = S2_k / N_k - (mu_k - c)(mu_k - c)^T + reg_covar I                  (eq. 9.25)
    pi_k    = N_k / sum_k N_k                                                     (eq. 9.26)

exact for any ``c``; a ``c`` near the data (its mean, as scikit-learn's centred formulas use)
keeps the subtraction in ``Sigma_k`` from cancelling. Tied pools the components,
``Sigma = (S2 - sum_k N_k m_k m_k^T) / sum_k N_k`` with ``m_k = mu_k - c``; spherical is the
mean of the diagonal. As in scikit-learn's ``_estimate_gaussian_parameters``, ``N_k`` gets
``10 eps`` so that an empty component divides by a positive number; with that padded
``N'_k = N_k + 10 eps`` the centred sum ``sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N'_k`` that
scikit-learn computes is ``S2_k / N'_k - (2 - N_k / N'_k) m_k m_k^T``, and that is the form used:
the plain ``m_k m_k^T`` would leave ``10 eps |mu_k - c|^2`` on the variance of a component that
owns one point, which is not small beside ``reg_covar`` on unscaled data (features in the
thousands).

The Gaussian sums are taken in float64 whatever the model's dtype: the covariance is their
difference, and in float32 the cancellation alone exceeds ``reg_covar`` on data whose features
differ in scale by orders of magnitude (scikit-learn computes in float64 too).

Memory: a chunk's E-step and statistics are taken over sub-chunks of its rows
(:mod:`.chunks`), so that their temporaries stay below half a chunk; the sums add over the
sub-chunks exactly as over chunks.

Bernoulli: ``N_k`` and ``S1_k = sum_i r_ik x_i``; categorical: ``N_k`` and the weighted level
counts ``C_kjl = sum_i r_ik [k_ij = l]`` (``"counts"``, ``(K, d, L)``); their M-steps are in
:mod:`vi_models.mixtures.discrete`. The discrete statistics are counts: they ignore the shift.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import WEIGHTS

__all__ = ["gaussian_m_step", "gaussian_statistics", "level_counts", "padded_mass"]


def padded_mass(stats: dict[str, Tensor]) -> Tensor:
    """``N_k + 10 eps`` ``(K,)``: scikit-learn's guard against dividing by an empty component."""
    nk = stats["nk"]
    return nk + 10 * torch.finfo(nk.dtype).eps


def gaussian_statistics(x: Tensor, resp: Tensor, covariance: str, shift: Tensor) -> dict[str, Tensor]:
    """``N_k``, ``S1_k`` and ``S2`` of a chunk (module docstring).

    Args:
        x: data ``(n, d)``.
        resp: responsibilities ``(n, K)``.
        covariance: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        shift: the reference point ``c`` ``(d,)``; the same for every chunk of one M-step.

    Returns:
        ``{"nk": (K,), "sum_x": (K, d), "sum_xx": (K, d, d) | (d, d) | (K, d)}`` in float64.
    """
    resp = resp.double()
    xc = x.double() - shift.double()  # (n, d)
    stats = {"nk": resp.sum(0), "sum_x": resp.T @ xc}
    if covariance == "full":
        # one (d, n) @ (n, d) product per component: no (K, n, d) temporary
        stats["sum_xx"] = torch.stack([(xc * resp[:, k : k + 1]).T @ xc for k in range(resp.shape[1])])
    elif covariance == "tied":
        # sum_i sum_k r_ik (.)(.)^T; scikit-learn uses X^T X, equal when every row of resp sums to
        # one (all EM iterations) but not at a hard initialisation that leaves rows at zero
        stats["sum_xx"] = (xc * resp.sum(1, keepdim=True)).T @ xc
    else:
        stats["sum_xx"] = resp.T @ xc.square()
    return stats


def gaussian_m_step(stats: dict[str, Tensor], covariance: str, shift: Tensor, reg_covar: float) -> dict[str, Tensor]:
    """``pi``, ``mu`` and ``Sigma`` (scikit-learn's layout) from summed statistics (module docstring)."""
    nk = padded_mass(stats)  # (K,)
    mc = stats["sum_x"] / nk.unsqueeze(-1)  # (K, d): mu_k - c
    second = stats["sum_xx"]
    d = mc.shape[-1]
    centring = (2 - stats["nk"] / nk).unsqueeze(-1)  # (K, 1): the centred sum with the padded N_k
    if covariance == "full":
        cov = second / nk[:, None, None] - (centring * mc).unsqueeze(-1) * mc.unsqueeze(-2)
        cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)
    elif covariance == "tied":
        cov = (second - (nk.unsqueeze(-1) * mc).T @ mc) / nk.sum()
        cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)
    else:
        cov = second / nk.unsqueeze(-1) - centring * mc.square() + reg_covar  # (K, d)
        if covariance == "spherical":
            cov = cov.mean(-1)
    return {WEIGHTS: nk / nk.sum(), "means": mc + shift.to(mc), "covariances": cov}


def level_counts(levels: Tensor, resp: Tensor, num_levels: int) -> Tensor:
    """``C_kjl = sum_i r_ik [k_ij = l]`` ``(K, d, L)`` for integer ``levels`` ``(n, d)``, ``resp`` ``(n, K)``."""
    # one matmul per level: vectorised over observations and components
    return torch.stack([resp.T @ (levels == level).to(resp.dtype) for level in range(num_levels)], -1)
