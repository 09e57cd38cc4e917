"""What a DDPM answers beyond its Pyro program: its bound, loss, exact likelihood and samples.

:class:`DiffusionMethods` is the mixin behind :meth:`vi_models.DDPM.vlb`, ``vlb_terms``,
``simple_loss``, ``log_prob`` and ``sample``; each delegates to the function that implements
it (:mod:`.bounds`, :mod:`.ode`, :mod:`.sampling`) with the model as first argument, so those
modules need only the :class:`~.predictions.DiffusionModel` interface.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import bounds as diffusion_bounds
from . import sampling as diffusion_sampling
from .ode import TraceMethod, probability_flow_log_prob

__all__ = ["DiffusionMethods"]


class DiffusionMethods:
    """Mixin: the bound, loss, likelihood and samplers of a DDPM (see the module docstring)."""

    # ------------------------------------------------------------------ bounds and losses

    def vlb_terms(
        self,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        chunk_size: int | None = None,
        use_ema: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The terms of L_VLB per observation, ``(B, T + 1)``, each L_{t-1} an analytic KL (THEORY T18).

        Column j holds L_j (j < T; L_0 the decoder term) and column T holds L_T. See
        :func:`vi_models.diffusion.bounds.vlb_terms` for the arguments (``noise`` of shape
        ``(T, B, *data_shape)``, steps per network call, EMA weights, random generator).
        """
        return diffusion_bounds.vlb_terms(
            self, x, noise=noise, chunk_size=chunk_size, use_ema=use_ema, generator=generator
        )

    def vlb(
        self,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        chunk_size: int | None = None,
        use_ema: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """L_VLB per observation in nats, shape ``(B,)``: an upper bound on -log p(x) (THEORY T18).

        Arguments as :meth:`vlb_terms`; ``-model.vlb(x)`` is the ELBO, a lower bound on log p(x).
        """
        return self.vlb_terms(x, noise=noise, chunk_size=chunk_size, use_ema=use_ema, generator=generator).sum(-1)

    def simple_loss(
        self,
        x: Tensor,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        use_ema: bool | None = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """||eps - eps_theta(x_t, t)||^2 per observation, shape ``(B,)``, differentiable (Algorithm 1).

        ``t`` ``(B,)`` and ``noise`` ``(B, *data_shape)`` default to fresh draws; see
        :func:`vi_models.diffusion.bounds.simple_loss`.
        """
        return diffusion_bounds.simple_loss(self, x, t=t, noise=noise, use_ema=use_ema, generator=generator)

    # ------------------------------------------------------------------ likelihood and sampling

    def log_prob(
        self,
        x: Tensor,
        *,
        trace: TraceMethod = "auto",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int = 4096,
        use_ema: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Exact log p(x) by the probability-flow ODE (THEORY T21), in the data's units, shape ``(B,)``.

        ``trace``: ``"exact"`` divergence, ``"hutchinson"`` (unbiased, one probe per row), or
        ``"auto"`` (exact for D <= 16); ``rtol``/``atol`` of the adaptive Dormand-Prince solver.
        See :func:`vi_models.diffusion.ode.probability_flow_log_prob` (also for the solver's
        number of network calls).
        """
        return probability_flow_log_prob(
            self, x, trace=trace, rtol=rtol, atol=atol, batch_size=batch_size, use_ema=use_ema, generator=generator
        )

    def sample(
        self,
        n: int,
        *,
        sampler: Literal["ancestral", "ddim"] = "ancestral",
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        use_ema: bool | None = None,
        clip_x0: float | None = None,
    ) -> Tensor:
        """Draw ``n`` samples: ancestral (Algorithm 2, T network calls) or DDIM (``steps`` calls).

        See :func:`vi_models.diffusion.sampling.sample` (``clip_x0``: DDIM's clamp of the
        standardised x_0 prediction).

        Returns
        -------
        Tensor
            Shape ``(n, *data_shape)`` in the data's units.
        """
        return diffusion_sampling.sample(
            self, n, sampler=sampler, steps=steps, eta=eta, generator=generator, use_ema=use_ema, clip_x0=clip_x0
        )
