r"""What a DDPM's network predicts, in every parameterisation: the mixin behind ``DDPM.predict``.

The network of :class:`vi_models.DDPM` predicts the noise eps, the clean data x0 or the velocity
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022); with a ``base`` (such as
:class:`vi_models.GaussianMixtureDenoiser`) it predicts the residual over the base's noise. Given
y_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, any one of (eps, x0, v) determines the others, and
the reverse kernel's mean follows from eps (Ho et al. 2020, eq. 11) or from x0 (eq. 7).
:class:`NoisePredictions` is a mixin for a module with ``schedule``, ``event_dim``,
``prediction``, ``_net(use_ema)`` and an optional ``base`` submodule.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from .schedules import NoiseSchedule

__all__ = ["DiffusionModel", "NoisePredictions"]


class DiffusionModel(Protocol):
    """What the bounds, samplers and ODE likelihood of this package read from a DDPM.

    :class:`vi_models.DDPM` is one; the functions of :mod:`.bounds`, :mod:`.sampling` and
    :mod:`.ode` take any object with these members, so they import no model class.
    """

    schedule: NoiseSchedule
    T: int
    data_shape: torch.Size
    event_dim: int
    prediction: str
    training: bool

    def predict(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> tuple[Tensor, Tensor]: ...

    def output(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> Tensor: ...

    def p_mean_variance(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> tuple[Tensor, Tensor, Tensor]: ...

    def decoder(self, mean: Tensor, var: Tensor) -> Any: ...

    def _check_data(self, x: Any) -> Tensor: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


class NoisePredictions:
    """Mixin: :meth:`predict`, :meth:`output` and :meth:`p_mean_variance` (see the module docstring)."""

    def predict(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> tuple[Tensor, Tensor]:
        """eps_theta and x0_theta at standardised ``y_t`` and time ``t``, whatever the network predicts.

        Parameters
        ----------
        y_t
            Noisy standardised data, shape ``(..., *data_shape)``.
        t
            Steps, shape broadcastable to ``y_t.shape[:-event_dim]``: long (integer steps, the
            tables are indexed) or floating (real t in [0, T], the continuous schedule).
        use_ema
            Use the EMA weights (``None``: when kept).

        Returns
        -------
        eps, x0
            Both shaped like ``y_t``.
        """
        ev, s = self.event_dim, self.schedule
        t = t.expand(y_t.shape[: y_t.dim() - ev])
        if t.is_floating_point():
            abar = s.alphas_cumprod_at(t).reshape(t.shape + (1,) * ev).to(y_t.dtype)
            sqrt_ab, sqrt_1m = abar.sqrt(), (1 - abar).sqrt()
        else:
            sqrt_ab = s.gather(s.sqrt_alphas_cumprod, t, ev)
            sqrt_1m = s.gather(s.sqrt_one_minus_alphas_cumprod, t, ev)
        out = self.output(y_t, t.to(y_t.dtype), use_ema=use_ema)
        if self.prediction == "eps":
            return out, (y_t - sqrt_1m * out) / sqrt_ab
        if self.prediction == "x0":
            return (y_t - sqrt_ab * out) / sqrt_1m, out
        # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, Sec. 4)
        return sqrt_ab * out + sqrt_1m * y_t, sqrt_ab * y_t - sqrt_1m * out

    def output(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> Tensor:
        """What the model predicts (``prediction``) at ``y_t`` and real times ``t``: the network's
        output, plus the :attr:`base`'s noise converted to that parameterisation when there is one."""
        out = self._net(use_ema)(y_t, t)
        base = self._modules.get("base")
        if base is None:
            return out
        eps = base(y_t, t)
        if self.prediction == "eps":
            return out + eps
        abar = self.schedule.alphas_cumprod_at(t).reshape(t.shape + (1,) * self.event_dim).to(y_t.dtype)
        if self.prediction == "x0":
            return out + (y_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        # v = sqrt(abar) eps - sqrt(1 - abar) x0 = (eps - sqrt(1 - abar) y_t) / sqrt(abar)
        return out + (eps - (1 - abar).sqrt() * y_t) / abar.sqrt()

    def p_mean_variance(self, y_t: Tensor, t: Tensor, *, use_ema: bool | None = False) -> tuple[Tensor, Tensor, Tensor]:
        """Mean mu_theta, variance sigma_t^2 and eps_theta of p_theta(x_{t-1} | x_t) (eq. 1, 11).

        Parameters
        ----------
        y_t
            Standardised state, shape ``(..., *data_shape)``.
        t
            Integer steps in {1, ..., T} (long), shape ``y_t.shape[:-event_dim]`` (broadcastable).

        Returns
        -------
        mean, variance, eps
            ``mean`` and ``eps`` like ``y_t``; ``variance`` shape ``(*t.shape, 1, ..., 1)``.
        """
        ev, s = self.event_dim, self.schedule
        t = t.expand(y_t.shape[: y_t.dim() - ev])
        eps, x0 = self.predict(y_t, t, use_ema=use_ema)
        if self.prediction == "eps":
            # eq. (11): mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
            mean = s.gather(s.sqrt_recip_alphas, t, ev) * (y_t - s.gather(s.eps_coefs, t, ev) * eps)
        else:
            mean = s.gather(s.posterior_mean_coef1, t, ev) * x0 + s.gather(s.posterior_mean_coef2, t, ev) * y_t  # eq. (7)
        return mean, s.gather(s.reverse_variance, t, ev), eps
