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

which is what VI-corrected PSIS-LOO (Magnusson et al. 2019, :func:`inference.diagnostics.loo.vi_loo`)
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
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from inference.engine._traces import plate_depth
from inference.engine.likelihood import PARTICLES, log_importance_weights
from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError

from .arviz_io import Group, to_arviz
from .family_groups import (
    ESTIMATORS,
    density_groups,
    diffusion_groups,
    model_family,
    no_density_groups,
)
from .posterior_draws import (
    GlobalDraws,
    _data_tensors,
    _fits,
    _in_plate,
    _latent_sites,
    _site_dims,
    sample_global_draws,
)

__all__ = ["GlobalDraws", "inference_data_groups", "model_family", "sample_global_draws", "to_inference_data"]


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
    """The groups of :func:`to_inference_data` as plain numpy :class:`~inference.diagnostics.arviz_io.Group` s.

    Same arguments as :func:`to_inference_data` (no ``coords``, no ``seed``); useful without
    ArviZ, or to build the container of another ArviZ version with :func:`inference.diagnostics.arviz_io.to_arviz`.
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
        density_groups(fits, args, groups, batch_size=batch_size, **common)
        groups["posterior"].attrs.setdefault("latents", "none sampled: log p(x) is exact (discrete latents summed out)")
        return groups
    if family == "diffusion":
        diffusion_groups(fits, args, groups, num_samples=num_samples, estimator=estimator, batch_size=batch_size,
                          **common)
        groups["posterior"].attrs["latents"] = "local x_1..x_T under the fixed forward process (no posterior group)"
        return groups
    if family == "no_density":
        no_density_groups(fits, args, groups, **common)
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
