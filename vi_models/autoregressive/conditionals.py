"""The one-dimensional conditionals p(x_j | x_<j) of a MADE, from the raw parameters of one pass.

Each coordinate's network outputs ``params`` of shape ``(..., P)`` parameterise one of:

.. code-block:: text

    gaussian_mixture:  sum_c softmax(l)_c N(mu_c, (softplus(s_c) + SCALE_FLOOR)^2)   P = 3 K (l, mu, s)
    bernoulli:         Bernoulli(sigmoid(l)),   x in {0, 1}                           P = 1
    categorical:       Categorical(softmax(l)), levels k in {0, ..., L-1}             P = L

:func:`conditional_log_prob` scores site values and :func:`draw_conditional` draws them; the
model (:class:`vi_models.MADE`) runs the masked network that produces ``params``.
"""

from __future__ import annotations

from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CONDITIONALS", "Conditional", "SCALE_FLOOR", "conditional_log_prob", "draw_conditional", "split_mixture"]

Conditional = Literal["gaussian_mixture", "bernoulli", "categorical"]
CONDITIONALS: Final = ("gaussian_mixture", "bernoulli", "categorical")
#: Floor on a mixture component's standard deviation: keeps log p bounded when a component
#: collapses onto a single training point.
SCALE_FLOOR: Final = 1e-3


def split_mixture(params: Tensor, num_components: int) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, means and scales ``(..., K)`` each, from ``params`` ``(..., 3 K)``."""
    k = num_components
    return params[..., :k], params[..., k : 2 * k], F.softplus(params[..., 2 * k :]) + SCALE_FLOOR


def conditional_log_prob(kind: Conditional, params: Tensor, value: Tensor, num_components: int = 1) -> Tensor:
    """``log p(x_j | x_<j)`` per coordinate.

    Parameters
    ----------
    kind
        One of :data:`CONDITIONALS`.
    params
        ``(..., D, P)`` raw parameters.
    value
        ``(..., D)`` site values: reals, {0, 1} floats, or levels (long).
    num_components
        ``K`` of the Gaussian mixture.

    Returns
    -------
    Tensor
        ``(..., D)``, nats.
    """
    if kind == "gaussian_mixture":
        logits, loc, scale = split_mixture(params, num_components)
        log_comp = torch.distributions.Normal(loc, scale).log_prob(value.unsqueeze(-1))  # (..., D, K)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_comp, -1)
    if kind == "bernoulli":
        return -F.binary_cross_entropy_with_logits(params[..., 0], value, reduction="none")
    return F.log_softmax(params, -1).gather(-1, value.unsqueeze(-1)).squeeze(-1)


def draw_conditional(kind: Conditional, params: Tensor, num_components: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
    """One draw from each row's conditional: ``params`` ``(n, P)`` -> site values ``(n,)``."""
    if kind == "gaussian_mixture":
        logits, loc, scale = split_mixture(params, num_components)
        c = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)  # (n, 1)
        noise = torch.randn(c.shape, generator=generator, device=params.device, dtype=params.dtype)
        return (loc.gather(-1, c) + scale.gather(-1, c) * noise).squeeze(-1)
    if kind == "bernoulli":
        u = torch.rand(params.shape[:-1], generator=generator, device=params.device, dtype=params.dtype)
        return (u < torch.sigmoid(params[..., 0])).to(params.dtype)
    return torch.multinomial(torch.softmax(params, -1), 1, generator=generator).squeeze(-1)
