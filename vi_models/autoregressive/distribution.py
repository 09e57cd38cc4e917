"""A :class:`vi_models.MADE`'s density as a Pyro distribution: the ``obs`` site of its model.

``MADE.forward`` observes the data through :class:`AutoregressiveDistribution`, so Pyro's
traces, ``Predictive`` and the ELBOs see one site whose ``log_prob`` is the exact autoregressive
log-likelihood p(x) = prod_j p(x_j | x_{<j}) (one masked pass) and whose ``sample`` is the
ancestral sampler (D passes).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn

__all__ = ["AutoregressiveDistribution", "AutoregressiveModel"]


class AutoregressiveModel(Protocol):
    """What the distribution reads from its model (:class:`vi_models.MADE` is one)."""

    nets: nn.ModuleList
    data_shape: torch.Size
    dim: int
    conditional: str
    num_levels: int

    def _site_log_prob(self, value: Tensor) -> Tensor: ...

    def _sample_sites(self, n: int) -> Tensor: ...


class AutoregressiveDistribution(TorchDistribution):
    """A :class:`MADE`'s ``p(x)`` as a Pyro distribution over site values (levels for categorical).

    ``log_prob`` is one masked pass (teacher forcing); ``sample`` is ancestral (``D`` passes);
    no reparameterised samples.

    Parameters
    ----------
    made
        The model whose density this is.
    batch_shape
        Batch shape; the event shape is ``(D,)``.
    """

    arg_constraints: ClassVar[dict] = {}
    has_rsample = False

    def __init__(self, made: AutoregressiveModel, batch_shape: tuple[int, ...] = (), validate_args: bool | None = None) -> None:
        self.made = made
        # Reading made.nets inside the model's call emits Pyro "param" sites for its weights;
        # Trace_ELBO.loss_and_grads only back-propagates when a trace holds such sites.
        self.nets = made.nets
        super().__init__(torch.Size(batch_shape), made.data_shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        if self.made.conditional == "gaussian_mixture":
            return constraints.real_vector
        if self.made.conditional == "bernoulli":
            return constraints.independent(constraints.boolean, 1)
        return constraints.independent(constraints.integer_interval(0, self.made.num_levels - 1), 1)

    def expand(self, batch_shape: Any, _instance: Any = None) -> AutoregressiveDistribution:
        return AutoregressiveDistribution(self.made, torch.Size(batch_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        lp = self.made._site_log_prob(value)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        return self.made._sample_sites(max(1, math.prod(shape))).reshape(*shape, self.made.dim)
