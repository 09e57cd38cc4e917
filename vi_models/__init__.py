"""vi-models: deep generative models written as Pyro model/guide pairs (what the data is).

Each model is a :class:`~pyro.nn.PyroModule` called as ``model(batch)``; its guides live in
:mod:`guides`, and :func:`inference.fit` fits any pair. One subpackage per family (``vae``,
``mixtures``, ``diffusion``, ``flows``, ``autoregressive``, ``kde``, ``gan``) above the shared
pieces (``nets``, ``sites``, ``errors``, ``_validation``, ``_math``). Importing this package
changes no global setting: the engine (:mod:`inference`) makes Pyro's ``module_local_params``
setting when it is imported.
"""

from . import _kl  # noqa: F401  registers KL(MultivariateNormal || Independent(Normal)) for TraceMeanField_ELBO
from .autoregressive import MADE, AutoregressiveDistribution
from .diffusion import DDPM, GaussianMixtureDenoiser, NoiseSchedule, OptimalDenoiser, TimeMLP, UNet
from .flows import (
    MAF,
    ActNorm,
    FlowPriorVAE,
    GaussianMixtureBase,
    NormalizingFlow,
    RealNVP,
    SplineFlow,
    inverse_cdf_model,
)
from .gan import GAN, NoDensityError
from .kde import KERNELS, KernelDensity, log_kernel_normalizer
from .mixtures import ASSIGNMENT, BernoulliMixture, CategoricalMixture, GaussianMixture, MixturePrior
from .sites import DATA_PLATE, LATENT, OBSERVED
from .vae import VAE, LinearGaussian

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
