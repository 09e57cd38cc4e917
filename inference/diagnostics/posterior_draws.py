"""Draws of a guide's global latents and the inputs every InferenceData path shares.

:func:`sample_global_draws` draws S values of the global latents from the guide and, for each,
the per-observation log-likelihood of the model with local latents summed out exactly
(enumeration) or left to the guide, in one vectorised pass over an outer plate of draws when the
model broadcasts (else draw by draw). The helpers above it unwrap fit results into
``(model, guide)`` chains and read latent sites and their dims from traces. Used by
:mod:`inference.diagnostics` and :mod:`inference.diagnostics.psis`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from inference.engine._traces import plate_depth
from inference.engine.batches import as_tensors, model_dtype
from inference.engine.likelihood import PARTICLES, _enumerate_unguided
from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError

__all__ = ["DRAWS_PLATE", "GlobalDraws", "sample_global_draws"]


# --------------------------------------------------------------------------- inputs


def _unwrap(fit: Any, guide: Any = None) -> tuple[Any, Any]:
    """A ``FitResult`` / ``EMResult`` (anything with ``.model`` that is not itself a module) -> (model, guide)."""
    if fit is not None and not isinstance(fit, torch.nn.Module) and hasattr(fit, "model"):
        return fit.model, guide if guide is not None else getattr(fit, "guide", None)
    return fit, guide


def _fits(model: Any, guide: Any, chains: int | Sequence[Any]) -> list[tuple[Callable, Callable | None]]:
    """(model, guide) per chain: ``chains`` copies of the one pair, or one per fit given."""
    if isinstance(chains, (int, np.integer)) and not isinstance(chains, bool):
        n = check_positive_int(chains, "chains")
        if model is None:
            raise ConfigError("expected a model, got None; pass the fitted model, or fits as chains=[...]")
        return [_unwrap(model, guide)] * n
    if not isinstance(chains, Sequence) or isinstance(chains, str) or len(chains) == 0:
        raise ConfigError(f"expected chains to be an int >= 1 or a non-empty sequence of fits, got {chains!r}")
    fits = []
    for fit in chains:
        if isinstance(fit, tuple) and len(fit) == 2:
            fits.append(fit)
        elif hasattr(fit, "model") and not isinstance(fit, torch.nn.Module):  # FitResult / EMResult
            fits.append(_unwrap(fit))
        else:
            raise ConfigError(
                f"expected each fit in chains to be a FitResult, an EMResult or a (model, guide) pair, got {fit!r}"
            )
    kinds = {type(m) for m, _ in fits}
    if len(kinds) > 1:
        raise ConfigError(
            f"expected every chain to be a fit of the same model class, got {sorted(k.__name__ for k in kinds)}; "
            "convert each model separately and compare them with inference.compare"
        )
    return fits


def _data_tensors(model: Callable, guide: Callable | None, data: Any) -> tuple[torch.Tensor, ...]:
    """The data as tensors on the model's device, in its floating dtype (parameters, else buffers)."""
    modules = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    tensors_of = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    device = tensors_of[0].device if tensors_of else torch.device("cpu")
    dtype = model_dtype(model, guide)
    if not any(True for m in modules for _ in m.parameters()):
        dtype = next((t.dtype for t in tensors_of if t.is_floating_point()), dtype)
    tensors = as_tensors(data, name="data", device=device, dtype=dtype)
    if tensors is None:
        raise ConfigError("expected in-memory data (a tensor, array or tuple of them), got a lazy dataset")
    return tensors


def _latent_sites(guide_tr: Any) -> dict[str, dict]:
    """The guide's sample sites that the model also has (auxiliary sites dropped)."""
    return {
        name: site
        for name, site in guide_tr.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("is_auxiliary")
    }


def _in_plate(site: dict, plate_name: str | None) -> bool:
    return any(f.name == plate_name for f in site["cond_indep_stack"] if f.vectorized)


def _site_dims(name: str, site: dict, value: torch.Tensor, skip: int = 0) -> tuple[str, ...]:
    """Dim names of a site's value: plate names for batch dims, ``{name}_dim_j`` for the rest."""
    event_dim = getattr(site["fn"], "event_dim", len(site["fn"].event_shape))
    batch = value.dim() - event_dim
    by_dim = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLES}
    names = [by_dim.get(j - batch, f"{name}_dim_{j}") for j in range(batch)]
    names += [f"{name}_dim_{j}" for j in range(batch, value.dim())]
    return tuple(names[skip:])


# --------------------------------------------------------------------------- global latents


@dataclass
class GlobalDraws:
    """S draws ``theta_s ~ q`` and what the model says about them (numpy, float64).

    Attributes:
        posterior: site name -> ``(S, *site_shape)``; ``posterior_dims``: their dim names.
        log_lik: ``(S, N)``, ``log p(x_i | theta_s)`` with enumerated latents summed out.
        log_prior: ``(S,)``, ``log p(theta_s)``; ``log_q``: ``(S,)``, ``log q(theta_s)``.
        predictive: observed site -> ``(S, N, ...)`` replicated data (if asked for).
        observed: observed site -> ``(N, ...)``; ``observed_dims``: their dim names.
        obs_dim: name of the observation dim (the data plate).
    """

    posterior: dict[str, np.ndarray]
    posterior_dims: dict[str, tuple[str, ...]]
    log_lik: np.ndarray
    log_prior: np.ndarray
    log_q: np.ndarray
    predictive: dict[str, np.ndarray]
    observed: dict[str, np.ndarray]
    observed_dims: dict[str, tuple[str, ...]]
    obs_dim: str

    @property
    def log_joint(self) -> np.ndarray:
        """``log p(theta_s, x)``, shape ``(S,)``."""
        return self.log_prior + self.log_lik.sum(-1)


def _marginal_log_lik(model_tr: Any, theta: Mapping[str, torch.Tensor], plate_name: str | None,
                      depth: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(log p(x_i | theta) ``(N,)``, log p(theta) ``()``, observed sites) from an enumerated trace."""
    log_prior = torch.zeros(())
    local: torch.Tensor | None = None
    observed: dict[str, dict] = {}
    frame = None
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["fn"].log_prob(site["value"])
        if name in theta:
            log_prior = log_prior + lp.sum()
            continue
        plates = [f for f in site["cond_indep_stack"] if f.vectorized]
        data_frames = [f for f in plates if f.name == plate_name] or plates[:1]
        if not data_frames:
            raise ConfigError(
                f"site {name!r} lies outside the observation plate {plate_name!r} and the guide does not "
                "sample it; give it a guide site, or pass plate_name= the model's observation plate"
            )
        if not site["is_observed"] and site["infer"].get("enumerate") != "parallel":
            raise ConfigError(
                f"the model has global latents and a local continuous latent {name!r}; "
                "to_inference_data supports globals with enumerated local latents only"
            )
        frame = frame or data_frames[0]
        if site["is_observed"]:
            observed[name] = site
        lp = lp.reshape((1,) * max(0, depth - lp.dim()) + lp.shape)
        for d in range(-depth, 0):
            if d != frame.dim and lp.shape[d] > 1:
                lp = lp.sum(d, keepdim=True)
        local = lp if local is None else local + lp
    if local is None or frame is None:
        raise ConfigError("the model has no observed site in a data plate: there is no likelihood to evaluate")
    if local.dim() > depth:  # enumeration dims lie left of the plates: sum them out exactly
        local = torch.logsumexp(local.reshape((-1,) + local.shape[-depth:]), dim=0)
    return local.reshape(-1).expand(frame.size), log_prior, observed  # other plate dims are 1


def sample_global_draws(
    model: Callable,
    guide: Callable,
    *args: torch.Tensor,
    num_samples: int,
    plate_name: str | None = "data",
    posterior_predictive: bool = False,
) -> GlobalDraws:
    """Draw ``theta_s ~ q`` and evaluate ``log p(x_i | theta_s)``, ``log p(theta_s)``, ``log q(theta_s)``.

    The model is conditioned on ``theta_s`` and its unguided discrete latents enumerated, so
    mixtures get their exact marginal ``log sum_z p(x_i, z | theta)``. When the model has no
    such latents, all S draws go through the guide and the model at once, in a plate of size S
    left of the model's plates (as Pyro's vectorised particles), after a check that the
    vectorised values of the first and last draws equal a plain evaluation; a model that does
    not broadcast over that plate (write ``(X * beta).sum(-1)``, not ``X @ beta``) falls back
    to one guide trace per draw. Seeding Pyro before the
    call reproduces the draws either way.

    Args:
        model, guide: a Pyro pair whose guide samples global latents only.
        *args: the data ``(N, ...)`` as the model takes it.
        num_samples: S.
        plate_name: the model's observation plate.
        posterior_predictive: also draw ``x_rep ~ p(x | theta_s)`` for every observed site.

    Returns:
        :class:`GlobalDraws`.
    """
    depth = plate_depth(model, guide, args)
    s_count = check_positive_int(num_samples, "num_samples")
    draws = _vectorised_draws(model, guide, args, s_count, plate_name, posterior_predictive, depth)
    if draws is None:
        draws = _looped_draws(model, guide, args, s_count, plate_name, posterior_predictive, depth)
    return draws


DRAWS_PLATE = "_posterior_draws"


def _per_draw(lp: torch.Tensor, s_count: int, depth: int) -> torch.Tensor:
    """A site's log-density summed over everything but the draws' plate: ``(S, ...)`` -> ``(S,)``."""
    if lp.numel() == 1:  # constant over draws (e.g. a Delta's zero log-density)
        return lp.reshape(()).expand(s_count)
    if lp.dim() < depth + 1 or lp.shape[-(depth + 1)] != s_count:
        raise ValueError("site not vectorised over the draws")
    lp = lp.movedim(-(depth + 1), 0)
    return lp.reshape(s_count, -1).sum(-1)


def _vectorised_draws(model: Callable, guide: Callable, args: tuple, s_count: int, plate_name: str | None,
                      posterior_predictive: bool, depth: int) -> GlobalDraws | None:
    """All S draws in one pass under a plate at dim ``-(depth + 1)``; None when that is not possible."""
    with torch.no_grad():
        with torch.random.fork_rng(devices=[]):  # the probe leaves the seeded draws where they were
            probe_g = poutine.trace(guide).get_trace(*args)
            theta0 = {n: site["value"] for n, site in _latent_sites(probe_g).items()}
            probe_m = poutine.trace(poutine.condition(model, data=theta0)).get_trace(*args)
        for name, site in probe_m.nodes.items():
            if (site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"]
                    and name not in theta0):
                return None  # an unguided latent: enumerate it draw by draw
        try:
            with pyro.plate(DRAWS_PLATE, s_count, dim=-(depth + 1)):
                guide_tr = poutine.trace(guide).get_trace(*args)
                sites = _latent_sites(guide_tr)
                theta = {n: sites[n]["value"] for n in theta0}
                model_tr = poutine.trace(poutine.condition(model, data=theta)).get_trace(*args)
                rep_tr = (poutine.trace(poutine.condition(poutine.uncondition(model), data=theta)).get_trace(*args)
                          if posterior_predictive else None)
            log_q = sum(_per_draw(site["fn"].log_prob(site["value"]), s_count, depth)
                        for site in guide_tr.nodes.values() if site["type"] == "sample" and not site_is_subsample(site))
            log_prior = sum(_per_draw(model_tr.nodes[n]["fn"].log_prob(v), s_count, depth) for n, v in theta.items())
            posterior = {n: v.reshape((s_count,) + theta0[n].shape) for n, v in theta.items()}
            log_lik = None
            observed, observed_dims, predictive = {}, {}, {}
            obs_dim = plate_name or "obs"
            for name, site in model_tr.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site) or not site["is_observed"] or name in theta:
                    continue
                frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != DRAWS_PLATE]
                frame = next((f for f in frames if f.name == plate_name), frames[0] if frames else None)
                if frame is None:
                    return None
                lp = site["fn"].log_prob(site["value"])
                lp = lp.reshape((1,) * max(0, depth + 1 - lp.dim()) + lp.shape)
                if lp.dim() != depth + 1 or lp.shape[0] != s_count:
                    return None
                for d in range(-depth, 0):
                    if d != frame.dim and lp.shape[d] > 1:
                        lp = lp.sum(d, keepdim=True)
                lp = lp.reshape(s_count, -1).expand(s_count, frame.size)
                log_lik = lp if log_lik is None else log_lik + lp
                value0 = probe_m.nodes[name]["value"]
                observed[name] = value0.cpu().numpy()
                observed_dims[name] = _site_dims(name, probe_m.nodes[name], value0)
                obs_dim = frame.name if frame.name == plate_name else obs_dim
                if rep_tr is not None:
                    predictive[name] = rep_tr.nodes[name]["value"].reshape((s_count,) + value0.shape).cpu().numpy()
            if log_lik is None:
                return None
            # the first and last draws, evaluated without the plate, must give the same numbers
            for s in {0, s_count - 1}:
                one = {n: v[s] for n, v in posterior.items()}
                check_tr = poutine.trace(poutine.condition(model, data=one)).get_trace(*args)
                ll_s, lprior_s, _ = _marginal_log_lik(check_tr, one, plate_name, depth)
                if not (torch.allclose(ll_s.to(log_lik.dtype), log_lik[s], rtol=1e-5, atol=1e-6)
                        and torch.allclose(lprior_s.to(log_prior.dtype), log_prior[s], rtol=1e-5, atol=1e-6)):
                    return None
        except (RuntimeError, ValueError, IndexError, KeyError):
            return None
    return GlobalDraws(
        posterior={n: v.double().cpu().numpy() for n, v in posterior.items()},
        posterior_dims={n: _site_dims(n, probe_m.nodes[n], theta0[n]) for n in theta0},
        log_lik=log_lik.double().cpu().numpy(),
        log_prior=log_prior.double().cpu().numpy(),
        log_q=log_q.double().cpu().numpy(),
        predictive=predictive,
        observed=observed,
        observed_dims=observed_dims,
        obs_dim=obs_dim,
    )


def _looped_draws(model: Callable, guide: Callable, args: tuple, num_samples: int, plate_name: str | None,
                  posterior_predictive: bool, depth: int) -> GlobalDraws:
    """One guide trace per draw, the model's unguided discrete latents enumerated (the general path)."""
    s_count = num_samples
    posterior: dict[str, list] = {}
    posterior_dims: dict[str, tuple[str, ...]] = {}
    log_lik, log_prior, log_q = [], [], []
    predictive: dict[str, list] = {}
    observed: dict[str, np.ndarray] = {}
    observed_dims: dict[str, tuple[str, ...]] = {}
    obs_dim = plate_name or "obs"
    with torch.no_grad():
        for _ in range(s_count):
            guide_tr = poutine.trace(guide).get_trace(*args)
            theta = {n: s["value"] for n, s in _latent_sites(guide_tr).items()}
            log_q.append(float(guide_tr.log_prob_sum()))
            fn = poutine.infer_config(poutine.condition(model, data=theta), _enumerate_unguided(guide_tr))
            model_tr = poutine.trace(poutine.enum(fn, first_available_dim=-(depth + 1))).get_trace(*args)
            ll, lprior, obs_sites = _marginal_log_lik(model_tr, theta, plate_name, depth)
            log_lik.append(ll.double().cpu().numpy())
            log_prior.append(float(lprior))
            for name, value in theta.items():
                posterior.setdefault(name, []).append(value.double().cpu().numpy())
                if name not in posterior_dims:
                    posterior_dims[name] = _site_dims(name, model_tr.nodes[name], value)
            if not observed:
                for name, site in obs_sites.items():
                    observed[name] = site["value"].cpu().numpy()
                    observed_dims[name] = _site_dims(name, site, site["value"])
                    obs_dim = next((f.name for f in site["cond_indep_stack"] if f.name == plate_name), obs_dim)
            if posterior_predictive:
                rep_fn = poutine.condition(poutine.uncondition(model), data=theta)
                rep_tr = poutine.trace(rep_fn).get_trace(*args)
                for name in obs_sites:
                    predictive.setdefault(name, []).append(rep_tr.nodes[name]["value"].cpu().numpy())
    return GlobalDraws(
        posterior={n: np.stack(v) for n, v in posterior.items()},
        posterior_dims=posterior_dims,
        log_lik=np.stack(log_lik),
        log_prior=np.asarray(log_prior),
        log_q=np.asarray(log_q),
        predictive={n: np.stack(v) for n, v in predictive.items()},
        observed=observed,
        observed_dims=observed_dims,
        obs_dim=obs_dim,
    )
