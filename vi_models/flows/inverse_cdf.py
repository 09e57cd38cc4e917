"""Latent-variable models by the inverse CDF (THEORY T9).

If x ~ F then F(x) ~ U(0, 1); conversely z ~ U(0, 1) gives F^-1(z) ~ F, and z ~ N(0, 1)
gives F^-1(Phi(z)) ~ F. So every one-dimensional distribution with an invertible CDF is a
latent-variable model with a deterministic decoder, the simplest normalizing flow: its
density follows from the change of variables (THEORY T22).
"""

from __future__ import annotations

from typing import Literal

import pyro.distributions as dist
import torch
from torch.distributions.transforms import ComposeTransform, CumulativeDistributionTransform

from vi_models._validation import check_choice
from vi_models.errors import ConfigError

__all__ = ["inverse_cdf_model"]


def inverse_cdf_model(
    target: torch.distributions.Distribution,
    base: Literal["normal", "uniform"] = "normal",
) -> dist.TransformedDistribution:
    """The distribution of x = F^-1(z) (``base="uniform"``) or x = F^-1(Phi(z)) (``"normal"``).

    Args:
        target: a scalar torch distribution with ``cdf`` and ``icdf`` (Normal, Laplace,
            Cauchy, Exponential, Uniform, ...); parameters may be batched.

    Returns:
        A :class:`pyro.distributions.TransformedDistribution` whose samples are distributed
        as ``target`` and whose ``log_prob`` is the change-of-variables density.

    Example:
        >>> model = inverse_cdf_model(dist.Exponential(torch.tensor(2.0)))
        >>> model.sample((3,)).shape
        torch.Size([3])
    """
    check_choice(base, "base", ("normal", "uniform"))
    if target.event_shape != torch.Size():
        raise ConfigError(f"expected a scalar (univariate) target distribution, got event shape {tuple(target.event_shape)}")
    try:
        probe = target.mean.detach() if torch.isfinite(target.mean).all() else target.sample()
        target.icdf(target.cdf(probe))
    except NotImplementedError:
        raise ConfigError(
            f"{type(target).__name__} has no cdf/icdf in torch; use a distribution that does "
            "(Normal, Laplace, Cauchy, Exponential, Uniform)"
        ) from None
    shape = target.batch_shape
    zeros = torch.zeros(shape, dtype=probe.dtype, device=probe.device)
    to_target = CumulativeDistributionTransform(target).inv  # u -> F^-1(u)
    if base == "uniform":
        return dist.TransformedDistribution(dist.Uniform(zeros, zeros + 1.0), [to_target])
    standard = dist.Normal(zeros, zeros + 1.0)
    return dist.TransformedDistribution(
        standard, [ComposeTransform([CumulativeDistributionTransform(standard), to_target])]
    )
