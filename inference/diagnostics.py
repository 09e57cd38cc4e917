r"""Fitted Pyro model/guide pairs as ArviZ data: :func:`to_inference_data`.

Two kinds of model are handled, told apart by where the guide's latent sites sit:

**Global latents** (Bayesian logistic regression, a Bayesian mixture): draws
``theta_s ~ q(theta)``, ``s = 1..S``, become the ``posterior`` group, and

.. code-block:: text

    log_likelihood[s, i] = log p(x_i | theta_s)
                         = log sum_{z_i} p(z_i | theta_s) p(x_i | z_i, theta_s)   enumerated z_i, exact
    sample_stats.lp[s]    = log p(theta_s) + sum_i log_likelihood[s, i]            log p(theta_s, x)
    sample_stats.log_q[s] = log q(theta_s)
    sample_stats.log_weight[s] = lp[s] - log_q[s]                                 importance weight

which is what VI-corrected PSIS-LOO (Magnusson et al. 2019, :func:`inference.psis.vi_loo`)
and the k-hat diagnostic (Yao et al. 2018) need.

**Local latents only** (VAE, linear-Gaussian model with an amortised encoder): there is no
posterior over globals; the
``log_likelihood`` group holds one per-observation estimate per chain (``draw`` of length 1)
from K = ``num_samples`` importance samples ``z_ik ~ q(z | x_i)``: the IWAE bound
``log (1/K) sum_k w_ik`` (Burda et al. 2016, eq. 8) or the ELBO ``(1/K) sum_k log w_ik``;
``"exact"`` for a guide-free model whose latents are all enumerated. The estimator is recorded
in ``log_likelihood.attrs["estimator"]``, and ``sample_stats`` keeps ``log_p``, ``log_q`` and
``log_weight`` per particle: ``(chain, 1, particle, data)``.

**Other families** (:func:`model_family`), also with ``draw`` of length 1:

.. code-block:: text

    exact density, guide=None   log_likelihood[c, 0, i] = log p(x_i)             model.log_prob (flows, KDE,
                                                                                  MADE, fit_em mixtures)
    DDPM                        log_likelihood[c, 0, i] = -L_VLB(x_i) <= log p(x_i)    (Ho et al. 2020, eq. 5)
                                sample_stats.vlb_terms[c, 0, i, j] = L_j(x_i)
                                or the probability-flow ODE log p(x_i) (estimator "ode")
    GAN                         no density: posterior_predictive and observed_data only

A mixture fitted by EM has its parameters as a point-estimate ``posterior`` (one draw); a
Bayesian mixture fitted with ``AutoDelta`` (MAP) goes through the global-latent path, where
``log q = 0``.

Chains are independent: ``chains=C`` repeats the sampling C times, and a sequence of fits
(independent restarts) makes one chain per fit, so that r-hat across chains checks that the
restarts agree.

References
----------
Y. Yao, A. Vehtari, D. Simpson and A. Gelman, "Yes, but did it work?: Evaluating variational
inference", ICML 2018.
M. Magnusson, M. R. Andersen, J. Jonasson and A. Vehtari, "Bayesian leave-one-out
cross-validation for large data", ICML 2019.
Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ._checks import check_positive_int
from ._traces import plate_depth
from .arviz_io import Group, to_arviz
from .batches import as_tensors, model_dtype
from .errors import ConfigError
from .likelihood import PARTICLES, _enumerate_unguided, log_importance_weights

__all__ = ["GlobalDraws", "inference_data_groups", "model_family", "sample_global_draws", "to_inference_data"]


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


# --------------------------------------------------------------------------- local latents


def _local_weights(model: Callable, guide: Callable | None, args: tuple, num_samples: int,
                   plate_name: str | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x_i, z_ik), log q(z_ik | x_i)), each ``(K, N)``, in memory-bounded chunks."""
    n = args[0].shape[0]
    per_obs = max(1, args[0][0].numel())
    log_w, log_q = [], []
    for start in range(0, n, batch_size):
        batch = tuple(a[start : start + batch_size] for a in args)
        b = batch[0].shape[0]
        depth = plate_depth(model, guide, batch)
        chunk = max(1, min(num_samples, (1 << 21) // (b * per_obs)))
        w_parts, q_parts = [], []
        for k0 in range(0, num_samples, chunk):
            k = min(chunk, num_samples - k0)
            if guide is None:
                w_parts.append(log_importance_weights(model, None, *batch, num_samples=k, plate_name=plate_name,
                                                      max_plate_nesting=depth))
                q_parts.append(torch.zeros(k, b, dtype=w_parts[-1].dtype))
                continue
            with torch.no_grad(), pyro.plate(PARTICLES, k, dim=-(depth + 1)):
                guide_tr = poutine.trace(guide).get_trace(*batch)
            lq = torch.zeros(k, b, dtype=args[0].dtype if args[0].is_floating_point() else torch.get_default_dtype())
            for site in guide_tr.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                lp = site["fn"].log_prob(site["value"])
                lp = lp.reshape((1,) * max(0, depth + 1 - lp.dim()) + lp.shape)
                data_dim = next((f.dim for f in site["cond_indep_stack"] if f.name == plate_name), -1)
                for d in range(-depth, 0):
                    if d != data_dim and lp.shape[d] > 1:
                        lp = lp.sum(d, keepdim=True)
                lq = lq + lp.reshape(lp.shape[0], -1)
            q_parts.append(lq)
            replayed = poutine.replay(guide, trace=guide_tr)
            w_parts.append(log_importance_weights(model, replayed, *batch, num_samples=k, plate_name=plate_name,
                                                  max_plate_nesting=depth))
        log_w.append(torch.cat(w_parts))
        log_q.append(torch.cat(q_parts))
    w, q = torch.cat(log_w, dim=1), torch.cat(log_q, dim=1)
    return w + q, q


def _local_predictive(model: Callable, guide: Callable | None, args: tuple) -> tuple[dict, dict]:
    """One replicate ``x_rep_i ~ p(x | z_i)``, ``z_i ~ q(z | x_i)``, per observed site; and the observed data."""
    with torch.no_grad():
        guide_tr = poutine.trace(guide).get_trace(*args) if guide is not None else poutine.Trace()
        theta = {n: s["value"] for n, s in _latent_sites(guide_tr).items()}
        rep_tr = poutine.trace(poutine.condition(poutine.uncondition(model), data=theta)).get_trace(*args)
        obs_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    observed = {n: s for n, s in obs_tr.nodes.items() if s["type"] == "sample" and s["is_observed"]
                and not site_is_subsample(s)}
    reps = {n: rep_tr.nodes[n]["value"].cpu().numpy() for n in observed}
    return reps, observed


# --------------------------------------------------------------------------- families without a guide


Family = Literal["pyro", "density", "diffusion", "no_density"]
#: Name of the observed variable of a density model that is not a Pyro model (a kernel density).
DENSITY_VARIABLE = "x"
#: Per-observation estimators of each family; the first is the default.
ESTIMATORS: dict[str, tuple[str, ...]] = {
    "pyro": ("iwae", "elbo"),
    "diffusion": ("vlb", "ode"),
    "density": ("exact",),
    "no_density": (),
}


def model_family(model: Any, guide: Any) -> Family:
    """How :func:`to_inference_data` treats a model.

    - ``"diffusion"``: a :class:`vi_models.DDPM` (guide ``None`` or its
      :class:`guides.ForwardDiffusion`): the VLB per observation, or the ODE likelihood;
    - ``"no_density"``: a :class:`vi_models.GAN`: samples only;
    - ``"density"``: no guide and an exact ``log_prob`` (flows, kernel densities, autoregressive
      models, maximum-likelihood mixtures after :func:`inference.fit_em`, linear-Gaussian);
    - ``"pyro"``: any other Pyro model/guide pair (global latents, or amortised local ones).
    """
    from vi_models.diffusion import DDPM
    from vi_models.gan import GAN

    if isinstance(model, GAN):
        return "no_density"
    if isinstance(model, DDPM):
        return "diffusion"
    if guide is None and callable(getattr(model, "log_prob", None)):
        if getattr(model, "has_priors", False):
            raise ConfigError(
                f"{type(model).__name__} has priors on its global parameters, so it needs a guide over them "
                "(an AutoNormal, or AutoDelta for MAP); pass it as guide=, or build the model without priors "
                "and fit it with inference.fit_em"
            )
        return "density"
    return "pyro"


def _obs_dims(name: str, x: torch.Tensor, obs_dim: str, user_dims: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    return user_dims.get(name, (obs_dim,) + tuple(f"{name}_dim_{j}" for j in range(1, x.dim())))


def _samples_like(model: Any, n: int) -> np.ndarray:
    """``model.sample(n)`` as numpy, one replicate of an ``n``-point dataset."""
    with torch.no_grad():
        return model.sample(n).detach().cpu().numpy()


def _point_estimates(model: Any) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """The fitted global parameters of a mixture (``model.params()``), dims ``(components, ...)``."""
    params = model.params() if callable(getattr(model, "params", None)) else {}
    k = getattr(model, "n_components", None)
    values, dims = {}, {}
    for name, value in params.items():
        value = value.detach().double().cpu().numpy()
        names = [f"{name}_dim_{j}" for j in range(value.ndim)]
        if value.ndim and value.shape[0] == k:
            names[0] = "components"
        values[name], dims[name] = value, tuple(names)
    return values, dims


def _single_tensor(args: tuple[torch.Tensor, ...], family: str) -> torch.Tensor:
    if len(args) != 1:
        raise ConfigError(
            f"expected one data tensor (N, ...) for a {family} model, got a tuple of {len(args)}; pass the "
            "observations only"
        )
    return args[0]


def _density_groups(fits: list, args: tuple, groups: dict[str, Group], *, log_likelihood: bool,
                    posterior_predictive: bool, user_dims: Mapping, obs_dim: str, batch_size: int) -> None:
    """Exact ``log p(x_i)`` per chain (draw of length 1), one replicate dataset, point estimates."""
    x = _single_tensor(args, "density")
    name = DENSITY_VARIABLE
    dims = _obs_dims(name, x, obs_dim, user_dims)
    lls, reps, points = [], [], []
    for m, _ in fits:
        if log_likelihood:
            with torch.no_grad():
                ll = torch.cat([m.log_prob(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
            lls.append(ll.double().cpu().numpy())
        if posterior_predictive:
            reps.append(_samples_like(m, x.shape[0]))
        points.append(_point_estimates(m))
    if log_likelihood:
        groups["log_likelihood"].add(name, np.stack(lls)[:, None], dims[:1])
        groups["log_likelihood"].attrs.update(estimator="exact")
    if posterior_predictive:
        groups["posterior_predictive"].add(name, np.stack(reps)[:, None], dims)
    for param, pdims in points[0][1].items():
        groups["posterior"].add(param, np.stack([p[0][param] for p in points])[:, None], user_dims.get(param, pdims))
    if points[0][0]:
        groups["posterior"].attrs.update(estimate="point (maximum likelihood); draw has length 1")
    groups["observed_data"].add(name, x.cpu().numpy(), dims)


def _check_forward_process(model: Any, guide: Any) -> None:
    if guide is not None and getattr(guide, "schedule", None) is not model.schedule:
        raise ConfigError(
            "expected the DDPM's guide to be guides.ForwardDiffusion(model.schedule) (sharing the model's schedule) "
            f"or None, got {type(guide).__name__}; the forward process is fixed, so guide=None is enough"
        )


def _diffusion_groups(fits: list, args: tuple, groups: dict[str, Group], *, num_samples: int, estimator: str,
                      log_likelihood: bool, posterior_predictive: bool, user_dims: Mapping, obs_dim: str,
                      batch_size: int) -> None:
    """Per-observation ``-L_VLB`` (mean of ``num_samples`` estimates) or the ODE log-likelihood; samples."""
    from vi_models.diffusion_sites import OBSERVED

    x = _single_tensor(args, "diffusion")
    dims = _obs_dims(OBSERVED, x, obs_dim, user_dims)
    lls, terms, reps = [], [], []
    for m, g in fits:
        _check_forward_process(m, g)
        if log_likelihood and estimator == "vlb":
            per_batch = []
            for i in range(0, x.shape[0], batch_size):
                xb = x[i : i + batch_size]
                per_batch.append(sum(m.vlb_terms(xb) for _ in range(num_samples)) / num_samples)  # (B, T + 1)
            t = torch.cat(per_batch).double().cpu().numpy()
            terms.append(t)
            lls.append(-t.sum(-1))
        elif log_likelihood:
            lls.append(m.log_prob(x, batch_size=batch_size).double().cpu().numpy())
        if posterior_predictive:
            reps.append(_samples_like(m, x.shape[0]))
    if log_likelihood:
        groups["log_likelihood"].add(OBSERVED, np.stack(lls)[:, None], dims[:1])
        if estimator == "vlb":
            groups["log_likelihood"].attrs.update(estimator="vlb", bound="lower", num_vlb_samples=num_samples)
            # column j holds L_j: L_0 the decoder term, L_1..L_{T-1} the KLs, L_T the prior term
            groups["sample_stats"].add("vlb_terms", np.stack(terms)[:, None], (dims[0], "vlb_term"))
        else:
            groups["log_likelihood"].attrs.update(estimator="ode")
    if posterior_predictive:
        groups["posterior_predictive"].add(OBSERVED, np.stack(reps)[:, None], dims)
    groups["observed_data"].add(OBSERVED, x.cpu().numpy(), dims)


def _no_density_groups(fits: list, args: tuple, groups: dict[str, Group], *, log_likelihood: bool,
                       posterior_predictive: bool, user_dims: Mapping, obs_dim: str) -> None:
    """A GAN: replicated data and the observations; no likelihood to put in ArviZ."""
    if log_likelihood:
        raise ConfigError(
            f"expected a model with a likelihood, got a {type(fits[0][0]).__name__}, which defines samples but no "
            "density: there is no log_likelihood group (nor k-hat, LOO or compare). Pass log_likelihood=False for "
            "the posterior_predictive and observed_data groups only, or convert a density fitted to its samples, "
            "e.g. vi_models.KernelDensity().fit(gan.sample(10_000)), with guide=None"
        )
    x = _single_tensor(args, "GAN")
    dims = _obs_dims(DENSITY_VARIABLE, x, obs_dim, user_dims)
    if posterior_predictive:
        reps = [_samples_like(m, x.shape[0]) for m, _ in fits]
        groups["posterior_predictive"].add(DENSITY_VARIABLE, np.stack(reps)[:, None], dims)
    groups["observed_data"].add(DENSITY_VARIABLE, x.cpu().numpy(), dims)


# --------------------------------------------------------------------------- public API


def inference_data_groups(
    model: Any,
    guide: Any,
    data: Any,
    *,
    num_samples: int | None = None,
    chains: int | Sequence[Any] = 1,
    dims: Mapping[str, Sequence[str]] | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    estimator: str | None = None,
    plate_name: str | None = "data",
    batch_size: int = 256,
) -> dict[str, Group]:
    """The groups of :func:`to_inference_data` as plain numpy :class:`~inference.arviz_io.Group` s.

    Same arguments as :func:`to_inference_data` (no ``coords``, no ``seed``); useful without
    ArviZ, or to build the container of another ArviZ version with :func:`inference.arviz_io.to_arviz`.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    fits = _fits(model, guide, chains)
    family = model_family(*fits[0])
    options = ESTIMATORS[family]
    if estimator is None:
        estimator = options[0] if options else None
    elif family == "no_density" or estimator not in options:
        raise ConfigError(
            f"expected estimator to be one of {', '.join(map(repr, options)) or '(none)'} for "
            f"{type(fits[0][0]).__name__}, got {estimator!r}; leave it as None for the default"
        )
    default_samples = 1 if family == "diffusion" else 1000
    num_samples = check_positive_int(default_samples if num_samples is None else num_samples, "num_samples")
    args = _data_tensors(*fits[0], data)
    groups = {
        "posterior": Group(),
        "posterior_predictive": Group(),
        "log_likelihood": Group(),
        "sample_stats": Group(),
        "observed_data": Group(sampled=False),
    }
    user_dims = {k: tuple(v) for k, v in (dims or {}).items()}
    obs_dim = plate_name or "data"
    common = {"log_likelihood": log_likelihood, "posterior_predictive": posterior_predictive,
              "user_dims": user_dims, "obs_dim": obs_dim}
    if family == "density":
        _density_groups(fits, args, groups, batch_size=batch_size, **common)
        groups["posterior"].attrs.setdefault("latents", "none sampled: log p(x) is exact (discrete latents summed out)")
        return groups
    if family == "diffusion":
        _diffusion_groups(fits, args, groups, num_samples=num_samples, estimator=estimator, batch_size=batch_size,
                          **common)
        groups["posterior"].attrs["latents"] = "local x_1..x_T under the fixed forward process (no posterior group)"
        return groups
    if family == "no_density":
        _no_density_groups(fits, args, groups, **common)
        return groups
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # probe without shifting the seeded draws
        probe = poutine.trace(fits[0][1]).get_trace(*args) if fits[0][1] is not None else poutine.Trace()
        model_tr = poutine.trace(poutine.replay(fits[0][0], trace=probe)).get_trace(*args)
    latents = _latent_sites(probe)
    is_global = any(name in model_tr.nodes and not _in_plate(model_tr.nodes[name], plate_name) for name in latents)
    if is_global:
        draws = [sample_global_draws(m, g, *args, num_samples=num_samples, plate_name=plate_name,
                                     posterior_predictive=posterior_predictive) for m, g in fits]
        first = draws[0]
        for name in first.posterior:
            groups["posterior"].add(name, np.stack([d.posterior[name] for d in draws]),
                                    user_dims.get(name, first.posterior_dims[name]))
        for name in first.predictive:
            groups["posterior_predictive"].add(name, np.stack([d.predictive[name] for d in draws]),
                                               user_dims.get(name, first.observed_dims[name]))
        if log_likelihood:
            ll = np.stack([d.log_lik for d in draws])
            for name in first.observed:  # the joint per observation, under each observed site's name
                groups["log_likelihood"].add(name, ll, user_dims.get(name, first.observed_dims[name])[:1])
            groups["log_likelihood"].attrs["estimator"] = "exact_marginal"
        lp = np.stack([d.log_joint for d in draws])
        lq = np.stack([d.log_q for d in draws])
        groups["sample_stats"].add("lp", lp, ())
        groups["sample_stats"].add("log_q", lq, ())
        groups["sample_stats"].add("log_weight", lp - lq, ())
        observed, observed_dims = first.observed, first.observed_dims
    else:
        method = "exact" if fits[0][1] is None else estimator
        lls, log_ps, log_qs, reps = [], [], [], []
        for m, g in fits:
            k = 1 if g is None else num_samples
            log_p, log_q = _local_weights(m, g, args, k, plate_name, batch_size)
            log_w = log_p - log_q
            lls.append((torch.logsumexp(log_w, 0) - math.log(k)) if method != "elbo" else log_w.mean(0))
            log_ps.append(log_p)
            log_qs.append(log_q)
            if posterior_predictive:
                reps.append(_local_predictive(m, g, args)[0])
        _, obs_sites = _local_predictive(fits[0][0], fits[0][1], args)
        observed = {n: s["value"].cpu().numpy() for n, s in obs_sites.items()}
        observed_dims = {n: _site_dims(n, s, s["value"]) for n, s in obs_sites.items()}
        for name in observed:
            obs_dims = user_dims.get(name, observed_dims[name])
            if log_likelihood:
                ll = torch.stack(lls).unsqueeze(1).double().cpu().numpy()  # (C, 1, N)
                groups["log_likelihood"].add(name, ll, obs_dims[:1])
            if posterior_predictive:
                groups["posterior_predictive"].add(name, np.stack([r[name] for r in reps])[:, None], obs_dims)
        if log_likelihood:
            groups["log_likelihood"].attrs.update(estimator=method, num_importance_samples=1 if method == "exact" else num_samples)
        obs_dim = (user_dims.get(next(iter(observed)), observed_dims[next(iter(observed))]) if observed else ("data",))[0]
        for key, values in (("log_p", log_ps), ("log_q", log_qs)):
            groups["sample_stats"].add(key, torch.stack(values).unsqueeze(1).double().cpu().numpy(), ("particle", obs_dim))
        groups["sample_stats"].add("log_weight", groups["sample_stats"].data["log_p"] - groups["sample_stats"].data["log_q"],
                                   ("particle", obs_dim))
    for name, value in observed.items():
        groups["observed_data"].add(name, value, user_dims.get(name, observed_dims[name]))
    groups["posterior"].attrs["latents"] = "global" if is_global else "local (no posterior group)"
    return groups


def to_inference_data(
    model: Any,
    guide: Any,
    data: Any,
    *,
    num_samples: int | None = None,
    chains: int | Sequence[Any] = 1,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    estimator: str | None = None,
    plate_name: str | None = "data",
    seed: int | None = None,
) -> Any:
    """A fitted Pyro model/guide pair as ArviZ data, every sampled group with (chain, draw, ...) axes.

    Groups (see the module docstring for the formulas):

    - ``posterior``: the guide's global latents, ``(chain, draw, *site_shape)``, dims named
      after the model's plates (``components``) or ``{site}_dim_j``; absent when every latent
      is local (VAE).
    - ``posterior_predictive``: replicated data per observed site, ``(chain, draw, N, ...)``.
    - ``log_likelihood``: per observation ``(chain, draw, N)`` under the observed site's
      name: ``log p(x_i | theta_s)`` exact over enumerated latents (global models), or the
      IWAE / ELBO estimate with ``draw`` of length 1 (local models);
      ``attrs["estimator"]`` says which.
    - ``sample_stats``: ``lp`` (log p(theta, x)), ``log_q``, ``log_weight`` per draw (global
      models); ``log_p``, ``log_q``, ``log_weight`` per particle and observation (local).
    - ``observed_data``: the observed sites' values ``(N, ...)``.

    Other families (see :func:`model_family`), each with ``draw`` of length 1:

    - exact densities with ``guide=None`` (flows, :class:`vi_models.KernelDensity`,
      :class:`vi_models.MADE`, an ``EMResult`` of :func:`inference.fit_em` or its mixture):
      ``log_likelihood`` is ``model.log_prob`` (``estimator="exact"``), ``posterior_predictive``
      one dataset from ``model.sample(N)``, and a mixture's fitted parameters are its
      ``posterior`` as point estimates (``posterior.attrs["estimate"]``); variable ``"x"``.
    - :class:`vi_models.DDPM` (guide ``None`` or its ``ForwardDiffusion``): ``log_likelihood``
      is ``-L_VLB`` per observation (``estimator="vlb"``, a lower bound, the mean of
      ``num_samples`` estimates) with its terms in ``sample_stats.vlb_terms`` ``(chain, draw, N,
      T + 1)`` (column j is L_j), or the probability-flow ODE likelihood (``estimator="ode"``);
      ``posterior_predictive`` is ``model.sample(N)``; no ``posterior`` (the forward process
      has no parameters); variable ``"x_0"``.
    - :class:`vi_models.GAN`: no density, so ``log_likelihood=True`` is an error; with
      ``log_likelihood=False`` the groups are ``posterior_predictive`` and ``observed_data``.

    Args:
        model, guide: the fitted pair, called as ``model(*data)``; ``guide=None`` for a model
            whose latents are all enumerable or that has an exact ``log_prob``. ``model`` may
            also be a ``FitResult`` or ``EMResult`` (its model and guide are used).
        data: observations ``(N, ...)``, or a tuple such as ``(X, y)``.
        num_samples: draws per chain (global latents), importance samples K (local; default
            1000 for both), or VLB estimates averaged (DDPM; default 1); unused for exact densities.
        chains: number of independent chains from the one guide, or a sequence of fits
            (``FitResult``, ``EMResult`` or ``(model, guide)``; independent restarts), one
            chain each; then ``model`` and ``guide`` may be None.
        coords: coordinate values per dim name (integers by default).
        dims: dim names per variable (without chain, draw), overriding the plate-derived names.
        log_likelihood, posterior_predictive: whether to compute those groups.
        estimator: the per-observation estimate: ``"iwae"`` (default) or ``"elbo"`` for local
            latents, ``"vlb"`` (default) or ``"ode"`` for a DDPM; None for the family's default.
        plate_name: the model's observation plate.
        seed: seed for Pyro's sampling.

    Returns:
        :class:`arviz.InferenceData` (ArviZ 0.x) or :class:`xarray.DataTree` (ArviZ 1.x).

    Raises:
        ConfigError: bad sizes, a model mixing global and continuous local latents, a model
            without an observed site in its data plate, an estimator the family lacks, or a
            GAN with ``log_likelihood=True``.

    Example:
        >>> idata = to_inference_data(gmm, guide, x, num_samples=500, chains=4)   # doctest: +SKIP
        >>> az.rhat(idata).means                                                 # doctest: +SKIP
    """
    if seed is not None:
        pyro.set_rng_seed(seed)
    groups = inference_data_groups(
        model, guide, data, num_samples=num_samples, chains=chains, dims=dims, log_likelihood=log_likelihood,
        posterior_predictive=posterior_predictive, estimator=estimator, plate_name=plate_name,
    )
    return to_arviz(groups, coords)
