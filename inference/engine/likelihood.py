"""Per-observation log-likelihood estimates: importance weights, IWAE, exact enumeration.

For a model p(x, z) with guide q(z | x) the importance weights are
w_k = p(x, z_k) / q(z_k | x), z_k ~ q(z | x), and

    log p(x) >= log (1/K) sum_k w_k                     (IWAE, Burda et al. 2016, eq. 8)

which is non-decreasing in K and tends to log p(x) (THEORY T7); K = 1 in expectation is the
ELBO (T1). Discrete latents of the model that the guide does not sample are summed out
exactly by Pyro's parallel enumeration, so a mixture model's log-likelihood is exact.

The weights are computed per observation: the model's observation plate (named ``"data"``
by default, else the outermost plate shared by every observed site) is kept, every other
plate is summed. All latent sites must sit inside that plate; global latents have no
per-observation weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from vi_models._math import logmeanexp
from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError

from ._traces import plate_depth
from .batches import as_tensors, model_dtype

__all__ = [
    "log_importance_weights",
    "log_likelihood",
    "bits_per_dim",
    "nats_to_bits_per_dim",
    "logmeanexp",
]

Method = Literal["iwae", "elbo", "exact"]
PARTICLES = "_importance_particles"


def _enumerate_unguided(guide_trace: Any) -> Callable[[dict], dict]:
    def config(site: dict) -> dict:
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and site["name"] not in guide_trace.nodes
            and getattr(site["fn"], "has_enumerate_support", False)
        ):
            return {"enumerate": "parallel"}
        return {}

    return config


def _data_dim(model_trace: Any, plate_name: str | None) -> int | None:
    """Dim of the observation plate: ``plate_name`` if every observed site is in it, else the
    outermost plate shared by all observed sites (None when there is none)."""
    frames: set | None = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site):
            fs = {(f.name, f.dim) for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLES}
            frames = fs if frames is None else frames & fs
    if not frames:
        return None
    for name, dim in frames:
        if name == plate_name:
            return dim
    return min(dim for _, dim in frames)


def log_importance_weights(
    model: Callable,
    guide: Callable | None,
    *args: torch.Tensor,
    num_samples: int,
    plate_name: str | None = "data",
    max_plate_nesting: int | None = None,
) -> torch.Tensor:
    """log p(x_i, z_ik) - log q(z_ik | x_i) for K guide samples, per observation.

    Args:
        model, guide: a Pyro model/guide pair called as ``model(*args)``; ``guide=None`` for a
            model whose latents are all discrete and enumerable.
        *args: the data batch, first tensor shape ``(B, ...)``.
        num_samples: K, drawn in one vectorised pass under an outer plate.
        plate_name: name of the observation plate.
        max_plate_nesting: plate depth of the model (guessed from a trace when None).

    Returns:
        Tensor ``(K, B)``; discrete latents absent from the guide are summed out exactly.

    Raises:
        ConfigError: a latent site lies outside the observation plate.
    """
    depth = max_plate_nesting if max_plate_nesting is not None else plate_depth(model, guide, args)
    with torch.no_grad():
        return _log_weights(model, guide, args, num_samples, plate_name, depth)


def _log_weights(model: Callable, guide: Callable | None, args: tuple, num_samples: int,
                 plate_name: str | None, depth: int) -> torch.Tensor:
    particle_dim = -(depth + 1)
    with pyro.plate(PARTICLES, num_samples, dim=particle_dim):
        if guide is not None:
            guide_tr = poutine.trace(guide).get_trace(*args)
        else:
            guide_tr = poutine.Trace()
        fn = poutine.infer_config(poutine.replay(model, trace=guide_tr), _enumerate_unguided(guide_tr))
        fn = poutine.enum(fn, first_available_dim=particle_dim - 1)
        model_tr = poutine.trace(fn).get_trace(*args)
    data_dim = _data_dim(model_tr, plate_name)
    total: torch.Tensor | None = None
    for sign, tr in ((1.0, model_tr), (-1.0, guide_tr)):
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["fn"].log_prob(site["value"])
            if not site["is_observed"]:
                plates = {f.dim for f in site["cond_indep_stack"] if f.vectorized}
                if data_dim is not None and data_dim not in plates:
                    raise ConfigError(
                        f"per-observation importance weights need every latent site inside the "
                        f"observation plate, but {name!r} is global; fit global latents by SVI and "
                        "use inference.to_inference_data for their posterior"
                    )
            # Sum every plate dimension except the observation plate; keep particles and enum dims.
            full_dims = max(lp.dim(), -particle_dim)
            lp = lp.reshape((1,) * (full_dims - lp.dim()) + lp.shape)
            for d in range(-depth, 0):
                if d != data_dim and lp.shape[d] > 1:
                    lp = lp.sum(d, keepdim=True)
            total = sign * lp if total is None else total + sign * lp
    # Exact sum over enumerated discrete latents (all enum dims lie left of the particle dim).
    if total is None:
        raise ConfigError("the model has no sample sites: there is nothing to weigh")
    if total.dim() > -particle_dim:
        lead = total.dim() + particle_dim
        total = torch.logsumexp(total.reshape((-1,) + total.shape[lead:]), dim=0)
    total = total.reshape(total.shape[0], -1)  # (K or 1, B or 1)
    batch = args[0].shape[0] if args and data_dim is not None else 1
    return total.expand(num_samples, batch)


def log_likelihood(
    model: Callable,
    guide: Callable | None,
    data: Any,
    *,
    method: Method = "iwae",
    num_samples: int = 1000,
    batch_size: int = 256,
    chunk_size: int | None = None,
    plate_name: str | None = "data",
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-observation estimates of log p(x) (nats).

    Args:
        model, guide: a fitted Pyro pair (``guide=None`` when every latent is enumerable, or
            when ``model`` has its own exact ``log_prob``).
        data: observations ``(N, ...)`` (tensor, array, tuple of them, or a DataBundle's test
            split via ``bundle.test``).
        method: ``"iwae"``: log (1/K) sum_k w_k, a lower bound tending to log p(x) as K grows;
            ``"elbo"``: (1/K) sum_k log w_k, the ELBO (a looser bound); ``"exact"``: the
            model's own ``log_prob(x)`` or the enumerated marginal (models whose latents are
            all discrete).
        num_samples: K importance samples per observation.
        batch_size: observations per pass.
        chunk_size: particles per pass (default: about 2 million data values per pass).
        plate_name: the model's observation plate.
        seed: seed for the guide's samples.
        device: where to compute (default: where the model's parameters are).

    Returns:
        Tensor ``(N,)`` of log-likelihood estimates in the data's own units.

    Example:
        >>> ll = log_likelihood(vae, encoder, x_test, num_samples=1000)   # doctest: +SKIP
        >>> bits_per_dim(ll.mean(), 64, num_levels=17)                    # doctest: +SKIP
    """
    check_choice(method, "method", ("iwae", "elbo", "exact"))
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    params = [p for m in (model, guide) if isinstance(m, torch.nn.Module) for p in m.parameters()]
    dev = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    tensors = as_tensors(data, name="data", device=dev, dtype=model_dtype(model, guide))
    if tensors is None:
        raise ConfigError("log_likelihood needs in-memory data (a tensor, array or tuple of them)")
    if seed is not None:
        pyro.set_rng_seed(seed)
    n = tensors[0].shape[0]
    if method == "exact" and hasattr(model, "log_prob") and guide is None:
        with torch.no_grad():
            return torch.cat([model.log_prob(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])
    if method == "exact":
        if guide is not None:
            raise ConfigError(
                "method='exact' is for models whose latents are all enumerable (pass guide=None) or "
                "that have their own log_prob; use method='iwae' with a guide"
            )
        num_samples = 1
    per_obs = max(1, tensors[0][0].numel())
    out = []
    was_training = [m.training for m in (model, guide) if isinstance(m, torch.nn.Module)]
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.eval()
    try:
        for start in range(0, n, batch_size):
            batch = tuple(t[start : start + batch_size] for t in tensors)
            b = batch[0].shape[0]
            chunk = chunk_size or max(1, min(num_samples, (1 << 21) // (b * per_obs)))
            pieces = []
            for k0 in range(0, num_samples, chunk):
                k = min(chunk, num_samples - k0)
                logw = log_importance_weights(model, guide, *batch, num_samples=k, plate_name=plate_name)
                pieces.append(torch.logsumexp(logw, 0) if method != "elbo" else logw.sum(0))
            stacked = torch.stack(pieces)
            if method == "elbo":
                out.append(stacked.sum(0) / num_samples)
            else:
                out.append(torch.logsumexp(stacked, 0) - math.log(num_samples))
    finally:
        for m, flag in zip([m for m in (model, guide) if isinstance(m, torch.nn.Module)], was_training):
            m.train(flag)
    return torch.cat(out)


def nats_to_bits_per_dim(nats_per_example: float, num_dims: int) -> float:
    """Negative log-likelihood per example (nats) to bits per dimension."""
    return nats_per_example / (num_dims * math.log(2.0))


def bits_per_dim(
    log_likelihood: float | torch.Tensor,
    num_dims: int,
    *,
    num_levels: int | None = None,
    discrete: bool = False,
) -> float:
    """Bits per dimension of the discrete data from a mean log-likelihood (nats per example).

    For data dequantised as x = (k + u) / L on [0, 1)^D, a continuous density's log p(x)
    bounds the discrete likelihood: log P(k) >= E_u[log p((k + u) / L)] - D log L, so

        bits/dim = -(E[log p(x)] - D log L) / (D log 2)

    (``discrete=False``, ``num_levels=L``); a discrete model's exact log P(k) gives
    -log P(k) / (D log 2) (``discrete=True`` or ``num_levels=None``).
    """
    ll = float(log_likelihood.mean()) if isinstance(log_likelihood, torch.Tensor) else float(log_likelihood)
    if num_dims < 1:
        raise ConfigError(f"expected num_dims >= 1, got {num_dims!r}")
    if num_levels is not None and not discrete:
        ll = ll - num_dims * math.log(num_levels)
    return -ll / (num_dims * math.log(2.0))
