r"""Finite mixtures as Pyro models: Gaussian here, Bernoulli and categorical in
:mod:`vi_models.discrete_mixture`.

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
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import init_to_value
from pyro.nn import PyroModule, PyroParam
from torch import Tensor

from inference._checks import (
    as_data_tensor,
    check_choice,
    check_positive_int,
    resolve_device,
)
from inference.errors import ConfigError, DataError

from .mixture_components import ComponentEmission, Components, GaussianComponents
from .nets import check_batch
from .vae import DATA_PLATE, OBSERVED

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

#: The discrete assignment site z (enumerated); hide it from autoguides.
ASSIGNMENT: Final = "assignment"
#: Global sample sites of the Bayesian mixture (parameters of the same names without priors).
WEIGHTS: Final = "weights"
MEANS: Final = "means"
VARIANCES: Final = "variances"
CORR_CHOLESKY: Final = "corr_cholesky"
#: Plate of the per-component globals (not nested with the data plate, so it shares dim -1).
COMPONENT_PLATE: Final = "components"

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


# --------------------------------------------------------------------------- base model


class MixtureModel(PyroModule):
    """Base class: ``z ~ Categorical(pi)``, ``x | z ~ p(x | theta_z)`` over the plate ``"data"``.

    Subclasses define the components (:meth:`components`), the conversion of data to the
    observed value (:meth:`observation`), the closed-form M-step (:meth:`m_step`) and
    :meth:`set_params`. The EM engine (:func:`inference.fit_em`) and SVI with
    ``loss="enum"`` (:func:`inference.fit`) both work through :meth:`forward`.
    """

    #: Whether log p(x) is a probability mass (bits/dim without dequantisation offset).
    is_discrete: ClassVar[bool] = False
    #: Names of the parameters that :meth:`set_params` accepts (for ``fit_em(init=dict)``).
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_components: int, n_features: int, *, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n_components = check_positive_int(n_components, "n_components")
        self.n_features = check_positive_int(n_features, "n_features")
        self._factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}
        k = self.n_components
        self.weights = PyroParam(torch.full((k,), 1.0 / k, **self._factory), constraint=constraints.simplex)

    @property
    def has_priors(self) -> bool:
        """Whether the globals are sample sites (Bayesian mixture) rather than parameters."""
        return False

    def components(self, params: dict[str, Tensor]) -> Components:  # pragma: no cover - abstract
        raise NotImplementedError

    def observation(self, x: Tensor) -> Tensor:
        """The observed value for data ``x`` ``(B, d)`` (validated); identity by default."""
        check_batch(x, torch.Size([self.n_features]), like=self.weights_unconstrained, name="x")
        return x

    def to_data_scale(self, value: Tensor) -> Tensor:
        """Inverse of :meth:`observation` for samples (identity by default)."""
        return value

    def params(self) -> dict[str, Tensor]:
        """The current point estimate of the globals (module parameters), by name."""
        return {name: getattr(self, name) for name in self.param_names}

    def sample_globals(self) -> dict[str, Tensor]:
        """The globals of one model run: sample sites with priors, parameters without."""
        return self.params()

    # -- the Pyro model

    def forward(self, x: Tensor | None = None, *, num_samples: int | None = None,
                full_size: int | None = None) -> Tensor:
        """``z ~ Categorical(pi)``, ``x | z ~ p(x | theta_z)`` inside ``pyro.plate("data", B, dim=-1)``.

        Args:
            x: data ``(B, n_features)``; ``None`` to sample from the model.
            num_samples: ``B`` when ``x`` is None.
            full_size: size of the whole training set when ``x`` is a minibatch (the engine passes
                it); the data plate is then scaled by ``full_size / B``.

        Returns:
            The observed site's value ``(..., B, n_features)`` (levels for a categorical mixture).

        Raises:
            ConfigError: both or neither of ``x`` and ``num_samples``.
            DataError: ``x`` of the wrong shape, dtype, device or support.
        """
        if (x is None) == (num_samples is None):
            raise ConfigError(
                "expected either data x of shape (B, n_features) or num_samples, got "
                f"{'both' if x is not None else 'neither'}; pass exactly one"
            )
        if x is None:
            size, obs = check_positive_int(num_samples, "num_samples"), None
        else:
            obs = self.observation(x)
            size = x.shape[0]
        params = self.sample_globals()
        components = self.components(params)
        plate = (
            pyro.plate(DATA_PLATE, full_size, subsample=torch.arange(size, device=params[WEIGHTS].device), dim=-1)
            if full_size is not None and x is not None
            else pyro.plate(DATA_PLATE, size, dim=-1)
        )
        with plate:
            z = pyro.sample(ASSIGNMENT, dist.Categorical(params[WEIGHTS]), infer={"enumerate": "parallel"})
            return pyro.sample(OBSERVED, ComponentEmission(components, z), obs=obs)

    # -- exact marginal and generation

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x) = log sum_k pi_k p(x | theta_k)`` at the point estimate, shape ``(B,)``."""
        params = self.params()
        table = self.components(params).log_prob_table(self.observation(x))  # (K, B)
        return torch.logsumexp(params[WEIGHTS].log().unsqueeze(-1) + table, dim=0)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               return_assignment: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Ancestral samples ``z ~ pi``, ``x ~ p(x | theta_z)`` (THEORY T10) at the point estimate.

        Returns:
            ``x`` ``(n, n_features)`` on the data scale, and the assignments ``(n,)`` if
            ``return_assignment``.
        """
        n = check_positive_int(n, "n")
        params = self.params()
        z = torch.multinomial(params[WEIGHTS], n, replacement=True, generator=generator)
        x = self.to_data_scale(self.components(params).sample(z, generator))
        return (x, z) if return_assignment else x

    # -- EM interface

    def m_step(self, x: Tensor, resp: Tensor, *, reg_covar: float = 0.0) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def set_params(self, **params: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_parameters(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self, name: str, value: Any, shape: tuple[int, ...]) -> Tensor:
        """Check ``value``'s shape and store it into the parameter ``name``."""
        like = self.weights_unconstrained
        value = torch.as_tensor(value).detach().to(device=like.device, dtype=like.dtype)
        if tuple(value.shape) != shape:
            raise DataError(f"expected {name} of shape {shape}, got {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise DataError(f"expected finite {name}, got NaN/inf")
        setattr(self, name, value)
        return value

    def _set_weights(self, weights: Any) -> None:
        w = torch.as_tensor(weights).detach()
        if w.shape == (self.n_components,) and (bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > 1e-6):
            raise DataError(f"expected weights >= 0 that sum to 1, got {w.tolist()}; normalise them first")
        self._write(WEIGHTS, w, (self.n_components,))

    def init_loc_fn(self, x: Any, *, init: str = "k-means++", seed: int | None = None,
                    reg_covar: float = 1e-6) -> Any:
        """An ``init_loc_fn`` for autoguides that starts the globals at a data-driven estimate.

        Identical initial components never separate (THEORY T13), and an autoguide's default
        start puts every mean at the same place; this seeds the components as
        :func:`inference.fit_em` does (``init``), then runs one EM iteration so that the
        variances are those of the seeds' clusters rather than ``reg_covar``.

        Returns:
            ``pyro.infer.autoguide.init_to_value(values=...)`` for the model's global sites.
        """
        from inference._em_steps import initial_responsibilities

        like = self.weights_unconstrained
        data = as_data_tensor(x, name="x", dtype=like.dtype, device=like.device, min_dim=2)
        resp = initial_responsibilities(data, self.n_components, init, np.random.RandomState(seed))
        with torch.no_grad():
            params = self.m_step(data, resp, reg_covar=reg_covar)
            if "covariances" in params:
                params.update(self._natural_params(params.pop("covariances")))
            table = self.components(params).log_prob_table(self.observation(data))  # (K, N)
            resp = torch.softmax(params[WEIGHTS].log().unsqueeze(-1) + table, dim=0).T
            params = self.m_step(data, resp, reg_covar=reg_covar)
        return init_to_value(values=self.sites_from_params(params))

    def _natural_params(self, covariances: Tensor) -> dict[str, Tensor]:
        """The components' own parameters for covariances in scikit-learn's layout."""
        return {}

    def sites_from_params(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Values of the Bayesian model's global sites for given parameters."""
        return {WEIGHTS: params[WEIGHTS]}

    def use_point_estimate(self, guide: Any, *args: Any) -> None:
        """Copy an autoguide's posterior median (the MAP for ``AutoDelta``) into the parameters,
        so that :meth:`log_prob`, :meth:`sample` and the EM result methods use it."""
        with torch.no_grad():
            median = guide.median(*args)
        self.set_params(**self.params_from_sites(median))

    def params_from_sites(self, sites: dict[str, Tensor]) -> dict[str, Tensor]:
        return {WEIGHTS: sites[WEIGHTS]}


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
        if self.covariance in ("full", "tied"):
            return {"scale_tril": torch.linalg.cholesky(covariances)}
        return {VARIANCES: covariances}

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

    def m_step(self, x: Tensor, resp: Tensor, *, reg_covar: float = 0.0) -> dict[str, Tensor]:
        """Closed-form maximiser of ``E_Q[log p(x, z | theta)]`` (THEORY T11; Bishop eqs. 9.24-9.26).

        ``N_k = sum_i r_ik``, ``mu_k = sum_i r_ik x_i / N_k``,
        ``Sigma_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + reg_covar I``, ``pi_k = N_k / N``
        (scikit-learn's ``_estimate_gaussian_parameters``: ``N_k`` gets ``10 eps``; diag keeps the
        diagonal, spherical its mean, tied pools the components).

        Args:
            x: data ``(N, d)``.
            resp: responsibilities ``Q(z_i = k)`` ``(N, K)``, rows summing to 1.
            reg_covar: added to the diagonal of every covariance.

        Returns:
            ``{"weights": (K,), "means": (K, d), "covariances": layout of :attr:`covariances`}``.
        """
        nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # (K,)
        # Centre on the data mean: the uncentred second moments below then cancel little.
        c = x.mean(0)
        xc = x - c  # (N, d)
        mc = (resp.T @ xc) / nk.unsqueeze(-1)  # (K, d)
        if self.covariance == "full":
            second = (resp.T.unsqueeze(-1) * xc).mT @ xc  # (K, d, d): sum_i r_ik xc_i xc_i^T
            cov = second / nk[:, None, None] - mc.unsqueeze(-1) * mc.unsqueeze(-2)
            cov = cov + reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        elif self.covariance == "tied":
            # sum_i sum_k r_ik (x_i - mu_k)(x_i - mu_k)^T / sum_k N_k. scikit-learn uses X^T X here,
            # which equals it when every row of resp sums to one (all EM iterations) but not at a
            # hard initialisation, where it would pool the scatter of every observation.
            mass = resp.sum(1, keepdim=True)  # (N, 1): sum_k r_ik
            cov = ((xc * mass).T @ xc - (nk.unsqueeze(-1) * mc).T @ mc) / nk.sum()
            cov = cov + reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        else:
            cov = (resp.T @ xc.square()) / nk.unsqueeze(-1) - mc.square() + reg_covar  # (K, d)
            if self.covariance == "spherical":
                cov = cov.mean(-1)
        return {WEIGHTS: nk / nk.sum(), MEANS: mc + c, "covariances": cov}

    def set_params(self, *, weights: Any = None, means: Any = None, covariances: Any = None,
                   precisions: Any = None, scale_tril: Any = None, variances: Any = None) -> None:
        """Write parameters (any subset), in scikit-learn's layouts.

        Raises:
            DataError: wrong shapes, or a covariance that is not positive definite (a component
                collapsed onto a point with ``reg_covar=0``); the message names the components.
        """
        k, d = self.n_components, self.n_features
        if weights is not None:
            self._set_weights(weights)
        if means is not None:
            self._write(MEANS, means, (k, d))
        given = [n for n, v in (("covariances", covariances), ("precisions", precisions),
                                ("scale_tril", scale_tril), ("variances", variances)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"expected at most one of covariances, precisions, scale_tril, variances; got {given}")
        if not given:
            return
        like = self.weights_unconstrained
        value = torch.as_tensor({"covariances": covariances, "precisions": precisions,
                                 "scale_tril": scale_tril, "variances": variances}[given[0]]).to(like)
        full = self.covariance in ("full", "tied")
        shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[self.covariance]
        if given[0] == "scale_tril" or given[0] == "variances":
            if (given[0] == "scale_tril") != full:
                raise ConfigError(f"{given[0]} does not apply to covariance={self.covariance!r}; pass covariances")
            self._write(given[0], value, shape)
            return
        if tuple(value.shape) != shape:
            raise DataError(f"expected {given[0]} of shape {shape} for covariance={self.covariance!r}, "
                            f"got {tuple(value.shape)}")
        if full:
            if given[0] == "precisions":
                prec_chol, info = torch.linalg.cholesky_ex(value)
                _raise_not_pd(info, "precision")
                value = torch.cholesky_inverse(prec_chol)
            L, info = torch.linalg.cholesky_ex(value)
            _raise_not_pd(info, "covariance")
            self._write("scale_tril", L, shape)
        else:
            bad = torch.nonzero(~(value > 0).reshape(k, -1).all(-1)).flatten().tolist()
            if bad:
                _raise_not_pd(torch.tensor([1 if i in bad else 0 for i in range(k)]), "variance")
            self._write(VARIANCES, value.reciprocal() if given[0] == "precisions" else value, shape)

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


def _raise_not_pd(info: Tensor, what: str) -> None:
    bad = torch.nonzero(torch.as_tensor(info).reshape(-1) != 0).flatten().tolist()
    if bad:
        raise DataError(
            f"the {what} of component(s) {bad} is not positive definite: the component collapsed onto "
            "a single point or a subspace (ill-defined empirical covariance); increase reg_covar "
            "(e.g. 1e-6), lower n_components, or scale the input data"
        )
