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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Union

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.util import warn_if_nan
from torch import Tensor

from ._params import OPTIMIZERS, collect_params
from .errors import ConfigError
from .traced_loss import TracedLoss

__all__ = [
    "OBJECTIVES",
    "DiffusionELBO",
    "DiffusionObjective",
    "ObjectiveName",
    "fit_diffusion",
    "resolve_objective",
]

ObjectiveName = Literal["vlb", "vlb_sampled", "simple", "hybrid", "chain"]
OBJECTIVES: Final = ("vlb", "vlb_sampled", "simple", "hybrid", "chain")
ObjectiveSpec = Union["DiffusionObjective", ObjectiveName, None]


@dataclass(frozen=True)
class DiffusionObjective:
    """Which bound a DDPM model/guide pair computes, and how each time step is weighted.

    The per-step weight of L_{t-1} is ``a_t = simple_coef / (T w_t) + vlb_coef`` (``w_t``
    of THEORY T19); when one time step is drawn per observation, t ~ U{1, ..., T}, its term
    is scaled by ``a_t / p(t) = T a_t``, which makes the estimate unbiased.

    Attributes
    ----------
    name
        One of :data:`OBJECTIVES` (see the module docstring).
    hybrid_weight
        lambda of ``"hybrid"``: L_simple + lambda L_VLB (default 1e-3, Nichol & Dhariwal).

    Raises
    ------
    ConfigError
        Unknown name, or ``hybrid_weight`` not a positive finite number.

    Examples
    --------
    >>> DiffusionObjective("hybrid").vlb_coef
    0.001
    """

    name: ObjectiveName = "vlb_sampled"
    hybrid_weight: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(
                f"expected a diffusion objective, one of {', '.join(map(repr, OBJECTIVES))}, got {self.name!r}"
            )
        w = self.hybrid_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise ConfigError(f"expected hybrid_weight to be a finite number > 0, got {w!r}; 1e-3 is the usual value")

    @property
    def samples_time(self) -> bool:
        """Whether one time step is drawn per observation (else: all of them, or the chain)."""
        return self.name in ("vlb_sampled", "simple", "hybrid")

    @property
    def simple_coef(self) -> float:
        """Weight of L_simple in the objective (1 for ``"simple"`` and ``"hybrid"``, else 0)."""
        return 1.0 if self.name in ("simple", "hybrid") else 0.0

    @property
    def vlb_coef(self) -> float:
        """Weight of L_VLB in the objective (``hybrid_weight`` for ``"hybrid"``, 0 for ``"simple"``)."""
        return {"simple": 0.0, "hybrid": float(self.hybrid_weight)}.get(self.name, 1.0)

    def step_scale(self, loss_weights: Tensor, num_steps: int) -> Tensor:
        """Scale of the term of step t: ``a_t`` (all steps) or ``T a_t`` (one drawn step).

        Parameters
        ----------
        loss_weights
            ``w_t`` of the steps, any shape (THEORY T19), > 0.
        num_steps
            ``T``.

        Returns
        -------
        Tensor
            Same shape as ``loss_weights``.
        """
        a = self.vlb_coef + self.simple_coef / (num_steps * loss_weights)
        return a * num_steps if self.samples_time else a

    def offset_scale(self, loss_weights: Tensor, num_steps: int) -> Tensor:
        """Scale of the constant ``c_t`` removed from the term of step t (0 without L_simple).

        ``L_simple`` contains ``(L_{t-1} - c_t) / w_t``; the model adds back
        ``offset_scale * c_t`` as a factor, so the reported loss is L_simple exactly.
        """
        off = self.simple_coef / (num_steps * loss_weights)
        return off * num_steps if self.samples_time else off


def resolve_objective(objective: ObjectiveSpec) -> DiffusionObjective:
    """A :class:`DiffusionObjective` from an instance, a name, or ``None`` (``"vlb_sampled"``)."""
    if objective is None:
        return DiffusionObjective()
    if isinstance(objective, DiffusionObjective):
        return objective
    if isinstance(objective, str):
        return DiffusionObjective(objective)  # type: ignore[arg-type]
    raise ConfigError(
        f"expected objective as a DiffusionObjective or one of {', '.join(map(repr, OBJECTIVES))}, "
        f"got {type(objective).__name__}"
    )


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
        (:class:`inference.traced_loss.TracedLoss`, as Pyro's ``JitTrace_ELBO``): the same loss
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
        if not _collecting_params():
            extra["announce_params"] = False
        return super()._get_trace(model, guide, args, {**kwargs, **extra})

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss (a float) after back-propagating the surrogate loss into every parameter.

        As ``Trace_ELBO.loss_and_grads``, but it back-propagates whenever the surrogate loss has
        a gradient, not only when a param site was recorded (see ``_get_trace``).
        """
        if self._traced is not None and TracedLoss.supports(args, kwargs) and not _collecting_params():
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


def _collecting_params() -> bool:
    """Whether a handler that records param sites (``poutine.trace(param_only=True)``) is active."""
    return any(isinstance(h, TraceMessenger) and h.param_only for h in _PYRO_STACK)


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
