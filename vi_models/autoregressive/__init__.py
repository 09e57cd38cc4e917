"""Autoregressive densities p(x) = prod_d p(x_d | x_<d) (MADE, Germain et al. 2015).

- :mod:`.made`: :class:`MADE`, the masked network and its Pyro model;
- :mod:`.distribution`: :class:`AutoregressiveDistribution`, its exact ``log_prob`` and sampler.
"""

from .distribution import AutoregressiveDistribution
from .made import MADE

__all__ = ["MADE", "AutoregressiveDistribution"]
