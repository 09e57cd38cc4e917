"""vi-models: deep generative models written as Pyro model/guide pairs.

Each model is a :class:`~pyro.nn.PyroModule` called as ``model(batch)``; its guides live in
:mod:`guides`, and :func:`inference.fit` fits any pair.
"""

from . import _kl  # noqa: F401  registers KL(MultivariateNormal || Independent(Normal)) for TraceMeanField_ELBO
from .autoregressive import MADE, AutoregressiveDistribution
from .diffusion import DDPM
from .diffusion_nets import TimeMLP, UNet
from .diffusion_schedules import NoiseSchedule
from .discrete_mixture import BernoulliMixture, CategoricalMixture
from .flow_bases import GaussianMixtureBase
from .flow_layers import ActNorm
from .flow_prior_vae import FlowPriorVAE
from .flows import MAF, NormalizingFlow, RealNVP, SplineFlow
from .gan import GAN, NoDensityError
from .inverse_cdf import inverse_cdf_model
from .kde import KERNELS, KernelDensity, log_kernel_normalizer
from .linear_gaussian import LinearGaussian
from .mixture import ASSIGNMENT, GaussianMixture, MixturePrior
from .mixture_denoiser import GaussianMixtureDenoiser
from .optimal_denoiser import OptimalDenoiser
from .vae import DATA_PLATE, LATENT, OBSERVED, VAE

__all__ = [
    "DATA_PLATE",
    "LATENT",
    "OBSERVED",
    "VAE",
    "LinearGaussian",
    "inverse_cdf_model",
    "KernelDensity",
    "KERNELS",
    "log_kernel_normalizer",
    "GAN",
    "NoDensityError",
    "GaussianMixture",
    "BernoulliMixture",
    "CategoricalMixture",
    "MixturePrior",
    "ASSIGNMENT",
    "DDPM",
    "NoiseSchedule",
    "GaussianMixtureDenoiser",
    "OptimalDenoiser",
    "TimeMLP",
    "UNet",
    "NormalizingFlow",
    "RealNVP",
    "SplineFlow",
    "MAF",
    "ActNorm",
    "GaussianMixtureBase",
    "FlowPriorVAE",
    "MADE",
    "AutoregressiveDistribution",
]
