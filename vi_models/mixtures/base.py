r"""The shared machinery of finite mixture models as Pyro models (THEORY T10).

:class:`MixtureModel` is the base of :class:`vi_models.GaussianMixture` and the discrete
mixtures of :mod:`vi_models.mixtures.discrete`: the weights ``pi`` (a parameter, or the site
``"weights"`` under a Dirichlet prior), the enumerated assignment ``z_i ~ Categorical(pi)`` in the
plate ``"data"``, the emission ``x_i | z_i`` from a :class:`ComponentEmission`, and the helpers
EM and SVI share (initialisation from the data, log-densities of every component at once).
See :mod:`vi_models.mixtures.gaussian` for the generative story.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import init_to_value
from pyro.nn import PyroModule, PyroParam
from torch import Tensor

from vi_models._validation import as_data_tensor, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError
from vi_models.nets import check_batch
from vi_models.sites import DATA_PLATE, OBSERVED

from .chunks import sub_chunks
from .components import ComponentEmission, Components
from .init import initial_responsibilities

__all__ = ["ASSIGNMENT", "COMPONENT_PLATE", "WEIGHTS", "MixtureModel"]

#: The discrete assignment site z (enumerated); hide it from autoguides.
ASSIGNMENT: Final = "assignment"
#: The mixture weights' sample site under a prior (a parameter of the same name without one).
WEIGHTS: Final = "weights"
#: Plate of the per-component globals (not nested with the data plate, so it shares dim -1).
COMPONENT_PLATE: Final = "components"


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

    # -- EM interface: the closed-form M-step through additive sufficient statistics (:mod:`.statistics`)

    def sufficient_statistics(self, x: Tensor, resp: Tensor, *,
                              shift: Tensor | None = None) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Sums over the observations of a chunk that the M-step needs; they add over disjoint chunks.

        Args:
            x: data ``(n, n_features)``.
            resp: responsibilities ``Q(z_i = k)`` ``(n, K)``.
            shift: reference point ``(n_features,)`` the moments are centred on, the same for every
                chunk of one M-step (``None``: the origin); the discrete mixtures ignore it.
        """
        raise NotImplementedError

    def m_step_from_statistics(self, stats: dict[str, Tensor], *, shift: Tensor | None = None,
                               reg_covar: float = 0.0) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The M-step's parameters (the layout :meth:`set_params` takes) from summed statistics."""
        raise NotImplementedError

    def m_step(self, x: Tensor, resp: Tensor, *, reg_covar: float = 0.0) -> dict[str, Tensor]:
        """Closed-form maximiser of ``E_Q[log p(x, z | theta)]`` (THEORY T11) on in-memory data.

        :meth:`sufficient_statistics` of ``x`` centred on its mean, summed over sub-chunks of its
        rows (:mod:`.chunks`), then :meth:`m_step_from_statistics`: the arithmetic of a streamed fit,
        in one chunk.

        Args:
            x: data ``(N, n_features)``.
            resp: responsibilities ``(N, K)``, rows summing to 1.
            reg_covar: added to the diagonal of every covariance (unused by the discrete mixtures).

        Returns:
            The parameters by name (``weights`` and the components' own), as :meth:`set_params` takes them.
        """
        shift = x.mean(0)
        stats: dict[str, Tensor] = {}
        for rows in sub_chunks(x.shape[0], self.n_components):
            for k, value in self.sufficient_statistics(x[rows], resp[rows], shift=shift).items():
                stats[k] = stats[k] + value if k in stats else value
        return self.m_step_from_statistics(stats, shift=shift, reg_covar=reg_covar)

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
        like = self.weights_unconstrained
        data = as_data_tensor(x, name="x", dtype=like.dtype, device=like.device, min_dim=2)
        resp = initial_responsibilities(data, self.n_components, init, np.random.RandomState(seed))
        with torch.no_grad():
            params = self.m_step(data, resp, reg_covar=reg_covar)
            if "covariances" in params:
                params.update(self._natural_params(params.pop("covariances")))
            params = {name: value.to(like) for name, value in params.items()}  # the M-step's float64
            table = self.components(params).log_prob_table(self.observation(data))  # (K, N)
            resp = torch.softmax(params[WEIGHTS].log().unsqueeze(-1) + table, dim=0).T
            params = self.m_step(data, resp, reg_covar=reg_covar)
        return init_to_value(values={name: value.to(like) for name, value in self.sites_from_params(params).items()})

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
