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

**Local latents only** (VAE, linear-Gaussian model with an amortised encoder, or a
maximum-likelihood mixture with ``guide=None``): there is no posterior over globals; the
``log_likelihood`` group holds one per-observation estimate per chain (``draw`` of length 1)
from K = ``num_samples`` importance samples ``z_ik ~ q(z | x_i)``: the IWAE bound
``log (1/K) sum_k w_ik`` (Burda et al. 2016, eq. 8) or the ELBO ``(1/K) sum_k log w_ik``;
``"exact"`` for a guide-free model whose latents are all enumerated. The estimator is recorded
in ``log_likelihood.attrs["estimator"]``, and ``sample_stats`` keeps ``log_p``, ``log_q`` and
``log_weight`` per particle: ``(chain, 1, particle, data)``.

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

from ._checks import check_choice, check_positive_int
from ._traces import plate_depth
from .arviz_io import Group, to_arviz
from .batches import as_tensors, model_dtype
from .errors import ConfigError
from .likelihood import PARTICLES, _enumerate_unguided, log_importance_weights

__all__ = ["to_inference_data", "inference_data_groups", "GlobalDraws", "sample_global_draws"]

Estimator = Literal["iwae", "elbo"]


# --------------------------------------------------------------------------- inputs


def _fits(model: Any, guide: Any, chains: int | Sequence[Any]) -> list[tuple[Callable, Callable | None]]:
    """(model, guide) per chain: ``chains`` copies of the one pair, or one per fit given."""
    if isinstance(chains, (int, np.integer)) and not isinstance(chains, bool):
        n = check_positive_int(chains, "chains")
        if model is None:
            raise ConfigError("expected a model, got None; pass the fitted model, or fits as chains=[...]")
        return [(model, guide)] * n
    if not isinstance(chains, Sequence) or isinstance(chains, str) or len(chains) == 0:
        raise ConfigError(f"expected chains to be an int >= 1 or a non-empty sequence of fits, got {chains!r}")
    fits = []
    for fit in chains:
        if hasattr(fit, "model"):  # FitResult / EMResult
            fits.append((fit.model, getattr(fit, "guide", None)))
        elif isinstance(fit, tuple) and len(fit) == 2:
            fits.append(fit)
        else:
            raise ConfigError(
                f"expected each fit in chains to be a FitResult, an EMResult or a (model, guide) pair, got {fit!r}"
            )
    return fits


def _data_tensors(model: Callable, guide: Callable | None, data: Any) -> tuple[torch.Tensor, ...]:
    params = [p for m in (model, guide) if isinstance(m, torch.nn.Module) for p in m.parameters()]
    device = params[0].device if params else torch.device("cpu")
    tensors = as_tensors(data, name="data", device=device, dtype=model_dtype(model, guide))
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

    One guide trace per draw (``num_samples`` of them, in order: seeding Pyro before the call
    reproduces the draws); the model is conditioned on ``theta_s`` and its unguided discrete
    latents enumerated, so mixtures get their exact marginal ``log sum_z p(x_i, z | theta)``.

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
            for name, site in guide_tr.nodes.items():
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


# --------------------------------------------------------------------------- public API


def inference_data_groups(
    model: Any,
    guide: Any,
    data: Any,
    *,
    num_samples: int = 1000,
    chains: int | Sequence[Any] = 1,
    dims: Mapping[str, Sequence[str]] | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    estimator: Estimator = "iwae",
    plate_name: str | None = "data",
    batch_size: int = 256,
) -> dict[str, Group]:
    """The groups of :func:`to_inference_data` as plain numpy :class:`~inference.arviz_io.Group` s.

    Same arguments as :func:`to_inference_data` (no ``coords``, no ``seed``); useful without
    ArviZ, or to build the container of another ArviZ version with :func:`inference.arviz_io.to_arviz`.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    check_choice(estimator, "estimator", ("iwae", "elbo"))
    fits = _fits(model, guide, chains)
    args = _data_tensors(*fits[0], data)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # probe without shifting the seeded draws
        probe = poutine.trace(fits[0][1]).get_trace(*args) if fits[0][1] is not None else poutine.Trace()
        model_tr = poutine.trace(poutine.replay(fits[0][0], trace=probe)).get_trace(*args)
    latents = _latent_sites(probe)
    is_global = any(name in model_tr.nodes and not _in_plate(model_tr.nodes[name], plate_name) for name in latents)
    groups = {
        "posterior": Group(),
        "posterior_predictive": Group(),
        "log_likelihood": Group(),
        "sample_stats": Group(),
        "observed_data": Group(sampled=False),
    }
    user_dims = {k: tuple(v) for k, v in (dims or {}).items()}
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
    num_samples: int = 1000,
    chains: int | Sequence[Any] = 1,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    estimator: Estimator = "iwae",
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

    Args:
        model, guide: the fitted pair, called as ``model(*data)``; ``guide=None`` for a model
            whose latents are all enumerable (a maximum-likelihood mixture).
        data: observations ``(N, ...)``, or a tuple such as ``(X, y)``.
        num_samples: draws per chain (global latents) or importance samples K (local).
        chains: number of independent chains from the one guide, or a sequence of fits
            (``FitResult``, ``EMResult`` or ``(model, guide)``; independent restarts), one
            chain each; then ``model`` and ``guide`` may be None.
        coords: coordinate values per dim name (integers by default).
        dims: dim names per variable (without chain, draw), overriding the plate-derived names.
        log_likelihood, posterior_predictive: whether to compute those groups.
        estimator: ``"iwae"`` or ``"elbo"``, the per-observation estimate for local latents.
        plate_name: the model's observation plate.
        seed: seed for Pyro's sampling.

    Returns:
        :class:`arviz.InferenceData` (ArviZ 0.x) or :class:`xarray.DataTree` (ArviZ 1.x).

    Raises:
        ConfigError: bad sizes, a model mixing global and continuous local latents, or a
            model without an observed site in its data plate.

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
