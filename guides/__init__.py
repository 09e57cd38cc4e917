"""Variational families (Pyro guides) for the models of :mod:`vi_models`."""

from .diffusion import ForwardDiffusion
from .encoder import GaussianEncoder
from .flow_encoder import FlowEncoder
from .linear import LinearGaussianEncoder

__all__ = ["GaussianEncoder", "LinearGaussianEncoder", "FlowEncoder", "ForwardDiffusion"]
