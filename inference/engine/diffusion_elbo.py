r"""Training objectives of a diffusion model, all as ELBOs of one model/guide pair.

A DDPM (:class:`vi_models.DDPM`) and its guide (:class:`guides.ForwardDiffusion`) are a
hierarchical VAE whose encoder is the fixed forward process. Its negative ELBO is the
variational bound of Ho et al. (2020), eq. (5) (THEORY T18):

.. code-block:: text

    L_VLB = L_T + sum_{t=2}^T L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || p(x_T))                                  no parameters
    L_{t-1} = E_{q(x_t | x_0)} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
    L_0     = -E_{q(x_1 | x_0)} log p_theta(x_0 | x_1)

Every objective below is that pair of programs with per-step scales on its sample sites, so
:func:`inference.fit` runs all of them unchanged (checkpoints, progress, diagnostics):

============== ============================================================================
``"vlb"``          all T terms in a vectorised ``pyro.plate("time", T)``, each L_{t-1} an
                   analytic Gaussian KL (``TraceMeanField_ELBO``): exact L_VLB in one pass
``"vlb_sampled"``  one time step per observation, t ~ U{1, ..., T}, term scaled by T: an
                   unbiased estimator of L_VLB at the cost of one network call (default)
``"simple"``       L_simple = E_t E ||eps - eps_theta(x_t, t)||^2 (Algorithm 1): the same KL
                   site scaled by 1 / (T w_t), since L_{t-1} = w_t ||eps - eps_theta||^2 + c_t
                   (eq. 12, THEORY T19); a parameter-free factor removes c_t / w_t
``"hybrid"``       L_simple + lambda L_VLB (Nichol & Dhariwal 2021, Sec. 3.1), lambda =
                   ``hybrid_weight``; with fixed variances both terms train the mean
``"chain"``        the literal reverse chain, sites x_T, x_{T-1}, ..., x_1 sampled in turn
                   (T network calls a step): the model as written in the paper
============== ============================================================================

The objective is chosen on the loss, not on the model: :class:`DiffusionELBO` passes one
:class:`DiffusionObjective` to both the model and the guide (keyword ``objective``), so the
two programs cannot disagree. Without it (``loss="meanfield"`` or ``"elbo"``) both use
``"vlb_sampled"``. :func:`fit_diffusion` is the training helper: ``fit`` with the objective
and, when the model keeps one, an exponential moving average of the weights.

References
----------
J. Ho, A. Jain and P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.util import warn_if_nan
from torch import Tensor

from vi_models.diffusion.objectives import (
    OBJECTIVES,
    DiffusionObjective,
    ObjectiveName,
    resolve_objective,
)
from vi_models.errors import ConfigError

from ._params import OPTIMIZERS, collect_params
from .traced_loss import TracedLoss, collecting_params

__all__ = [
    "OBJECTIVES",
    "DiffusionELBO",
    "DiffusionObjective",
    "ObjectiveName",
    "fit_diffusion",
    "resolve_objective",
]

class DiffusionELBO(TraceMeanField_ELBO):
    """A Pyro ELBO that runs a diffusion model/guide pair under one :class:`DiffusionObjective`.

    It is ``TraceMeanField_ELBO`` (analytic KL between the matching Gaussian sites, so no Monte
    Carlo over x_{t-1}) or, with ``analytic_kl=False``, ``Trace_ELBO`` (log-density
    differences at the sampled x_{t-1}: the brute-force Monte Carlo ELBO), that passes
    ``objective=...`` to both programs. Give an instance to ``fit(loss=...)``.

    Parameters
    ----------
    objective
        A name of :data:`OBJECTIVES` or a :class:`DiffusionObjective`.
    hybrid_weight
        lambda of ``"hybrid"`` (ignored when ``objective`` is an instance).
    analytic_kl
        Analytic KL per site (default) or the Monte Carlo log-ratio.
    jit
        Record the training loss once per batch shape as a TorchScript graph and replay it
        (:class:`inference.engine.traced_loss.TracedLoss`, as Pyro's ``JitTrace_ELBO``): the same loss
        and gradients without Python per step, for small networks whose step is dominated by
        Pyro's bookkeeping. Checks and validation run when a shape is first recorded. Only
        ``loss_and_grads`` (training) is recorded; ``loss`` runs the programs.
    **kwargs
        Passed to :class:`pyro.infer.ELBO` (``num_particles``, ``vectorize_particles``,
        ``max_plate_nesting``, ...).

    Examples
    --------
    >>> loss = DiffusionELBO("simple")
    >>> loss.objective.name
    'simple'
    >>> fit(ddpm, ForwardDiffusion(ddpm.schedule), data, loss=loss)   # doctest: +SKIP
    """

    def __init__(
        self,
        objective: ObjectiveName | DiffusionObjective = "vlb_sampled",
        *,
        hybrid_weight: float = 1e-3,
        analytic_kl: bool = True,
        jit: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(objective, str):
            objective = DiffusionObjective(objective, hybrid_weight)  # type: ignore[arg-type]
        self.objective = resolve_objective(objective)
        self.analytic_kl = bool(analytic_kl)
        self.jit = bool(jit)
        if self.jit and not self.analytic_kl:
            raise ConfigError(
                "jit=True records the analytic-KL loss; the Monte Carlo ELBO (analytic_kl=False) reads its value "
                "in Python and cannot be recorded: drop one of the two"
            )
        super().__init__(**kwargs)
        self._traced = TracedLoss(self._loss_and_surrogate, self._trainable) if self.jit else None

    def _get_trace(self, model, guide, args, kwargs):
        # The one place every ELBO method (loss, loss_and_grads, vectorised particles) passes through.
        # The model's parameters are announced (one pyro.param per tensor, a large share of a small
        # network's step) only to a handler that collects them, as SVI's and fit's param-only traces.
        extra = {"objective": self.objective}
        if not collecting_params():
            extra["announce_params"] = False
        return super()._get_trace(model, guide, args, {**kwargs, **extra})

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss (a float) after back-propagating the surrogate loss into every parameter.

        As ``Trace_ELBO.loss_and_grads``, but it back-propagates whenever the surrogate loss has
        a gradient, not only when a param site was recorded (see ``_get_trace``).
        """
        if self._traced is not None and TracedLoss.supports(args, kwargs) and not collecting_params():
            loss_t, surrogate = self._traced(model, guide, args)
        else:
            loss_t, surrogate = self._loss_and_surrogate(model, guide, args, kwargs)
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        loss = float(loss_t)
        warn_if_nan(loss, "loss")
        return loss

    def _loss_and_surrogate(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict | None = None
    ) -> tuple[Tensor, Tensor]:
        """The loss and the surrogate loss averaged over particles, as tensors (what ``jit`` records)."""
        loss: Any = 0.0
        surrogate: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs or {}):
            loss_particle, surrogate_particle = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + loss_particle / self.num_particles
            surrogate = surrogate + surrogate_particle / self.num_particles
        # The loss is reported as a Python float: keep a float particle's double precision.
        return torch.as_tensor(loss, dtype=torch.float64), torch.as_tensor(surrogate)

    def _trainable(self, model: Callable, guide: Callable, args: tuple) -> list[Tensor]:
        """The tensors the loss differentiates, found as ``fit`` finds them (they become graph inputs)."""
        return collect_params(self, model, guide, args, [model, guide])

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if self.analytic_kl:
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        return Trace_ELBO._differentiable_loss_particle(self, model_trace, guide_trace)

    def __repr__(self) -> str:
        jit = ", jit=True" if self.jit else ""
        return f"DiffusionELBO({self.objective.name!r}, analytic_kl={self.analytic_kl}{jit})"


def fit_diffusion(
    model: Any,
    guide: Any,
    data: Any,
    *,
    objective: ObjectiveName | DiffusionObjective | DiffusionELBO = "simple",
    hybrid_weight: float = 1e-3,
    lr: float = 2e-4,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
    jit: bool = False,
    **fit_kwargs: Any,
) -> Any:
    """Fit a DDPM with :func:`inference.fit` under a diffusion objective, with EMA when kept.

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`. If it was built with ``ema_decay``, its moving average is
        updated after every optimizer step (:meth:`vi_models.DDPM.attach_ema`).
    guide
        ``ForwardDiffusion(model.schedule)``.
    data
        Training data ``(N, *data_shape)`` (anything :func:`inference.fit` accepts).
    objective, hybrid_weight
        See :class:`DiffusionObjective`; default ``"simple"`` (Ho et al.'s Algorithm 1). A ready
        :class:`DiffusionELBO` is used as it is (for ``num_particles`` or ``analytic_kl``).
    lr
        Learning rate (default 2e-4, Ho et al.).
    optimizer
        A name of ``inference.fit`` (``"adam"``, ``"adamw"``, ...) or a class/callable
        ``params -> Optimizer``.
    jit
        Record the training loss as a TorchScript graph (``DiffusionELBO(jit=True)``): same
        loss and gradients, less Python per step. Ignored when ``objective`` is a ready
        :class:`DiffusionELBO`.
    **fit_kwargs
        Everything else of :func:`inference.fit` (``epochs``, ``batch_size``, ``seed``, ...).

    Returns
    -------
    FitResult
        As :func:`inference.fit`; ``history["loss"]`` is the objective per observation
        (L_simple in squared-norm units, L_VLB in nats).

    Raises
    ------
    ConfigError
        An unknown objective or optimizer, or ``loss=`` in ``fit_kwargs``.
    """
    from .fit import fit  # fit imports the engine's modules; keep this module light

    if "loss" in fit_kwargs:
        raise ConfigError("fit_diffusion chooses the loss from objective=...; drop loss= or call inference.fit")
    loss = (objective if isinstance(objective, DiffusionELBO)
            else DiffusionELBO(objective, hybrid_weight=hybrid_weight, jit=jit))
    opt_spec: Any = optimizer
    if getattr(model, "ema_decay", None) is not None:
        if isinstance(optimizer, str):
            if optimizer.lower() not in OPTIMIZERS:
                raise ConfigError(f"expected optimizer to be one of {', '.join(map(repr, OPTIMIZERS))}, got {optimizer!r}")
            cls = OPTIMIZERS[optimizer.lower()]

            def opt_spec(params: Any) -> torch.optim.Optimizer:
                return model.attach_ema(cls(params, lr=lr))
        else:
            base = optimizer

            def opt_spec(params: Any) -> torch.optim.Optimizer:
                opt = base(params, lr=lr) if isinstance(base, type) else base(params)
                return model.attach_ema(opt)

    return fit(model, guide, data, loss=loss, lr=lr, optimizer=opt_spec, **fit_kwargs)
