"""Variational families (Pyro guides) for the models of :mod:`vi_models`."""

from .encoder import GaussianEncoder

__all__ = ["GaussianEncoder"]
