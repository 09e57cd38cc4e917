"""Divergences between distributions and sample sets, their dual bounds, and adversarial training.

- :mod:`.estimators`: KL, JS and f-divergences by Monte Carlo, and their variational (dual)
  bounds; the f-divergence table itself is :mod:`vi_models.gan.f_divergences`;
- :mod:`.distances`: Wasserstein (1-D and sliced) and MMD between sample sets;
- :mod:`.adversarial`: :func:`fit_adversarial`, the GAN / f-GAN training loop.
"""

from .adversarial import AdversarialResult, fit_adversarial, optimal_discriminator
from .distances import mmd, sliced_wasserstein, wasserstein_1d
from .estimators import (
    F_DIVERGENCES,
    donsker_varadhan_bound,
    f_activation,
    f_conjugate,
    f_conjugate_of_activation,
    f_divergence,
    f_dual_bound,
    f_generator,
    f_optimal_critic,
    js_divergence,
    js_dual_bound,
    kl_divergence,
    reverse_kl,
)

__all__ = [
    "kl_divergence",
    "reverse_kl",
    "js_divergence",
    "f_divergence",
    "f_generator",
    "f_conjugate",
    "f_activation",
    "f_conjugate_of_activation",
    "f_optimal_critic",
    "f_dual_bound",
    "donsker_varadhan_bound",
    "js_dual_bound",
    "F_DIVERGENCES",
    "wasserstein_1d",
    "sliced_wasserstein",
    "mmd",
    "fit_adversarial",
    "AdversarialResult",
    "optimal_discriminator",
]
