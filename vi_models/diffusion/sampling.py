r"""Sampling from a DDPM: the ancestral chain (Algorithm 2) and DDIM (Song, Meng & Ermon 2021).

Ancestral sampling (Ho et al. 2020, Algorithm 2; THEORY T20, T26):

.. code-block:: text

    x_T ~ N(0, I)
    x_{t-1} = mu_theta(x_t, t) + sigma_t z,   z ~ N(0, I) for t > 1, z = 0 at t = 1

DDIM on a sub-sequence tau_1 = 1 < tau_2 < ... < tau_S = T of the steps (Song et al. 2021,
eq. 12), with x0_theta and eps_theta the network's predictions at (x_{tau_i}, tau_i):

.. code-block:: text

    x_{tau_{i-1}} = sqrt(abar_{tau_{i-1}}) x0_theta + sqrt(1 - abar_{tau_{i-1}} - s_i^2) eps_theta + s_i z
    s_i = eta sqrt((1 - abar_{tau_{i-1}}) / (1 - abar_{tau_i})) sqrt(1 - abar_{tau_i} / abar_{tau_{i-1}})   (eq. 16)

with tau_0 = 0 (abar_0 = 1, so the last step returns x0_theta). eta = 0 is deterministic (the
Euler discretisation of the probability-flow ODE in sqrt((1 - abar) / abar)); with S = T and
eta = 1, s_i^2 = beta~_t and the update equals mu~_t(x0_theta, x_t) + sqrt(beta~_t) z: the
ancestral sampler of the ``"fixed_small"`` model, draw for draw.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .predictions import DiffusionModel

__all__ = ["ancestral_sample", "ancestral_trajectory", "ddim_sample", "ddim_timesteps", "sample"]

Sampler = Literal["ancestral", "ddim"]


def ddim_timesteps(num_steps: int, steps: int) -> Tensor:
    """The DDIM sub-sequence tau: ``steps`` integers from 1 to T, evenly spaced, ascending.

    Examples
    --------
    >>> ddim_timesteps(1000, 5).tolist()
    [1, 251, 500, 750, 1000]
    """
    steps = check_positive_int(steps, "steps", minimum=2)
    if steps > num_steps:
        raise ConfigError(f"expected steps <= T = {num_steps} for DDIM, got {steps}")
    tau = torch.linspace(1, num_steps, steps, dtype=torch.float64).round().long()
    return torch.unique(tau)


def _randn(model: DiffusionModel, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    b = model.schedule.betas
    return torch.randn(shape, generator=generator, device=b.device, dtype=b.dtype)


@torch.no_grad()
def ancestral_sample(
    model: DiffusionModel, n: int, *, generator: torch.Generator | None = None, use_ema: bool | None = None
) -> Tensor:
    """Algorithm 2 of Ho et al.: T network calls. Returns standardised ``(n, *data_shape)``."""
    y = _randn(model, (n, *model.data_shape), generator)  # x_T ~ N(0, I)
    for t in range(model.T, 0, -1):
        steps = torch.full((n,), t, device=y.device, dtype=torch.long)
        mean, var, _ = model.p_mean_variance(y, steps, use_ema=use_ema)
        y = mean + var.sqrt() * _randn(model, y.shape, generator) if t > 1 else mean  # z = 0 at t = 1
    return y


@torch.no_grad()
def ancestral_trajectory(
    model: DiffusionModel,
    n: int,
    times: list[int] | tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    use_ema: bool | None = None,
) -> Tensor:
    """States of the ancestral chain (Algorithm 2) at the steps ``times``, in the data's units.

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`.
    n
        Number of chains.
    times
        Steps in {0, ..., T} to record (T: the draw x_T ~ N(0, I), 0: the sample x_0), any order.
    generator, use_ema
        As :func:`ancestral_sample`; with the same generator the last state equals its draw.

    Returns
    -------
    Tensor
        ``(len(times), n, *data_shape)``, snapshot j at step ``times[j]``.

    Raises
    ------
    ConfigError
        A step outside {0, ..., T}.
    """
    n = check_positive_int(n, "n")
    wanted = [int(t) for t in times]
    if not wanted or any(t < 0 or t > model.T for t in wanted):
        raise ConfigError(f"expected times as steps in 0..T = {model.T}, got {list(times)!r}")
    y = _randn(model, (n, *model.data_shape), generator)  # x_T ~ N(0, I)
    seen = {model.T: y}
    for t in range(model.T, 0, -1):
        steps = torch.full((n,), t, device=y.device, dtype=torch.long)
        mean, var, _ = model.p_mean_variance(y, steps, use_ema=use_ema)
        y = mean + var.sqrt() * _randn(model, y.shape, generator) if t > 1 else mean  # z = 0 at t = 1
        if t - 1 in wanted:
            seen[t - 1] = y
    return model.schedule.denormalise(torch.stack([seen[t] for t in wanted]))


@torch.no_grad()
def ddim_sample(
    model: DiffusionModel,
    n: int,
    *,
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    use_ema: bool | None = None,
    clip_x0: float | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on ``steps`` time steps. Returns standardised ``(n, *data_shape)``.

    ``clip_x0``: clamp the predicted (standardised) x_0 to ``[-clip_x0, clip_x0]`` and recompute
    the noise from it (diffusers' ``clip_sample``). Near t = T the prediction
    x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) divides the network's error by
    sqrt(abar_T), which is ~5e-4 for the cosine schedule; the clamp keeps a coarse DDIM grid that
    starts there from throwing samples far outside the data.
    """
    if not (isinstance(eta, (int, float)) and eta >= 0):
        raise ConfigError(f"expected eta >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta!r}")
    if clip_x0 is not None and not (isinstance(clip_x0, (int, float)) and math.isfinite(clip_x0) and clip_x0 > 0):
        raise ConfigError(f"expected clip_x0 > 0 (a bound on the standardised x_0) or None, got {clip_x0!r}")
    s = model.schedule
    tau = ddim_timesteps(model.T, steps).tolist()
    y = _randn(model, (n, *model.data_shape), generator)
    for i in range(len(tau) - 1, -1, -1):
        t, t_prev = tau[i], (tau[i - 1] if i > 0 else 0)
        ab_t, ab_prev = s.alphas_cumprod[t], s.alphas_cumprod[t_prev]
        eps, x0 = model.predict(y, torch.full((n,), t, device=y.device, dtype=torch.long), use_ema=use_ema)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (y - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()  # the noise consistent with the clamped x_0
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))  # eq. (16)
        y = ab_prev.sqrt() * x0 + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * eps
        if t_prev > 0 and eta > 0:
            y = y + sigma * _randn(model, y.shape, generator)
    return y


def sample(
    model: DiffusionModel,
    n: int,
    *,
    sampler: Sampler = "ancestral",
    steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    use_ema: bool | None = None,
    clip_x0: float | None = None,
) -> Tensor:
    """``n`` samples of ``model`` in the data's units, shape ``(n, *data_shape)``.

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`.
    n
        Number of samples.
    sampler
        ``"ancestral"`` (T calls of the network) or ``"ddim"`` (``steps`` calls).
    steps
        DDIM steps S, 2 <= S <= T (default: T, or 50 if T > 50).
    eta
        DDIM stochasticity: 0 deterministic, 1 the posterior variance beta~.
    generator
        Random generator on the model's device, for reproducible draws.
    use_ema
        Use the EMA weights (default: when the model keeps them).
    clip_x0
        DDIM only: clamp the standardised x_0 prediction (see :func:`ddim_sample`).

    Raises
    ------
    ConfigError
        Unknown sampler, ``steps`` with the ancestral sampler, steps out of range, eta < 0.
    """
    n = check_positive_int(n, "n")
    check_choice(sampler, "sampler", ("ancestral", "ddim"))
    if sampler == "ancestral":
        if steps is not None and steps != model.T:
            raise ConfigError(
                f"the ancestral sampler runs all T = {model.T} steps, got steps={steps}; "
                "use sampler='ddim' for fewer steps"
            )
        if clip_x0 is not None:
            raise ConfigError("clip_x0 applies to sampler='ddim' only (the ancestral sampler uses the posterior mean)")
        y = ancestral_sample(model, n, generator=generator, use_ema=use_ema)
    else:
        y = ddim_sample(model, n, steps=steps or min(model.T, 50), eta=eta, generator=generator, use_ema=use_ema,
                        clip_x0=clip_x0)
    return model.schedule.denormalise(y)
