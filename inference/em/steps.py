"""The steps of the EM engine, for any Pyro model whose per-observation latent is discrete.

E-step (Dempster et al. 1977; Bishop 2006, eq. 9.23): trace the model once under
``poutine.enum`` with its discrete latent(s) enumerated in parallel; the sum of the sites'
log-densities is the ``(K, N)`` table ``log p(x_i, z_i = k | theta)``, and

    log p(x_i | theta) = logsumexp_k log p(x_i, z_i = k | theta)
    log r_ik           = log p(x_i, z_i = k | theta) - log p(x_i | theta)    (responsibilities)

M-step without a closed form (generalised EM, Dempster et al. 1977 sec. 3): a few gradient
steps on ``Q(theta) = (1/N) sum_i sum_k r_ik log p(x_i, z_i = k | theta)`` with ``r`` fixed.
:class:`InMemoryEM` is an iteration of :func:`~inference.em.loop.fit_em` for such models (and
for closed forms without sufficient statistics) on one in-memory tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from vi_models.errors import ConfigError, NonFiniteLossError
from vi_models.mixtures.init import INIT_METHODS, initial_responsibilities

__all__ = [
    "INIT_METHODS",
    "InMemoryEM",
    "e_step",
    "expected_complete_log_likelihood",
    "generalized_m_step",
    "initial_responsibilities",
    "log_joint",
    "raise_non_finite",
    "trainable_parameters",
]


def _enumerate_discrete(site: dict) -> dict:
    """``infer_config`` rule: enumerate, in parallel, every latent site that supports it."""
    if site["type"] == "sample" and not site["is_observed"] and getattr(site["fn"], "has_enumerate_support", False):
        return {"enumerate": "parallel"}
    return {}


def log_joint(
    model: Callable,
    *args: Any,
    guide_trace: poutine.Trace | None = None,
    max_plate_nesting: int = 1,
    plate_name: str = "data",
) -> Tensor:
    """``log p(x_i, z_i = k | theta)`` for every observation and every value of the discrete latent.

    Args:
        model: a Pyro model called as ``model(*args)`` whose latent sites inside the
            observation plate are discrete and enumerable (a mixture's assignment).
        *args: the data, first tensor ``(N, ...)``.
        guide_trace: a trace of global latents to condition on (a fitted autoguide's draw);
            their own log-densities are left out.
        max_plate_nesting: the model's plate depth; enumeration uses the dims to its left.
        plate_name: name of the observation plate (the other plates are summed).

    Returns:
        Tensor ``(K, N)``; several enumerated sites are flattened into one axis of their joint
        configurations.

    Raises:
        ConfigError: a latent site that is not enumerable and not in ``guide_trace``.
    """
    fn = poutine.infer_config(model, _enumerate_discrete)
    if guide_trace is not None:
        fn = poutine.replay(fn, trace=guide_trace)
    fn = poutine.enum(fn, first_available_dim=-(max_plate_nesting + 1))
    trace = poutine.trace(fn).get_trace(*args)
    total: Tensor | None = None
    data_dim = -1
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if guide_trace is not None and name in guide_trace.nodes:
            continue  # a global, replayed from the guide: constant in z
        if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
            raise ConfigError(
                f"EM needs every latent variable of the model to be discrete and enumerable, but site "
                f"{name!r} ({type(site['fn']).__name__}) is not; fit such a model with inference.fit "
                "(SVI), or give its global latents fixed values (parameters) first"
            )
        lp = site["fn"].log_prob(site["value"])
        for frame in site["cond_indep_stack"]:
            if not frame.vectorized or frame.dim is None or lp.dim() < -frame.dim:
                continue
            if frame.name == plate_name:
                data_dim = frame.dim
            elif lp.shape[frame.dim] > 1:
                lp = lp.sum(frame.dim, keepdim=True)
        total = lp if total is None else total + lp
    if total is None:
        raise ConfigError("the model has no sample sites: there is nothing to fit")
    n = args[0].shape[0]
    total = total.reshape((1,) * max(0, max_plate_nesting - total.dim()) + total.shape)
    plates = total.shape[total.dim() - max_plate_nesting :]
    total = total.reshape(-1, *plates).movedim(data_dim, -1).reshape(-1, plates[data_dim])
    return total.expand(total.shape[0], n)


def e_step(model: Callable, x: Tensor, *, log_space: bool = True, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Responsibilities by enumeration.

    Args:
        log_space: return ``log r`` (default) or ``r`` itself (one pass fewer).

    Returns:
        ``log p(x_i | theta)`` ``(N,)`` and ``log r_ik`` (or ``r_ik``) ``(K, N)``; the
        responsibilities of an observation sum to one.
    """
    joint = log_joint(model, x, **kwargs)  # (K, N)
    # logsumexp over the components, sharing its exponentials with the responsibilities
    top = joint.amax(0).nan_to_num(neginf=0.0, posinf=0.0)
    unnormalised = (joint - top).exp()
    total = unnormalised.sum(0)
    log_norm = total.log() + top
    return log_norm, (joint - log_norm if log_space else unnormalised / total)


def expected_complete_log_likelihood(model: Callable, x: Tensor, resp: Tensor, **kwargs: Any) -> Tensor:
    """``Q(theta) = (1/N) sum_i sum_k r_ik log p(x_i, z_i = k | theta)`` (differentiable in theta).

    Args:
        resp: responsibilities ``(K, N)``, held fixed.
    """
    joint = log_joint(model, x, **kwargs)
    terms = torch.where(resp > 0, resp * joint, torch.zeros((), dtype=joint.dtype, device=joint.device))
    return terms.sum() / x.shape[0]


def generalized_m_step(model: Callable, x: Tensor, resp: Tensor, optimizer: torch.optim.Optimizer,
                       steps: int, **kwargs: Any) -> None:
    """Increase ``Q(theta)`` by ``steps`` optimizer steps (a generalised M-step)."""
    resp = resp.detach()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = -expected_complete_log_likelihood(model, x, resp, **kwargs)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trainable_parameters(model: Any) -> list[Tensor]:
    """The model's parameters that a generalised M-step updates."""
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"a model without a closed-form m_step must be an nn.Module (a PyroModule) that owns its "
            f"parameters, got {type(model).__name__}; wrap it in a PyroModule"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters for the generalised M-step")
    return params


def raise_non_finite(lower_bound: float, n_iter: int, bad: list[int]) -> None:
    """The error of an E-step whose ``log p(x)`` is not finite: no component gives the rows ``bad`` a density."""
    raise NonFiniteLossError(
        f"log p(x) became {lower_bound} at iteration {n_iter} (observations {bad}): no component "
        "gives them a positive density; increase reg_covar (or pseudo_count), or scale the data"
    )


class InMemoryEM:
    """The E- and M-step of :func:`~inference.em.loop.fit_em` on one in-memory tensor, for a model
    without sufficient statistics: its own closed form on all the data (``m_step(x, resp)``) or a
    generalised M-step (``gem_steps`` Adam steps at ``gem_lr``). One process only."""

    def __init__(self, model: Any, x: Tensor, *, depth: int, reg_covar: float, closed_form: bool,
                 gem: tuple[int, float]) -> None:
        self.model, self.x, self.depth, self.reg_covar, self.closed_form, self.gem = model, x, depth, reg_covar, closed_form, gem
        self.optimizer: torch.optim.Optimizer | None = None

    def initialize(self, run_init: Callable[[Tensor], None]) -> None:
        run_init(self.x)

    def begin_run(self) -> None:
        """A fresh optimizer for the generalised M-step of a new run."""
        if not self.closed_form:
            self.optimizer = torch.optim.Adam(trainable_parameters(self.model), lr=self.gem[1])

    def step(self, n_iter: int, validate: bool) -> float:
        """One EM iteration; returns the lower bound at the parameters the E-step used."""
        model, x = self.model, self.x
        # The data are checked (support, finiteness) by the first E-step; later ones skip it.
        with torch.no_grad(), pyro.validation_enabled(validate):
            log_norm, resp = e_step(model, x, log_space=False, max_plate_nesting=self.depth)
        lower_bound = float(log_norm.mean())
        if not math.isfinite(lower_bound):
            raise_non_finite(lower_bound, n_iter, torch.nonzero(~torch.isfinite(log_norm)).flatten()[:5].tolist())
        with pyro.validation_enabled(validate):
            if self.closed_form:
                with torch.no_grad():
                    model.set_params(**model.m_step(x, resp.T, reg_covar=self.reg_covar))
            else:
                generalized_m_step(model, x, resp, self.optimizer, self.gem[0], max_plate_nesting=self.depth)
        return lower_bound
