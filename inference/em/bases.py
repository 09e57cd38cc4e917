"""Mixture parts of other families fitted by EM: a flow's mixture base and a DDPM's mixture denoiser.

The models hold these parts as plain parameters or buffers (:class:`vi_models.GaussianMixtureBase`,
:class:`vi_models.GaussianMixtureDenoiser`) and accept a fitted mixture; fitting it is the
engine's work, so it lives here, next to :func:`inference.fit_em`:

- :func:`select_mixture`: a :class:`vi_models.GaussianMixture` fitted by EM, K chosen among
  candidates by held-out log-likelihood and refitted on all the data, optionally averaged over
  several EM runs (:func:`inference.fit_em_average`);
- :func:`fit_mixture_denoiser`: the closed-form noise predictor of that mixture;
- :func:`initialize_flow`: a flow's data-dependent start, its mixture base the EM fit of the
  data mapped back to the base space.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vi_models import GaussianMixture, GaussianMixtureDenoiser, NoiseSchedule, NormalizingFlow
from vi_models._validation import as_data_tensor
from vi_models.errors import ConfigError

from .average import fit_em_average
from .loop import fit_em

__all__ = ["fit_mixture_denoiser", "initialize_flow", "select_mixture"]


def select_mixture(x: Any, n_components: int | Sequence[int] = (8, 16, 32, 64), *, covariance: str = "full",
                   reg_covar: float = 1e-6, max_iter: int = 300, validation_fraction: float = 0.1,
                   n_average: int = 1, seed: int = 0, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> tuple[GaussianMixture, dict[int, float]]:
    """Fit a Gaussian mixture by EM, choosing K among candidates by held-out log-likelihood.

    Parameters
    ----------
    x
        ``(N, D)`` data.
    n_components
        K, or candidates for K: each is fitted on all but ``validation_fraction`` of the data
        (a seeded random split) and the one with the highest held-out log-likelihood is
        refitted on all of it.
    covariance, reg_covar, max_iter, seed
        As for :class:`vi_models.GaussianMixture` and :func:`inference.fit_em`.
    validation_fraction
        Share held out to compare candidates (only with several).
    n_average
        Average the densities of this many EM runs (seeds ``seed, seed + 1, ...``) for each K
        (:func:`inference.fit_em_average`): a mixture of ``n_average K`` components.
    dtype, device
        Of the fitted mixture (default float64 on ``x``'s device).

    Returns
    -------
    (GaussianMixture, dict)
        The fitted mixture and ``{K: mean held-out log-likelihood}`` (empty for one K).

    Raises
    ------
    ConfigError
        K not in ``1..N_fit``, ``n_average < 1``, ``validation_fraction`` outside (0, 1).

    Examples
    --------
    >>> gm, scores = select_mixture(torch.randn(200, 2), (1, 2), max_iter=20)
    >>> sorted(scores)
    [1, 2]
    """
    f = {"dtype": dtype, "device": device if device is not None else getattr(x, "device", None)}
    x = as_data_tensor(x, name="x", min_dim=2, **f)
    x = x.reshape(x.shape[0], -1)
    candidates = [int(n_components)] if isinstance(n_components, numbers.Integral) else [int(k) for k in n_components]
    if isinstance(n_average, bool) or not isinstance(n_average, numbers.Integral) or n_average < 1:
        raise ConfigError(f"expected n_average to be an integer >= 1 (EM runs averaged), got {n_average!r}")
    n_val = 0
    if len(candidates) > 1:
        if not 0 < validation_fraction < 1:
            raise ConfigError(f"expected validation_fraction in (0, 1) such as 0.1, got {validation_fraction!r}")
        n_val = max(1, round(validation_fraction * x.shape[0]))
    n_fit = x.shape[0] - n_val
    if not candidates or any(k < 1 or k > n_fit for k in candidates):
        raise ConfigError(f"expected n_components between 1 and the {n_fit} points each candidate is fitted on, "
                          f"got {n_components!r}")

    def fit_one(k: int, data: Tensor) -> GaussianMixture:
        gm = GaussianMixture(k, data.shape[1], covariance=covariance, dtype=data.dtype, device=data.device)
        with warnings.catch_warnings():  # EM's convergence warnings: the held-out score decides
            warnings.simplefilter("ignore")
            if n_average > 1:
                return fit_em_average(gm, data, n_average, seed=seed, max_iter=max_iter, reg_covar=reg_covar,
                                      device=data.device)
            fit_em(gm, data, max_iter=max_iter, seed=seed, progress=False, reg_covar=reg_covar, device=data.device)
        return gm

    scores: dict[int, float] = {}
    if len(candidates) > 1:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed)).to(x.device)
        train, val = x[order[n_val:]], x[order[:n_val]]
        scores = {k: float(fit_one(k, train).log_prob(val).detach().mean()) for k in candidates}
        k = max(scores, key=scores.__getitem__)
    else:
        k = candidates[0]
    return fit_one(k, x), scores


def fit_mixture_denoiser(train_data: Any, schedule: NoiseSchedule, n_components: int | Sequence[int] = (8, 16, 32, 64),
                         **select: Any) -> GaussianMixtureDenoiser:
    """The closed-form noise predictor of a Gaussian mixture fitted by EM to ``train_data``.

    The ``base`` of a :class:`vi_models.DDPM` (``DDPM(..., base=fit_mixture_denoiser(x, schedule))``):
    the network then learns the residual of this mixture's noise.

    Parameters
    ----------
    train_data
        ``(N, *data_shape)`` in the data's units.
    schedule
        The DDPM's :class:`vi_models.NoiseSchedule`; the mixture is fitted in float64 on its device.
    n_components, **select
        As for :func:`select_mixture` (``covariance``, ``reg_covar``, ``max_iter``,
        ``validation_fraction``, ``n_average``, ``seed``).

    Returns
    -------
    GaussianMixtureDenoiser
        With ``selected_components`` (the K used) and ``validation_scores`` ({K: mean
        held-out log-likelihood}, empty when one K was given).

    Examples
    --------
    >>> sched = NoiseSchedule(100, "cosine")
    >>> fit_mixture_denoiser(torch.randn(100, 2), sched, 2, max_iter=10).n_components
    2
    """
    if not isinstance(schedule, NoiseSchedule):
        raise ConfigError(f"expected schedule to be a NoiseSchedule (the DDPM's model.schedule), got {type(schedule).__name__}")
    x = as_data_tensor(train_data, name="train_data", dtype=torch.float64, device=schedule.betas.device)
    gm, scores = select_mixture(x.reshape(x.shape[0], -1), n_components, device=x.device, **select)
    den = GaussianMixtureDenoiser.from_mixture(gm, schedule, data_shape=tuple(x.shape[1:]))
    single = int(n_components) if isinstance(n_components, numbers.Integral) else None
    den.selected_components = max(scores, key=scores.__getitem__) if scores else single or list(n_components)[0]
    den.validation_scores = scores
    return den


@torch.no_grad()
def initialize_flow(flow: NormalizingFlow, x: Any, *, seed: int = 0, max_iter: int = 500,
                    tol: float = 1e-6) -> NormalizingFlow:
    """A flow's data-dependent start: :meth:`~vi_models.NormalizingFlow.initialize`, then EM on its base.

    ActNorm standardises ``x`` on entry (Glow, Sec. 3.1); with ``base="mixture"`` the base is then
    the maximum-likelihood diagonal mixture of the data mapped back to the base space (EM from a
    k-means++ start), so the flow starts as that mixture.

    Parameters
    ----------
    flow
        A :class:`vi_models.NormalizingFlow` (RealNVP, SplineFlow, MAF).
    x
        Training data (or a large batch), ``(N, D)``, ``N >= 2``.
    seed, max_iter, tol
        EM's k-means++ seed, iterations at most, and tolerance on the mean log-likelihood.

    Returns
    -------
    NormalizingFlow
        ``flow``, for chaining.

    Examples
    --------
    >>> from vi_models import RealNVP
    >>> flow = initialize_flow(RealNVP(2, 2, (8,), base="mixture", num_components=2), torch.randn(100, 2))
    >>> flow.base_mixture.num_components
    2
    """
    flow.initialize(x)
    if flow.base_name != "mixture":
        return flow
    base = flow.base_mixture
    z = flow.transform().inv(torch.as_tensor(x, dtype=base.means.dtype, device=base.means.device))
    z = z.detach().reshape(-1, base.dim).to(torch.float64)
    k = min(base.num_components, z.shape[0])
    gm = GaussianMixture(k, base.dim, covariance="diag", device=z.device, dtype=torch.float64)
    fit_em(gm, z, max_iter=max_iter, tol=tol, seed=seed, progress=False, reg_covar=1e-6, device=z.device)
    base.set_mixture(gm)
    return flow


