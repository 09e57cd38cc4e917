"""Closed-form noise predictors eps*(x_t, t) = E[eps | x_t] of known data distributions (THEORY T15, T16).

- :class:`OptimalDenoiser`: the empirical distribution of the training points;
- :class:`GaussianMixtureDenoiser`: a Gaussian mixture, usable as a DDPM's ``base``.
"""

from .mixture import GaussianMixtureDenoiser
from .optimal import OptimalDenoiser

__all__ = ["OptimalDenoiser", "GaussianMixtureDenoiser"]
