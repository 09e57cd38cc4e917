r"""The forward process of a DDPM as a Pyro guide: the fixed encoder q(x_{1:T} | x_0).

Ho et al. (2020) read a diffusion model as a hierarchical VAE whose encoder has no
parameters. Factorised from the top (eq. 5 and 6-7; THEORY T14, T17):

.. code-block:: text

    q(x_{1:T} | x_0) = q(x_T | x_0) prod_{t=2}^T q(x_{t-1} | x_t, x_0)
    q(x_T | x_0)          = N(sqrt(abar_T) x_0, (1 - abar_T) I)
    q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)

so that every latent site of :class:`vi_models.DDPM` has a Gaussian partner and
``TraceMeanField_ELBO`` computes each L_{t-1} as an analytic KL. Under the per-step
objectives of :mod:`inference.engine.diffusion_elbo` the guide draws, per observation, the step
t, the state x_t ~ q(x_t | x_0) and x_{t-1} ~ q(x_{t-1} | x_t, x_0), with the same scales as
the model (see :mod:`vi_models.diffusion.sites`).

References
----------
J. Ho, A. Jain and P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from vi_models.diffusion.objectives import (
    DiffusionObjective,
    ObjectiveSpec,
    resolve_objective,
)
from vi_models.diffusion.schedules import NoiseSchedule
from vi_models.diffusion.sites import (
    PREVIOUS,
    PRIOR,
    STATE,
    TIME,
    TIME_PLATE,
    TimeStep,
    chain_site,
)
from vi_models.errors import ConfigError
from vi_models.nets import check_batch
from vi_models.sites import DATA_PLATE

__all__ = ["ForwardDiffusion"]


class ForwardDiffusion(PyroModule):
    """The fixed forward process q(x_{1:T} | x_0) of a DDPM, as a Pyro guide (no parameters).

    Parameters
    ----------
    schedule
        The model's :class:`vi_models.diffusion.schedules.NoiseSchedule` (``model.schedule``),
        shared, not copied: it also carries the data standardisation.
    data_shape
        Event shape of one observation; default: every dimension after the batch's first.

    Raises
    ------
    ConfigError
        ``schedule`` is not a :class:`NoiseSchedule`.

    Examples
    --------
    >>> from vi_models.diffusion import DDPM
    >>> model = DDPM(2, T=4, schedule="cosine", hidden_dim=8, num_blocks=1)
    >>> guide = ForwardDiffusion(model.schedule)
    >>> loss = pyro.infer.TraceMeanField_ELBO().loss(model, guide, torch.randn(5, 2))
    """

    def __init__(self, schedule: NoiseSchedule, data_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise ConfigError(
                f"expected the model's NoiseSchedule (ForwardDiffusion(model.schedule)), got {type(schedule).__name__}"
            )
        self.schedule = schedule  # shared with the model (same object)
        self._data_shape = None if data_shape is None else torch.Size(data_shape)

    @property
    def schedule(self) -> NoiseSchedule:
        """The model's schedule (a submodule; read past PyroModule's per-access bookkeeping)."""
        return self._modules["schedule"]

    def forward(self, x: Tensor, *, objective: ObjectiveSpec = None, **kwargs: Any) -> None:
        """Sample the latent sites of the forward process for the data batch ``x``.

        Parameters
        ----------
        x
            Data ``(B, *data_shape)`` in the data's units.
        objective
            The :class:`~vi_models.diffusion.DiffusionObjective` (or name) the model
            runs under; default ``"vlb_sampled"``.
        **kwargs
            Ignored (the model's other keywords).
        """
        obj = resolve_objective(objective)
        s = self.schedule
        shape = self._data_shape if self._data_shape is not None else x.shape[1:]
        check_batch(x, shape, like=s.betas)
        ev = len(shape)
        y0 = s.normalise(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            if obj.name == "chain":
                self._chain(y0, ev)
                return
            if obj.samples_time:
                t = pyro.sample(TIME, TimeStep(s.num_steps, device=x.device))
                self._step_sites(y0, t, ev, obj)
            else:
                with pyro.plate(TIME_PLATE, s.num_steps, dim=-2):
                    t = torch.arange(1, s.num_steps + 1, device=x.device).unsqueeze(-1)  # (T, 1)
                    self._step_sites(y0, t, ev, obj)
            if obj.vlb_coef > 0:
                mean, var = s.q_mean_variance(y0, torch.tensor(s.num_steps, device=x.device), ev)
                with poutine.scale(scale=obj.vlb_coef):
                    pyro.sample(PRIOR, dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(ev))

    def _step_sites(self, y0: Tensor, t: Tensor, ev: int, obj: DiffusionObjective) -> None:
        """x_t ~ q(x_t | x_0) (masked) and x_{t-1} ~ q(x_{t-1} | x_t, x_0) (masked where t = 1)."""
        s = self.schedule
        mean_q = s.gather(s.sqrt_alphas_cumprod, t, ev) * y0
        std_q = s.gather(s.sqrt_one_minus_alphas_cumprod, t, ev).expand_as(mean_q)
        with poutine.mask(mask=False):
            y_t = pyro.sample(STATE, dist.Normal(mean_q, std_q).to_event(ev))
        steps = t.expand(y_t.shape[: y_t.dim() - ev])
        later = steps > 1
        # eq. (7); beta~_1 = 0, so the (masked) t = 1 entries get a placeholder scale of 1
        post_mean = s.gather(s.posterior_mean_coef1, steps, ev) * y0 + s.gather(s.posterior_mean_coef2, steps, ev) * y_t
        post_std = torch.where(later, s.posterior_variance[steps], 1.0).sqrt()
        post_std = post_std.reshape(steps.shape + (1,) * ev).expand_as(post_mean)
        with poutine.scale(scale=obj.step_scale(s.loss_weights[steps], s.num_steps)), poutine.mask(mask=later):
            pyro.sample(PREVIOUS, dist.Normal(post_mean, post_std).to_event(ev))

    def _chain(self, y0: Tensor, ev: int) -> None:
        """x_T ~ q(x_T | x_0), then x_{t-1} ~ q(x_{t-1} | x_t, x_0) for t = T, ..., 2."""
        s, T = self.schedule, self.schedule.num_steps
        mean, var = s.q_mean_variance(y0, torch.tensor(T, device=y0.device), ev)
        y = pyro.sample(chain_site(T), dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(ev))
        for t in range(T, 1, -1):
            mean, var = s.q_posterior(y0, y, torch.tensor(t, device=y0.device), ev)
            y = pyro.sample(chain_site(t - 1), dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(ev))
