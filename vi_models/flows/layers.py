"""Building blocks of the normalizing flows: ActNorm, near-identity initialisation, cache clearing.

:class:`ActNorm` (Kingma & Dhariwal 2018, Sec. 3.1) is an affine layer initialised from the data
so the flow starts on standardised inputs; :func:`near_identity_` makes a conditioner network
output (almost) the identity transform at initialisation; :func:`clear_transform_caches` drops
the cached inverses of Pyro's transforms after a parameter update. Used by
:mod:`vi_models.flows` and :class:`guides.FlowEncoder`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import (
    Transform,
)

from vi_models.errors import ConfigError

__all__ = ["ActNorm", "clear_transform_caches", "near_identity_"]


def clear_transform_caches(module: nn.Module) -> None:
    """Forget the cached ``(x, y)`` pair of every transform inside ``module``.

    Pyro's transforms cache their last input/output and return the cached inverse when handed
    the *same tensor object* again; after a parameter update that inverse is stale. Every
    distribution a flow builds starts from cleared caches.
    """
    for sub in module.modules():
        if isinstance(sub, Transform) and getattr(sub, "_cache_size", 0) == 1:
            sub._cached_x_y = None, None


#: Pre-softplus value giving a spline knot derivative of exactly 1 (Pyro adds a floor of 1e-3).
_IDENTITY_DERIVATIVE = math.log(math.expm1(1.0 - 1e-3))
#: Scale of the output layer of every conditioner network at construction.
_OUTPUT_INIT_SCALE = 1e-2


@torch.no_grad()
def near_identity_(net: nn.Module, *, bias: Tensor | float = 0.0) -> nn.Module:
    """Shrink the output layer of a conditioner network so that its layer starts near the identity.

    Weights of the last layer (and of a MADE's skip layer) are scaled by 1e-2 rather than
    zeroed, as in Glow's zero initialisation (Kingma & Dhariwal 2018, Sec. 3.3), so every
    parameter still receives a gradient at the first step; the output bias is set to ``bias``.
    A randomly initialised spline stack is otherwise so wiggly that its density has features
    narrower than any grid and trains poorly.

    Parameters
    ----------
    net
        A Pyro ``DenseNN``/``AutoRegressiveNN`` (or conditional version): ``net.layers[-1]``
        is its output layer.
    bias
        Output bias, a scalar or a tensor of the output size.

    Returns
    -------
    nn.Module
        ``net``, modified in place.
    """
    last = net.layers[-1]
    last.weight.mul_(_OUTPUT_INIT_SCALE)
    last.bias.copy_(torch.as_tensor(bias, dtype=last.bias.dtype).expand_as(last.bias))
    skip = getattr(net, "skip_layer", None)
    if skip is not None:
        skip.weight.mul_(_OUTPUT_INIT_SCALE)
    return net


def _spline_identity_bias(rest: int, count_bins: int) -> Tensor:
    """Output bias of a quadratic-spline conditioner giving equal bins and unit slopes (the identity)."""
    return torch.cat([torch.zeros(2 * rest * count_bins), torch.full((rest * (count_bins - 1),), _IDENTITY_DERIVATIVE)])


def _check_float(value: Any, name: str, *, low: float, high: float = math.inf, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low < value < high):
        span = f"in ({low}, {high})" if math.isfinite(high) else f"> {low}"
        raise ConfigError(f"expected {name} to be a number {span}, got {value!r}{hint}")
    return float(value)


class ActNorm(TransformModule):
    r"""Learned elementwise affine map ``y = x * exp(log_scale) + loc`` (Glow, Sec. 3.1).

    ``log|det dy/dx| = sum_j log_scale_j``, the same for every ``x``. Starts as the identity;
    :meth:`NormalizingFlow.initialize` sets it from data.

    Parameters
    ----------
    dim
        Size ``D`` of the last (event) dimension.
    device, dtype
        Where and in which dtype the parameters are created.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(cache_size=1)
        self.loc = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        self.log_scale = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def _call(self, x: Tensor) -> Tensor:
        return x * torch.exp(self.log_scale) + self.loc

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])
