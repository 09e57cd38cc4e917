"""Variational autoencoders: z ~ p(z), x | z ~ p_theta(x | z), with an amortised guide q_phi(z | x).

- :class:`VAE`: Gaussian latent, Gaussian, Bernoulli or categorical decoder (Kingma & Welling 2014).
- :class:`LinearGaussian`: the linear-Gaussian (probabilistic PCA) model, whose exact
  posterior and evidence check the ELBO identities (THEORY T1-T4).
"""

from vi_models.sites import DATA_PLATE, LATENT, OBSERVED

from .linear_gaussian import LinearGaussian
from .vae import VAE

__all__ = ["DATA_PLATE", "LATENT", "OBSERVED", "VAE", "LinearGaussian"]
