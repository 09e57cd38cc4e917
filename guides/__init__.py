"""Variational families (Pyro guides) for the models of :mod:`vi_models`."""

from .encoder import GaussianEncoder
from .linear import LinearGaussianEncoder

__all__ = ["GaussianEncoder", "LinearGaussianEncoder"]
