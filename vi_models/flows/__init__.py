"""Normalizing flows: x = f(z), z ~ p_0, log p(x) = log p_0(f^-1(x)) + log |det d f^-1 / dx| (THEORY T22).

- :mod:`.normalizing_flow`: :class:`NormalizingFlow`, the Pyro model every flow shares;
- :mod:`.models`: :class:`RealNVP`, :class:`SplineFlow`, :class:`MAF`;
- :mod:`.layers`: :class:`ActNorm` and layer helpers; :mod:`.bases`: the learned mixture base;
- :mod:`.prior_vae`: :class:`FlowPriorVAE`, a VAE whose prior is a flow;
- :mod:`.inverse_cdf`: :func:`inverse_cdf_model`, the one-dimensional flow F^-1 (THEORY T9).
"""

from .bases import GaussianMixtureBase
from .inverse_cdf import inverse_cdf_model
from .layers import ActNorm
from .models import MAF, RealNVP, SplineFlow
from .normalizing_flow import NormalizingFlow
from .prior_vae import FlowPriorVAE

__all__ = [
    "NormalizingFlow",
    "RealNVP",
    "SplineFlow",
    "MAF",
    "ActNorm",
    "GaussianMixtureBase",
    "FlowPriorVAE",
    "inverse_cdf_model",
]
