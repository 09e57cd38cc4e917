r"""Finite mixtures as Pyro models: Gaussian here, Bernoulli and categorical in
:mod:`vi_models.mixtures.discrete`.

Generative story, for each observation ``i`` of the plate ``"data"`` (THEORY T10):

.. code-block:: text

    z_i       ~ Categorical(pi)                       assignment, enumerated in parallel
    x_i | z_i ~ N(mu_{z_i}, Sigma_{z_i})               so p(x) = sum_k pi_k N(x | mu_k, Sigma_k)

with ``Sigma_k`` full, diagonal, spherical (``sigma_k^2 I``) or tied (one ``Sigma`` for every
component), as in scikit-learn's ``GaussianMixture``. The assignment site carries
``infer={"enumerate": "parallel"}``, so :class:`~pyro.infer.TraceEnum_ELBO` and the EM engine
(:func:`inference.fit_em`) sum it out exactly; the model therefore has no local guide.

Without priors the globals ``pi, mu, Sigma`` are constrained parameters of the module (maximum
likelihood: EM, or SVI with ``guide=None``). With ``priors`` they are sample sites of the
Bayesian mixture (Bishop 2006, sec. 10.2):

.. code-block:: text

    pi            ~ Dirichlet(alpha 1_K)
    mu_k          ~ N(m_0, s_0^2 I)
    sigma_{kj}^2  ~ InverseGamma(a, b)                per dimension (one per component if spherical)
    C_k           ~ LKJCholesky(d, eta)               full / tied: Sigma_k = diag(sigma_k) C_k C_k^T diag(sigma_k)

fitted by SVI with enumeration: ``AutoDelta`` over the globals gives MAP, ``AutoNormal`` a
mean-field posterior (use :meth:`MixtureModel.init_loc_fn` to start them from the data).

The emission ``x | z`` is a :class:`ComponentEmission`: it evaluates the log-densities of all K
components at once with matrix products (scikit-learn's ``_estimate_log_gaussian_prob``) and
picks the column ``z``, so the enumerated E-step costs what scikit-learn's does instead of
materialising a ``(K, N, d)`` tensor per elementwise operation.

References
----------
A. P. Dempster, N. M. Laird and D. B. Rubin, "Maximum likelihood from incomplete data via the
EM algorithm", JRSS B 39 (1977).
C. M. Bishop, "Pattern Recognition and Machine Learning", Springer 2006, sec. 9.2 (EM for
Gaussian mixtures, eqs. 9.17-9.28) and 10.2 (variational mixture of Gaussians).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import Tensor

from vi_models._validation import (
    check_choice,
)
from vi_models.errors import ConfigError, DataError

from .base import ASSIGNMENT, COMPONENT_PLATE, WEIGHTS, MixtureModel
from .components import ComponentEmission, GaussianComponents
from .degenerate import degenerate_components, factorize, raise_not_positive_definite, reseed_components, warn_jitter
from .statistics import gaussian_m_step, gaussian_statistics

__all__ = [
    "ASSIGNMENT",
    "COMPONENT_PLATE",
    "CORR_CHOLESKY",
    "MEANS",
    "VARIANCES",
    "WEIGHTS",
    "ComponentEmission",
    "GaussianMixture",
    "MixtureModel",
    "MixturePrior",
]

#: Global sample sites of the Bayesian mixture (parameters of the same names without priors).
MEANS: Final = "means"
VARIANCES: Final = "variances"
CORR_CHOLESKY: Final = "corr_cholesky"

CovarianceType = Literal["full", "diag", "spherical", "tied"]
COVARIANCE_TYPES: Final = ("full", "diag", "spherical", "tied")
_LOG_2PI: Final = math.log(2 * math.pi)


@dataclass(frozen=True)
class MixturePrior:
    """Hyperparameters of the Bayesian Gaussian mixture (see the module docstring).

    The defaults suit standardised data (zero mean, unit variance per feature).
    """

    weight_concentration: float = 1.0  # alpha of Dirichlet(alpha 1_K)
    mean_loc: float = 0.0  # m_0
    mean_scale: float = 10.0  # s_0
    variance_shape: float = 2.0  # a of InverseGamma(a, b)
    variance_rate: float = 1.0  # b
    lkj_concentration: float = 1.0  # eta of LKJCholesky(d, eta)

    def __post_init__(self) -> None:
        for name in ("weight_concentration", "mean_scale", "variance_shape", "variance_rate", "lkj_concentration"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"expected MixturePrior.{name} > 0, got {value!r}")


# --------------------------------------------------------------------------- Gaussian


class GaussianMixture(MixtureModel):
    """Mixture of K Gaussians in ``d`` dimensions (THEORY T10), a Pyro model.

    Args:
        n_components: K >= 1.
        n_features: d >= 1.
        covariance: ``"full"`` (``Sigma_k``), ``"diag"`` (``diag(sigma_k^2)``), ``"spherical"``
            (``sigma_k^2 I``) or ``"tied"`` (one shared ``Sigma``), as in scikit-learn.
        priors: ``None`` (parameters: maximum likelihood), ``True`` (default
            :class:`MixturePrior`) or a :class:`MixturePrior` (the globals become sample sites).
        device, dtype: where and in which precision the parameters live.

    Attributes:
        weights ``(K,)``, means ``(K, d)``, and ``scale_tril`` (full ``(K, d, d)``, tied
        ``(d, d)``) or ``variances`` (diag ``(K, d)``, spherical ``(K,)``): the parameters.
        covariances, precisions: scikit-learn's layouts of ``Sigma`` and ``Sigma^-1``.

    Raises:
        ConfigError: unknown ``covariance``, ``n_components < 1`` or ``n_features < 1``.

    Example:
        >>> gmm = GaussianMixture(3, 2, covariance="diag")
        >>> gmm.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, n_components: int, n_features: int, covariance: CovarianceType = "full", *,
                 priors: bool | MixturePrior | None = None, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(n_components, n_features, device=device, dtype=dtype)
        self.covariance = check_choice(covariance, "covariance", COVARIANCE_TYPES)
        self.prior = MixturePrior() if priors is True else (priors or None)
        if self.prior is not None and not isinstance(self.prior, MixturePrior):
            raise ConfigError(f"expected priors to be None, True or a MixturePrior, got {priors!r}")
        k, d, f = self.n_components, self.n_features, self._factory
        # Distinct random means: identical components would never separate (THEORY T13).
        self.means = PyroParam(torch.randn(k, d, **f))
        if self.covariance in ("full", "tied"):
            eye = torch.eye(d, **f)
            self.scale_tril = PyroParam(eye.expand(k, d, d).clone() if covariance == "full" else eye,
                                        constraint=constraints.lower_cholesky)
            self.param_names = (WEIGHTS, MEANS, "scale_tril")
        else:
            shape = (k, d) if covariance == "diag" else (k,)
            self.variances = PyroParam(torch.ones(shape, **f), constraint=constraints.positive)
            self.param_names = (WEIGHTS, MEANS, VARIANCES)

    @property
    def has_priors(self) -> bool:  # type: ignore[override]
        return self.prior is not None

    def extra_repr(self) -> str:
        return (f"n_components={self.n_components}, n_features={self.n_features}, "
                f"covariance={self.covariance!r}, priors={self.prior is not None}")

    # -- the model's pieces

    def components(self, params: dict[str, Tensor]) -> GaussianComponents:
        return GaussianComponents(params[MEANS], self.covariance, scale_tril=params.get("scale_tril"),
                                  variances=params.get(VARIANCES))

    def sample_globals(self) -> dict[str, Tensor]:
        if self.prior is None:
            return self.params()
        p, k, d = self.prior, self.n_components, self.n_features
        f = {"dtype": self.weights_unconstrained.dtype, "device": self.weights_unconstrained.device}
        weights = pyro.sample(WEIGHTS, dist.Dirichlet(torch.full((k,), p.weight_concentration, **f)))
        shape, rate = torch.tensor(p.variance_shape, **f), torch.tensor(p.variance_rate, **f)
        tied = self.covariance == "tied"
        eta = torch.tensor(p.lkj_concentration, **f)
        # LKJ needs d >= 2; in one dimension the correlation factor is [[1]].
        corr = torch.ones(1, 1, **f)
        if tied:
            variances = pyro.sample(VARIANCES, dist.InverseGamma(shape, rate).expand([d]).to_event(1))
            if d > 1:
                corr = pyro.sample(CORR_CHOLESKY, dist.LKJCholesky(d, eta))
        with pyro.plate(COMPONENT_PLATE, k, dim=-1):
            means = pyro.sample(MEANS, dist.Normal(torch.tensor(p.mean_loc, **f), p.mean_scale).expand([k, d]).to_event(1))
            if self.covariance == "spherical":
                variances = pyro.sample(VARIANCES, dist.InverseGamma(shape, rate).expand([k]))
            elif not tied:
                variances = pyro.sample(VARIANCES, dist.InverseGamma(shape, rate).expand([k, d]).to_event(1))
            if self.covariance == "full" and d > 1:
                corr = pyro.sample(CORR_CHOLESKY, dist.LKJCholesky(d, eta).expand([k]))
        return self.params_from_sites({WEIGHTS: weights, MEANS: means, VARIANCES: variances,
                                       **({CORR_CHOLESKY: corr} if self.covariance in ("full", "tied") else {})})

    def params_from_sites(self, sites: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {WEIGHTS: sites[WEIGHTS], MEANS: sites[MEANS]}
        if self.covariance in ("full", "tied"):
            # Sigma = D C C^T D with D = diag(sigma): L = D C
            sd = sites[VARIANCES].sqrt()
            corr = sites.get(CORR_CHOLESKY, torch.ones(1, 1, dtype=sd.dtype, device=sd.device))  # d = 1
            out["scale_tril"] = sd.unsqueeze(-1) * corr
        else:
            out[VARIANCES] = sites[VARIANCES]
        return out

    def sites_from_params(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {WEIGHTS: params[WEIGHTS], MEANS: params[MEANS]}
        if self.covariance in ("full", "tied"):
            cov = params["covariances"] if "covariances" in params else self.params_to_covariances(params)
            sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
            out[VARIANCES] = sd.square()
            out[CORR_CHOLESKY] = torch.linalg.cholesky(cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2)))
        else:
            out[VARIANCES] = params.get("covariances", params.get(VARIANCES))
        return out

    def _natural_params(self, covariances: Tensor) -> dict[str, Tensor]:
        return {"scale_tril" if self.covariance in ("full", "tied") else VARIANCES: self._factor(covariances)}

    def params_to_covariances(self, params: dict[str, Tensor]) -> Tensor:
        if self.covariance in ("full", "tied"):
            L = params["scale_tril"]
            return L @ L.mT
        return params[VARIANCES]

    # -- scikit-learn's views

    @property
    def covariances(self) -> Tensor:
        """``Sigma`` in scikit-learn's layout: full ``(K, d, d)``, tied ``(d, d)``, diag ``(K, d)``, spherical ``(K,)``."""
        return self.params_to_covariances(self.params()).detach()

    @property
    def precisions(self) -> Tensor:
        """``Sigma^-1`` in the layout of :attr:`covariances`."""
        if self.covariance in ("full", "tied"):
            return torch.cholesky_inverse(self.scale_tril.detach())
        return self.variances.detach().reciprocal()

    @property
    def n_parameters(self) -> int:
        """Free parameters (scikit-learn's ``_n_parameters``), for BIC/AIC."""
        k, d = self.n_components, self.n_features
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}[self.covariance]
        return cov + k * d + k - 1

    # -- EM

    def sufficient_statistics(self, x: Tensor, resp: Tensor, *, shift: Tensor | None = None) -> dict[str, Tensor]:
        """``N_k``, ``sum_i r_ik (x_i - c)`` and the second moments around ``c = shift`` of a chunk.

        The sums of :mod:`vi_models.mixtures.statistics` (Bishop eqs. 9.24-9.25), additive over
        disjoint chunks; ``x`` ``(n, d)``, ``resp`` ``(n, K)``, ``shift`` ``(d,)`` (default the origin).
        """
        c = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device) if shift is None else shift
        return gaussian_statistics(x, resp, self.covariance, c)

    def m_step_from_statistics(self, stats: dict[str, Tensor], *, shift: Tensor | None = None,
                               reg_covar: float = 0.0) -> dict[str, Tensor]:
        """Closed-form maximiser of ``E_Q[log p(x, z | theta)]`` (THEORY T11; Bishop eqs. 9.24-9.26).

        ``N_k = sum_i r_ik``, ``mu_k = sum_i r_ik x_i / N_k``,
        ``Sigma_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + reg_covar I``, ``pi_k = N_k / N``
        (scikit-learn's ``_estimate_gaussian_parameters``: ``N_k`` gets ``10 eps``; diag keeps the
        diagonal, spherical its mean, tied pools the components), from the summed
        :meth:`sufficient_statistics` taken around the same ``shift``.

        Returns:
            ``{"weights": (K,), "means": (K, d), "covariances": layout of :attr:`covariances`}``, in
            float64 whatever the model's dtype (:meth:`set_params` factorises them in float64).
        """
        like = stats["sum_x"]
        c = torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device) if shift is None else shift
        return gaussian_m_step(stats, self.covariance, c, reg_covar)

    def set_params(self, *, weights: Any = None, means: Any = None, covariances: Any = None,
                   precisions: Any = None, scale_tril: Any = None, variances: Any = None) -> None:
        """Write parameters (any subset), in scikit-learn's layouts.

        Covariances and precisions are factorised in float64 whatever the model's dtype; one that
        is not positive definite gets a small jitter on its diagonal, with a
        :class:`~.degenerate.NumericalJitterWarning` (:func:`~.degenerate.factorize`).

        Raises:
            DataError: wrong shapes, or a covariance that no jitter makes positive definite (a
                component collapsed onto a point with ``reg_covar=0``); the message names the components.
        """
        k, d = self.n_components, self.n_features
        given = [n for n, v in (("covariances", covariances), ("precisions", precisions),
                                ("scale_tril", scale_tril), ("variances", variances)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"expected at most one of covariances, precisions, scale_tril, variances; got {given}")
        full = self.covariance in ("full", "tied")
        shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[self.covariance]
        if given:  # factorised first, so that a failure writes nothing
            value = torch.as_tensor({"covariances": covariances, "precisions": precisions,
                                     "scale_tril": scale_tril, "variances": variances}[given[0]])
            if given[0] in ("scale_tril", "variances"):
                if (given[0] == "scale_tril") != full:
                    raise ConfigError(f"{given[0]} does not apply to covariance={self.covariance!r}; pass covariances")
                name = given[0]
            elif tuple(value.shape) != shape:
                raise DataError(f"expected {given[0]} of shape {shape} for covariance={self.covariance!r}, "
                                f"got {tuple(value.shape)}")
            else:
                name, value = ("scale_tril" if full else VARIANCES), self._factor(value, given[0] == "precisions")
        if weights is not None:
            self._set_weights(weights)
        if means is not None:
            self._write(MEANS, means, (k, d))
        if given:
            self._write(name, value, shape)

    def _factor(self, value: Tensor, precision: bool = False) -> Tensor:
        """``L`` (full, tied) or the variances of covariances (or precisions) ``value``, in float64."""
        value = value.double()
        if precision:
            factor, failed, jitter = factorize(value, self.covariance)
            raise_not_positive_definite(failed, "precision")
            warn_jitter(jitter, "precision", stacklevel=4)
            value = torch.cholesky_inverse(factor) if self.covariance in ("full", "tied") else factor.reciprocal()
        factor, failed, jitter = factorize(value, self.covariance)
        raise_not_positive_definite(failed, "variance" if self.covariance in ("diag", "spherical") else "covariance")
        warn_jitter(jitter, "covariance", stacklevel=4)
        return factor

    def degenerate_components(self, params: dict[str, Tensor], *, data_variance: float) -> list[int]:
        """Components of an M-step's ``params`` that cannot go on: not finite, collapsed onto a
        point, or not positive definite even with jitter (:func:`~.degenerate.degenerate_components`)."""
        return degenerate_components(params, self.covariance, data_variance=data_variance)

    def replace_components(self, params: dict[str, Tensor], components: list[int], points: Tensor | None = None,
                           *, min_weight: float = 0.0) -> dict[str, Tensor]:
        """``params`` with ``components`` re-seeded at ``points`` ``(m, d)`` with the pooled covariance
        of the other components, or, with ``points=None``, back at the model's current parameters
        (:func:`~.degenerate.reseed_components`).

        Raises:
            DataError: re-seeding with no healthy component to pool (or a tied covariance).
        """
        return reseed_components(params, self.covariance, components, points, min_weight=min_weight,
                                 current=(self.means.detach(), self.covariances))

    @classmethod
    def average(cls, mixtures: Sequence[GaussianMixture], weights: Any = None) -> GaussianMixture:
        """The mixture ``sum_m w_m p_m(x)`` of fitted mixtures, itself a Gaussian mixture.

        Averaging the fits of several EM runs (restarts or bootstrap samples) lowers the variance
        of the density estimate, as bagging does (Ormoneit & Tresp, 1996): each run ends in its
        own local optimum, and their average is a smoother, better-calibrated density.

        Args:
            mixtures: fitted mixtures without priors on the same ``n_features``, dtype and device.
            weights: ``w_m`` (default equal); positive, normalised here.

        Returns:
            A :class:`GaussianMixture` with ``sum_m K_m`` components: weights ``w_m pi_mk``, the
            members' means and covariances (``"full"`` when the members are tied).

        Raises:
            ConfigError: no mixtures, mixed feature sizes or covariance types, priors, bad weights.
        """
        mixtures = list(mixtures)
        if not mixtures or not all(isinstance(m, GaussianMixture) for m in mixtures):
            raise ConfigError("expected a non-empty sequence of fitted GaussianMixture models to average")
        first = mixtures[0]
        kinds = {m.covariance for m in mixtures}
        if len({m.n_features for m in mixtures}) > 1 or len(kinds) > 1 or any(m.has_priors for m in mixtures):
            raise ConfigError(f"expected mixtures with one n_features and covariance type and no priors, got "
                              f"n_features {sorted({m.n_features for m in mixtures})}, covariance {sorted(kinds)}")
        like = first.weights_unconstrained.detach()
        places = {(m.weights_unconstrained.dtype, m.weights_unconstrained.device) for m in mixtures}
        if len(places) > 1:
            raise ConfigError(f"expected mixtures on one dtype and device, got {sorted(map(str, places))}; move them with .to()")
        w = torch.full((len(mixtures),), 1.0 / len(mixtures), dtype=like.dtype, device=like.device)
        if weights is not None:
            w = torch.as_tensor(weights, dtype=like.dtype, device=like.device).reshape(-1)
            if w.shape[0] != len(mixtures) or not bool((w > 0).all()):
                raise ConfigError(f"expected {len(mixtures)} positive weights, got {weights!r}")
            w = w / w.sum()
        kind = "full" if first.covariance == "tied" else first.covariance
        d = first.n_features
        covs = [m.covariances.expand(m.n_components, d, d) if m.covariance == "tied" else m.covariances for m in mixtures]
        out = cls(sum(m.n_components for m in mixtures), d, covariance=kind, device=like.device, dtype=like.dtype)
        out.set_params(weights=torch.cat([wm * m.weights.detach() for wm, m in zip(w, mixtures)]),
                       means=torch.cat([m.means.detach() for m in mixtures]), covariances=torch.cat(covs))
        return out

    def collapsed_components(self, reg_covar: float, *, data_variance: float) -> list[int]:
        """Components whose spread beyond ``reg_covar`` vanished (all their mass on one point).

        A component is collapsed when its mean variance minus ``reg_covar`` is below
        ``max(1e-3 reg_covar, 1e-10 data_variance)``: its covariance is held up by the
        ``reg_covar`` floor alone (THEORY T13).
        """
        cov = self.covariances
        if self.covariance in ("full", "tied"):
            cov = cov.diagonal(dim1=-2, dim2=-1)  # (K, d) or (d,)
        spread = cov if self.covariance == "spherical" else cov.mean(-1)  # (K,) or () for tied
        spread = spread.expand(self.n_components) - reg_covar
        floor = max(1e-3 * reg_covar, 1e-10 * data_variance)
        return torch.nonzero(spread <= floor).flatten().tolist()

