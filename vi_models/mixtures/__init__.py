"""Finite mixtures z ~ Categorical(pi), x | z = k ~ p(x | theta_k), fitted by EM or by SVI with enumeration.

- :class:`GaussianMixture` (full, diag, spherical or tied covariances; optional priors:
  :class:`MixturePrior`), :class:`BernoulliMixture`, :class:`CategoricalMixture`;
- :mod:`.base`: :class:`MixtureModel`, the Pyro program and closed-form M-step they share;
- :mod:`.statistics`: the M-steps' sufficient statistics, additive over chunks of data (what
  lets :func:`inference.fit_em` stream a file and run on several processes);
- :mod:`.degenerate`: covariances factorised in float64 with jitter retries
  (:class:`NumericalJitterWarning`), degenerate components and their re-seeding;
- :mod:`.chunks`: the sub-chunks of rows an E-step takes at a time;
- :mod:`.components`: the component families; :mod:`.init`: the initial responsibilities.
"""

from .base import ASSIGNMENT, COMPONENT_PLATE, WEIGHTS, MixtureModel
from .components import ComponentEmission, Components, GaussianComponents
from .degenerate import NumericalJitterWarning
from .discrete import BernoulliMixture, CategoricalMixture
from .gaussian import GaussianMixture, MixturePrior
from .init import INIT_METHODS, initial_responsibilities

__all__ = [
    "ASSIGNMENT",
    "COMPONENT_PLATE",
    "WEIGHTS",
    "MixtureModel",
    "Components",
    "ComponentEmission",
    "GaussianComponents",
    "GaussianMixture",
    "MixturePrior",
    "BernoulliMixture",
    "CategoricalMixture",
    "INIT_METHODS",
    "initial_responsibilities",
    "NumericalJitterWarning",
]
