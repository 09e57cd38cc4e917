r"""Any of the engine's ELBOs recorded once per batch shape and replayed: ``fit(..., jit=True)``.

:class:`RecordedELBO` wraps a Pyro ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO``,
``TraceEnum_ELBO`` or the IWAE ``RenyiELBO``) and records, with :class:`~.traced_loss.TracedLoss`,
the tensor function ``(model, guide, batch) -> (loss, surrogate loss)`` that its
``loss_and_grads`` computes: the model and guide programs, the traces, the log-densities, KLs
or enumerated sums and the particle average become one TorchScript graph with the parameters as
inputs, replayed in TorchScript's plain interpreter (so the backward pass is eager autograd's:
the same gradients). Random draws are recorded as operations, so each replay draws fresh noise.

What each loss records (the same arithmetic as Pyro's own ``loss_and_grads``):

============================ ================================================================
``TraceMeanField_ELBO``      its ``_differentiable_loss_particle`` per particle (analytic KLs)
``Trace_ELBO``               the surrogate of ``_differentiable_loss_particle``; the loss value
                             ``-(log p(x, z) - log q(z))`` as a tensor (Pyro reads it as a float)
``TraceEnum_ELBO``           ``differentiable_loss`` (the enumerated sum), loss = surrogate
``RenyiELBO`` (IWAE)         the importance-weighted bound and its surrogate per observation,
                             as ``RenyiELBO.loss_and_grads`` computes them
============================ ================================================================

A recording needs a guide whose latent sites are reparameterised or enumerated: the score-function
terms of a discrete guide site depend on the loss *value* read in Python, which a recording
would freeze. Such a guide is refused when the first batch is recorded, with a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan
from torch import Tensor

from vi_models.errors import ConfigError

from ._params import collect_params
from .traced_loss import TracedLoss, collecting_params

__all__ = ["RecordedELBO", "record"]


def _check_recordable_guide(guide: Callable, args: tuple) -> None:
    """Refuse a guide with a latent site that is neither reparameterised nor enumerated."""
    with torch.random.fork_rng(devices=[]), poutine.block():
        trace = poutine.trace(guide).get_trace(*args)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if not getattr(site["fn"], "has_rsample", False) and site["infer"].get("enumerate") is None:
            raise ConfigError(
                f"jit=True records the loss of reparameterised or enumerated guides, but the guide's site "
                f"{name!r} ({type(site['fn']).__name__}) is neither: its score-function gradient reads the loss "
                "value in Python; drop jit=True, or enumerate the site (loss='enum')"
            )


class RecordedELBO(ELBO):
    """A Pyro ELBO whose ``loss_and_grads`` is recorded once per batch signature and replayed.

    Parameters
    ----------
    elbo
        The loss to record: ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` or
        ``RenyiELBO`` (what :func:`inference.make_elbo` builds for ``"elbo"``, ``"meanfield"``,
        ``"enum"`` and ``"iwae"``).
    max_graphs
        Recorded graphs kept (one per batch shape; a smaller last batch records a second one).

    Raises
    ------
    ConfigError
        Another ELBO class (a :class:`~inference.DiffusionELBO` records itself: pass ``jit=True`` to it).

    Examples
    --------
    >>> from pyro.infer import TraceMeanField_ELBO
    >>> RecordedELBO(TraceMeanField_ELBO()).num_particles
    1
    """

    def __init__(self, elbo: ELBO, *, max_graphs: int = 4) -> None:
        if not isinstance(elbo, (Trace_ELBO, TraceEnum_ELBO, RenyiELBO)):  # TraceMeanField is a Trace_ELBO
            raise ConfigError(
                f"expected a Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO or RenyiELBO to record, got "
                f"{type(elbo).__name__}" + ("; pass DiffusionELBO(..., jit=True) instead"
                                            if hasattr(elbo, "objective") else "")
            )
        # ELBO.__init__ would reset the wrapped loss's options: copy them instead.
        self.__dict__.update({k: v for k, v in vars(elbo).items()})
        self.elbo = elbo
        self._checked: set[tuple[int, int]] = set()
        self._traced = TracedLoss(self._loss_and_surrogate, self._trainable, max_graphs=max_graphs)

    # the uncompiled methods are the wrapped loss's own
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self.elbo.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Any:
        return self.elbo._get_trace(model, guide, args, kwargs)

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss (a float) after back-propagating the surrogate into every parameter.

        Recorded for tensor arguments without keywords (what :func:`inference.fit` passes);
        anything else runs the wrapped loss's own ``loss_and_grads``.
        """
        if not TracedLoss.supports(args, kwargs) or collecting_params():
            return self.elbo.loss_and_grads(model, guide, *args, **kwargs)
        key = (id(model), id(guide))
        if key not in self._checked:
            _check_recordable_guide(guide, args)
            self._checked.add(key)
        loss_t, surrogate = self._traced(model, guide, args)
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        loss = float(loss_t)
        warn_if_nan(loss, "loss")
        return loss

    @property
    def num_traces(self) -> int:
        """Graphs recorded so far."""
        return self._traced.num_traces

    def _trainable(self, model: Callable, guide: Callable, args: tuple) -> list[Tensor]:
        return collect_params(self.elbo, model, guide, args, [model, guide])

    def _loss_and_surrogate(self, model: Callable, guide: Callable, args: tuple) -> tuple[Tensor, Tensor]:
        """(loss, surrogate loss) as tensors, as the wrapped loss's ``loss_and_grads`` computes them."""
        elbo = self.elbo
        if isinstance(elbo, TraceEnum_ELBO):
            value = elbo.differentiable_loss(model, guide, *args)
            return value.detach().to(torch.float64), value
        if isinstance(elbo, RenyiELBO):
            return _renyi_loss_and_surrogate(elbo, model, guide, args)
        loss: Any = 0.0
        surrogate: Any = 0.0
        for model_trace, guide_trace in elbo._get_traces(model, guide, args, {}):
            loss_particle, surrogate_particle = elbo._differentiable_loss_particle(model_trace, guide_trace)
            if not isinstance(loss_particle, Tensor) or not isinstance(elbo, TraceMeanField_ELBO):
                # Trace_ELBO reads the value as a Python float: compute it as a tensor instead
                loss_particle = -(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
            loss = loss + loss_particle / elbo.num_particles
            surrogate = surrogate + surrogate_particle / elbo.num_particles
        return torch.as_tensor(loss).detach().to(torch.float64), torch.as_tensor(surrogate)

    def __repr__(self) -> str:
        return f"RecordedELBO({type(self.elbo).__name__}, num_particles={self.num_particles})"


def _renyi_loss_and_surrogate(elbo: RenyiELBO, model: Callable, guide: Callable,
                              args: tuple) -> tuple[Tensor, Tensor]:
    """``RenyiELBO.loss_and_grads`` as tensors (Li & Turner 2016, eq. 5; alpha = 0 is IWAE)."""
    values, surrogates = [], []
    vectorized = elbo.vectorize_particles and elbo.num_particles > 1
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, {}):
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        value: Any = 0.0
        surrogate: Any = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_prob = torch_sum(site["log_prob"], sum_dims)
                value, surrogate = value + log_prob.detach(), surrogate + log_prob
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                log_prob = torch_sum(site["log_prob"], sum_dims)
                value, surrogate = value - log_prob.detach(), surrogate - log_prob
        values.append(value)
        surrogates.append(surrogate)
    if vectorized:
        particles, surrogate_particles = values[0], surrogates[0]
    else:
        particles, surrogate_particles = torch.stack(values), torch.stack(surrogates)
    log_weights = (1.0 - elbo.alpha) * particles
    log_mean_weight = torch.logsumexp(log_weights, dim=0, keepdim=True) - math.log(elbo.num_particles)
    bound = log_mean_weight.sum() / (1.0 - elbo.alpha)
    normalized_weights = (log_weights - log_mean_weight).exp()
    surrogate_bound = (normalized_weights * surrogate_particles).sum() / elbo.num_particles
    return (-bound).to(torch.float64), -surrogate_bound


def record(elbo: ELBO) -> ELBO:
    """``elbo`` recorded and replayed (:class:`RecordedELBO`); a DiffusionELBO records itself."""
    if hasattr(elbo, "objective") and hasattr(elbo, "jit"):  # DiffusionELBO
        if not elbo.jit:
            raise ConfigError("jit=True with a DiffusionELBO: pass DiffusionELBO(..., jit=True), which records "
                              "its own loss")
        return elbo
    return RecordedELBO(elbo)
