"""InferenceData groups of the families that are not a model/guide pair with latents to approximate.

:func:`model_family` sorts a fitted model into one of four paths of
:func:`inference.to_inference_data`: a Pyro model/guide pair (``"pyro"``, in
:mod:`inference.diagnostics`), an exact density without a guide (``"density"``: flows, MADE, KDE,
mixtures from :func:`inference.fit_em`, ``LinearGaussian``), a DDPM with its fixed forward
process (``"diffusion"``: the per-observation log-likelihood is -L_VLB, or the exact ODE value),
or a sampler without a density (``"no_density"``: a GAN). The group builders below fill the
posterior predictive, log-likelihood and point-estimate posterior of the last three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from vi_models.errors import ConfigError

from .arviz_io import Group

__all__ = [
    "DENSITY_VARIABLE",
    "ESTIMATORS",
    "Family",
    "density_groups",
    "diffusion_groups",
    "model_family",
    "no_density_groups",
]


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
    from vi_models.diffusion.ddpm import DDPM
    from vi_models.gan.gan import GAN

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


def density_groups(fits: list, args: tuple, groups: dict[str, Group], *, log_likelihood: bool,
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


def diffusion_groups(fits: list, args: tuple, groups: dict[str, Group], *, num_samples: int, estimator: str,
                      log_likelihood: bool, posterior_predictive: bool, user_dims: Mapping, obs_dim: str,
                      batch_size: int) -> None:
    """Per-observation ``-L_VLB`` (mean of ``num_samples`` estimates) or the ODE log-likelihood; samples."""
    from vi_models.diffusion.sites import OBSERVED

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


def no_density_groups(fits: list, args: tuple, groups: dict[str, Group], *, log_likelihood: bool,
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
