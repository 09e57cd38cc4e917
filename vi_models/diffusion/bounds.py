r"""The variational bound L_VLB of a DDPM term by term, and the loss L_simple (Ho et al. 2020).

.. code-block:: text

    L_VLB   = L_T + sum_{t=2}^T L_{t-1} + L_0                                   (eq. 5; THEORY T18)
    L_T     = KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I))                no parameters
    L_{t-1} = KL(N(mu~_t, beta~_t I) || N(mu_theta(x_t, t), sigma_t^2 I)),  x_t ~ q(x_t | x_0)
            = 1/2 sum_d [log(sigma_t^2 / beta~_t) + (beta~_t + (mu~_t - mu_theta)^2) / sigma_t^2 - 1]   (T4)
    L_0     = -log p_theta(x_0 | x_1),  x_1 ~ q(x_1 | x_0)
    L_simple = E_{t, eps} ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2      (eq. 14)

Each L_{t-1} is an analytic Gaussian KL given one draw of x_t, so there is no Monte Carlo over
x_{t-1}; the T terms are computed with one network call per chunk of steps. These are the
numbers the model/guide pair's ELBO (:mod:`inference.engine.diffusion_elbo`) computes through Pyro
sites; the tests check the two against each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vi_models.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .predictions import DiffusionModel

__all__ = ["simple_loss", "vlb_terms"]


def _randn(model: DiffusionModel, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    b = model.schedule.betas
    return torch.randn(shape, generator=generator, device=b.device, dtype=b.dtype)


@torch.no_grad()
def vlb_terms(
    model: DiffusionModel,
    x: Tensor,
    *,
    noise: Tensor | None = None,
    chunk_size: int | None = None,
    use_ema: bool | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The terms of L_VLB per observation (nats), each L_{t-1} an analytic Gaussian KL (T18).

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`.
    x
        Data ``(B, *data_shape)`` in the data's units.
    noise
        The eps of each x_t, shape ``(T, B, *data_shape)`` (default: fresh draws).
    chunk_size
        Steps per network call (default: about 4096 rows per call).
    use_ema
        Use the EMA weights (default: when the model keeps them).
    generator
        For the fresh noise.

    Returns
    -------
    Tensor
        Shape ``(B, T + 1)``: column j holds L_j for j = 0, ..., T - 1 and column T holds L_T;
        ``.sum(-1)`` is L_VLB >= -log p(x).

    Raises
    ------
    DataError
        ``x`` or ``noise`` of the wrong shape, dtype or device.
    """
    model._check_data(x)
    s, ev, T, shape = model.schedule, model.event_dim, model.T, tuple(model.data_shape)
    y0 = s.normalise(x)
    b = x.shape[0]
    if noise is None:
        noise = _randn(model, (T, b, *shape), generator)
    elif tuple(noise.shape) != (T, b, *shape):
        raise DataError(f"expected noise of shape {(T, b, *shape)}, got {tuple(noise.shape)}; one eps per step and row")
    chunk = chunk_size or max(1, 4096 // b)
    terms = torch.empty(b, T + 1, device=x.device, dtype=x.dtype)
    for start in range(1, T + 1, chunk):
        steps = torch.arange(start, min(T, start + chunk - 1) + 1, device=x.device)  # (k,)
        tk = steps.unsqueeze(-1).expand(-1, b)  # (k, B)
        y_t = s.q_sample(y0, tk, noise[steps - 1], ev)  # (k, B, *data_shape), eq. (4)
        mean, var, _ = model.p_mean_variance(y_t, tk, use_ema=use_ema)
        post_mean, post_var = s.q_posterior(y0, y_t, tk, ev)  # eq. (7)
        kl = 0.5 * (torch.log(var / post_var.clamp_min(1e-300)) + (post_var + (post_mean - mean) ** 2) / var - 1)
        kl = kl.expand_as(mean).flatten(2).sum(-1)  # (k, B)
        if start == 1:  # t = 1: the decoder term L_0 instead of a KL (beta~_1 = 0)
            kl[0] = -model.decoder(mean[0], var[0]).log_prob(x)
        terms[:, steps - 1] = kl.T
    abar_T = s.alphas_cumprod[T]
    terms[:, T] = 0.5 * (abar_T * y0**2 + (1 - abar_T) - 1 - torch.log(1 - abar_T)).flatten(1).sum(-1)  # L_T, T4
    return terms


def simple_loss(
    model: DiffusionModel,
    x: Tensor,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    use_ema: bool | None = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """||eps - eps_theta(sqrt(abar_t) y_0 + sqrt(1 - abar_t) eps, t)||^2 per observation (Algorithm 1).

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`.
    x
        Data ``(B, *data_shape)`` in the data's units (standardised inside).
    t
        Steps ``(B,)`` in {1, ..., T} (default: uniform draws).
    noise
        eps ``(B, *data_shape)`` (default: standard normal draws).
    use_ema
        Use the EMA weights (default: the trained network).
    generator
        For the default draws.

    Returns
    -------
    Tensor
        Shape ``(B,)``, differentiable; its mean over uniform t is L_simple.
    """
    model._check_data(x)
    b = x.shape[0]
    if t is None:
        t = torch.randint(1, model.T + 1, (b,), device=x.device, generator=generator)
    t = model.schedule.check_steps(t)
    if noise is None:
        noise = _randn(model, (b, *model.data_shape), generator)
    y_t = model.schedule.q_sample(model.schedule.normalise(x), t, noise, model.event_dim)
    eps, _ = model.predict(y_t, t, use_ema=use_ema)
    return ((noise - eps) ** 2).flatten(1).sum(-1)
