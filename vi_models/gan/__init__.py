"""Generative adversarial networks and f-GANs: x = G(z), trained against a critic (THEORY T28-T31).

- :mod:`.gan`: :class:`GAN` (generator, critic, the minimax and f-GAN objectives);
- :mod:`.f_divergences`: generators f, conjugates f*, output activations and optimal critics.
"""

from .f_divergences import F_DIVERGENCES
from .gan import GAN, NoDensityError

__all__ = ["GAN", "NoDensityError", "F_DIVERGENCES"]
