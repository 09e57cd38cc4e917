r"""Pareto-smoothed importance sampling and the k-hat of a guide.

**k-hat** (Yao et al. 2018, Sec. 3): with ``z_s ~ q`` and importance ratios
``r_s = p(x, z_s) / q(z_s)``, fit a generalised Pareto distribution to the largest
``M = min(S / 5, 3 sqrt(S))`` ratios (Vehtari et al. 2024, Sec. 3); its shape ``k`` says how
heavy the ratios' tail is, i.e. how badly ``q`` misses the posterior's mass:

- ``k < 0.5``: good, ``q`` is close to the posterior and importance sampling corrects the rest;
- ``0.5 <= k < 0.7``: usable, the Pareto-smoothed estimates still converge, slowly;
- ``k >= 0.7``: bad, ``q`` misses part of the posterior; estimates from it are unreliable.

The ratios come from :func:`inference.log_importance_weights` (amortised guides: one k per
observation, so the data points the encoder fits badly stand out) or from
:func:`inference.diagnostics.sample_global_draws` (global latents: one k), both of which sum
enumerated discrete latents out exactly. (Pyro's ``psis_diagnostic`` instead samples such
latents from the prior, which is not the ratio above.)

:func:`pareto_smooth` is what :mod:`.loo` smooths the leave-one-out ratios with.

References
----------
Y. Yao, A. Vehtari, D. Simpson and A. Gelman, "Yes, but did it work?: Evaluating variational
inference", ICML 2018.
A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto smoothed importance sampling",
JMLR 25 (2024).
J. Zhang and M. A. Stephens, "A new and efficient estimation method for the generalized Pareto
distribution", Technometrics 51 (2009).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyro
import torch
from pyro import poutine

from inference.engine.likelihood import log_importance_weights
from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError

from .family_groups import _check_forward_process, model_family
from .posterior_draws import (
    _data_tensors,
    _in_plate,
    _latent_sites,
    _unwrap,
    sample_global_draws,
)

__all__ = [
    "GOOD_K",
    "OK_K",
    "PsisReport",
    "khat_words",
    "pareto_smooth",
    "psis_khat",
]

#: Below: good. Between GOOD_K and OK_K: usable but slow to converge. Above OK_K: unreliable.
GOOD_K = 0.5
OK_K = 0.7


# --------------------------------------------------------------------------- Pareto smoothing


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """(k, sigma) of a generalised Pareto fit to sorted exceedances ``x > 0`` (Zhang & Stephens 2009),
    with the weakly informative prior on k of Vehtari et al. 2024 (App. C)."""
    n = len(x)
    m = 30 + int(math.sqrt(n))
    # Candidate values of theta = -k / sigma on the quantile grid of Zhang & Stephens, eq. (8)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / (3.0 * x[int(n / 4 + 0.5) - 1])
    k = np.log1p(-theta[:, None] * x).mean(axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)  # profile log-likelihood of theta
    weights = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    keep = weights >= 10 * np.finfo(float).eps
    weights, theta = weights[keep] / weights[keep].sum(), theta[keep]
    theta_hat = float((theta * weights).sum())  # posterior mean of theta
    k_hat = float(np.log1p(-theta_hat * x).mean())
    sigma = -k_hat / theta_hat
    k_hat = (n * k_hat + 10 * 0.5) / (n + 10)  # shrink towards 0.5 with prior weight 10
    return k_hat, sigma


def _smooth_one(log_r: np.ndarray, r_eff: float) -> tuple[np.ndarray, float]:
    s = log_r.shape[0]
    x = log_r - log_r.max()
    tail_len = math.ceil(min(0.2 * s, 3.0 * math.sqrt(s / r_eff)))
    order = np.argsort(x)
    cutoff = max(x[order[-tail_len - 1]], math.log(np.finfo(float).tiny))
    tail = np.flatnonzero(x > cutoff)
    k = math.inf
    if x[order[-1]] - x[order[0]] < 1e-12:
        k = -math.inf  # constant ratios: q is exact
    elif len(tail) > 4:
        tail = tail[np.argsort(x[tail])]
        k, sigma = _gpd_fit(np.exp(x[tail]) - math.exp(cutoff))
        if math.isfinite(k) and sigma > 0:
            # Replace the tail by expected order statistics of the fitted GPD (Vehtari et al. 2024, eq. 5)
            p = (np.arange(len(tail)) + 0.5) / len(tail)
            q = -np.log1p(-p) if abs(k) < np.finfo(float).eps else np.expm1(-k * np.log1p(-p)) / k
            x = x.copy()
            x[tail] = np.minimum(np.log(sigma * q + math.exp(cutoff)), 0.0)  # truncate at the max raw ratio
    return x - np.logaddexp.reduce(x), k


def pareto_smooth(log_ratios: Any, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalised log weights and k-hat along the last axis.

    Args:
        log_ratios: ``(..., S)`` log importance ratios (any additive constant).
        r_eff: relative efficiency of the draws (1 for independent draws from q).

    Returns:
        ``(log_weights (..., S), khat (...))``; ``log_weights`` log-sum-exp to 0 along the last axis.
    """
    arr = np.asarray(log_ratios, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] < 2:
        raise ConfigError(f"expected log ratios of shape (..., S) with S >= 2, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError("expected finite log ratios, got NaN/inf; check the model's support and the guide")
    flat = arr.reshape(-1, arr.shape[-1])
    out = [_smooth_one(row, r_eff) for row in flat]
    lw = np.stack([o[0] for o in out]).reshape(arr.shape)
    return lw, np.array([o[1] for o in out]).reshape(arr.shape[:-1])


def khat_words(k: float) -> str:
    """The verdict for one k-hat, in words (thresholds :data:`GOOD_K`, :data:`OK_K`)."""
    if not np.isfinite(k) and k < 0:
        return "exact: the importance ratios are constant, q is the posterior"
    if k < GOOD_K:
        return f"good (k < {GOOD_K}): q is close to the posterior"
    if k < OK_K:
        return f"ok ({GOOD_K} <= k < {OK_K}): usable, but importance-sampled estimates converge slowly"
    return f"bad (k >= {OK_K}): q misses part of the posterior; estimates from it are unreliable"


# --------------------------------------------------------------------------- k-hat of a guide


@dataclass(frozen=True)
class PsisReport:
    """What :func:`psis_khat` returns.

    Attributes:
        khat: ``()`` for a guide over global latents, ``(N,)`` per observation for an
            amortised guide (local latents).
        scope: ``"global"`` or ``"per-observation"``.
        log_weights: raw log ratios ``log p(x, z_s) - log q(z_s)``: ``(S,)`` or ``(S, N)``.
        num_samples: S.
    """

    khat: np.ndarray
    scope: Literal["global", "per-observation"]
    log_weights: np.ndarray
    num_samples: int

    @property
    def max_khat(self) -> float:
        return float(np.max(self.khat))

    @property
    def ok(self) -> bool:
        """Whether every k-hat is below :data:`OK_K`."""
        return self.max_khat < OK_K

    @property
    def bad_observations(self) -> np.ndarray:
        """Indices of the observations with k-hat >= :data:`OK_K` (empty for a global report)."""
        return np.flatnonzero(self.khat >= OK_K) if self.scope == "per-observation" else np.array([], dtype=int)

    @property
    def words(self) -> str:
        """The verdict in words."""
        if self.scope == "global":
            return f"k-hat = {float(self.khat):.2f}: {khat_words(float(self.khat))}"
        n = self.khat.size
        good = int((self.khat < GOOD_K).sum())
        bad = int((self.khat >= OK_K).sum())
        return (f"k-hat over {n} observations: {good} good (< {GOOD_K}), {n - good - bad} ok, {bad} bad "
                f"(>= {OK_K}); worst {self.max_khat:.2f}: {khat_words(self.max_khat)}")

    def __str__(self) -> str:
        return self.words


def psis_khat(
    model: Callable,
    guide: Callable | None,
    data: Any,
    num_samples: int = 1000,
    *,
    plate_name: str | None = "data",
    seed: int | None = None,
) -> PsisReport:
    """Pareto k-hat of the importance ratios ``p(x, z) / q(z)`` (Yao et al. 2018).

    Args:
        model, guide: a fitted Pyro pair called as ``model(*data)`` (or a ``FitResult`` /
            ``EMResult`` as ``model``). Enumerable discrete latents that the guide does not
            sample are summed out exactly. For a :class:`vi_models.DDPM` (guide ``None`` or its
            ``ForwardDiffusion``) the ratios are those of the whole chain,
            ``p(x_{0:T}) / q(x_{1:T} | x_0)`` (T network calls per draw), one k per observation.
            A model without latents (``guide=None`` and an exact ``log_prob``) gets k = -inf.
        data: observations ``(N, ...)`` or a tuple such as ``(X, y)``.
        num_samples: S draws from the guide (k-hat needs a few hundred to be stable).
        plate_name: the model's observation plate.
        seed: seed for Pyro's sampling.

    Returns:
        :class:`PsisReport`: one k-hat for global latents, one per observation for local
        (amortised) latents; ``str(report)`` says what they mean.

    Raises:
        ConfigError: a model without a density (a GAN), a DDPM with another guide, bad sizes.

    Example:
        >>> print(psis_khat(vae, encoder, x_test, 500))            # doctest: +SKIP
        k-hat over 200 observations: 180 good (< 0.5), 15 ok, 5 bad (>= 0.7); worst 0.93: ...
    """
    num_samples = check_positive_int(num_samples, "num_samples", minimum=10)
    if seed is not None:
        pyro.set_rng_seed(seed)
    model, guide = _unwrap(model, guide)
    family = model_family(model, guide)
    args = _data_tensors(model, guide, data)
    if family == "no_density":
        raise ConfigError(
            f"expected a model with a likelihood, got a {type(model).__name__}, which defines samples but no density: "
            "there are no importance ratios p(x, z) / q(z) to diagnose"
        )
    if family == "density":  # no latent variables: the ratios are constant, k-hat = -inf ("exact")
        with torch.no_grad():
            ll = model.log_prob(*args).double().cpu().numpy()
        log_w = np.broadcast_to(ll, (num_samples, ll.size)).copy()
        return PsisReport(khat=np.full(ll.size, -np.inf), scope="per-observation", log_weights=log_w,
                          num_samples=num_samples)
    if family == "diffusion":
        # The full chain: w = p(x_{0:T}) / q(x_{1:T} | x_0), T sites per particle (Ho et al. 2020, eq. 5)
        from guides.diffusion import ForwardDiffusion

        _check_forward_process(model, guide)
        guide = functools.partial(guide or ForwardDiffusion(model.schedule), objective="chain")
        model = functools.partial(model, objective="chain")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # probe without shifting the seeded draws
        probe = poutine.trace(guide).get_trace(*args) if guide is not None else poutine.Trace()
        model_tr = poutine.trace(poutine.replay(model, trace=probe)).get_trace(*args)
    is_global = family == "pyro" and any(
        n in model_tr.nodes and not _in_plate(model_tr.nodes[n], plate_name) for n in _latent_sites(probe)
    )
    if is_global:
        draws = sample_global_draws(model, guide, *args, num_samples=num_samples, plate_name=plate_name)
        log_w = draws.log_joint - draws.log_q  # (S,)
        _, k = pareto_smooth(log_w)
        return PsisReport(khat=np.asarray(k), scope="global", log_weights=log_w, num_samples=num_samples)
    log_w = log_importance_weights(model, guide, *args, num_samples=num_samples, plate_name=plate_name)
    log_w = log_w.double().cpu().numpy()  # (S, N)
    _, k = pareto_smooth(log_w.T)
    return PsisReport(khat=k, scope="per-observation", log_weights=log_w, num_samples=num_samples)
