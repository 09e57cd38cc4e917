r"""The ELBO split into its terms, per observation: reconstruction per observed site and KL per
latent site (THEORY T2), and a callback that records them every epoch of :func:`inference.fit`.

For a model ``p(x, z) = p(z) p(x | z)`` with guide ``q(z | x)`` (sites named as in the model),

.. code-block:: text

    ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))                            (T2)
         = sum_obs E_q[log p(x_s | ...)] - sum_latent E_q[log q(z_s | ...) - log p(z_s | ...)]

with one term per Pyro sample site: an observed site ``s`` gives the *reconstruction*
``E_q[log p(x_s | parents)]``, a latent site the *KL* ``E_q[log q(z_s) - log p(z_s | parents)]``,
computed in closed form (given the sampled parents) where torch knows the KL of the two
distributions and by Monte Carlo otherwise, exactly as ``TraceMeanField_ELBO`` does. Each term
is divided by the number of observations, so the numbers are nats per observation and

    ELBO per observation = sum of "reconstruction:*" terms - sum of "kl:*" terms

(:func:`elbo_from_terms`). A latent site outside the observation plate (a global latent) is
counted once for the whole data set, so its KL per observation is KL / N. Sites that only the
guide samples (auxiliary variables) have no term.

The KL terms show which latent sites carry information (a site whose KL stays near 0 is
unused: "posterior collapse"); their curves over training are drawn by
:func:`inference.diagnostics.plots.plot_elbo_terms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError

from .batches import as_tensors, model_dtype

__all__ = ["elbo_terms", "elbo_from_terms", "ElboTerms", "RECONSTRUCTION", "KL"]

#: Key prefixes of the terms: ``"reconstruction:<observed site>"`` and ``"kl:<latent site>"``.
RECONSTRUCTION = "reconstruction"
KL = "kl"
KLMethod = Literal["auto", "mc"]


def elbo_from_terms(terms: dict[str, float]) -> float:
    """ELBO per observation from the terms: sum of the reconstructions minus sum of the KLs."""
    return sum(v for k, v in terms.items() if k.startswith(RECONSTRUCTION + ":")) - sum(
        v for k, v in terms.items() if k.startswith(KL + ":")
    )


def _modules(model: Callable, guide: Callable | None) -> list[torch.nn.Module]:
    return [m for m in (model, guide) if isinstance(m, torch.nn.Module)]


def _site_kl(guide_site: dict, model_site: dict, method: KLMethod) -> torch.Tensor:
    """Per-element KL (or log q - log p) of one latent site, scaled and masked like the ELBO."""
    q, p, value = guide_site["fn"], model_site["fn"], guide_site["value"]
    kl = None
    if method == "auto":
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            kl = None
        if kl is not None and kl.shape != q.batch_shape:
            kl = None  # a broadcast beyond the guide's plates: fall back to the draw itself
    if kl is None:
        kl = q.log_prob(value) - p.log_prob(value)
    for site in (model_site, guide_site):  # poutine.scale / mask as the ELBO applies them
        if site["mask"] is not None:
            kl = kl * site["mask"]
    return kl * model_site["scale"]


def _in_plate(site: dict, plate_name: str | None, data_frames: set) -> bool:
    frames = {(f.name, f.dim) for f in site["cond_indep_stack"] if f.vectorized}
    if plate_name is not None and any(name == plate_name for name, _ in frames):
        return True
    return bool(frames & data_frames)


def _batch_terms(model: Callable, guide: Callable | None, batch: tuple, method: KLMethod,
                 plate_name: str | None, count_globals: bool) -> dict[str, torch.Tensor]:
    """Sums over the batch of every term, one guide sample."""
    guide_tr = poutine.trace(guide).get_trace(*batch) if guide is not None else poutine.Trace()
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*batch)
    model_tr.compute_log_prob()
    observed = [s for s in model_tr.nodes.values()
                if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)]
    # the observation plate: the plates every observed site shares
    data_frames: set | None = None
    for site in observed:
        frames = {(f.name, f.dim) for f in site["cond_indep_stack"] if f.vectorized}
        data_frames = frames if data_frames is None else data_frames & frames
    data_frames = data_frames or set()
    out: dict[str, torch.Tensor] = {}
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            out[f"{RECONSTRUCTION}:{name}"] = site["log_prob"].sum()
            continue
        guide_site = guide_tr.nodes.get(name)
        if guide_site is None or guide_site["type"] != "sample":
            raise ConfigError(
                f"the guide does not sample the model's latent site {name!r}, so the ELBO has no KL term for it; "
                "elbo_terms needs a guide over every latent (for a mixture whose assignments are enumerated, "
                "inference.log_likelihood(model, None, x, method='exact') gives the exact log p(x))"
            )
        if not count_globals and not _in_plate(site, plate_name, data_frames):
            continue  # a global latent's KL is counted once for the data set, on the first batch
        out[f"{KL}:{name}"] = _site_kl(guide_site, site, method).sum()
    return out


def elbo_terms(
    model: Callable,
    guide: Callable | None,
    data: Any,
    *,
    num_samples: int = 1,
    kl: KLMethod = "auto",
    batch_size: int = 256,
    plate_name: str | None = "data",
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """The ELBO's terms per observation, averaged over ``data`` and ``num_samples`` guide draws.

    Args:
        model, guide: a Pyro pair called as ``model(*batch)``, ``guide(*batch)``; the guide
            must sample every latent site of the model (``guide=None`` for a model without latents).
        data: observations ``(N, ...)``: a tensor, array, tuple of them, or a DataBundle (its
            ``train`` split).
        num_samples: guide draws per observation (the Monte Carlo size of the expectations).
        kl: ``"auto"``: a latent site's KL in closed form where torch has it for the pair
            (q, p) (given the sampled parents), else Monte Carlo; ``"mc"``: always the
            single-sample estimate ``log q(z) - log p(z)``, so that reconstruction - KL equals
            ``log p(x, z) - log q(z)`` draw by draw (the estimator of ``Trace_ELBO``).
        batch_size: observations per pass.
        plate_name: the model's observation plate; latents outside it are global.
        seed: seed for the guide's draws (the global RNG is restored afterwards when given).
        device: where to compute (default: where the model's parameters are).

    Returns:
        ``{"reconstruction:<observed site>": E_q[log p(x_s | ...)] / N, ..., "kl:<latent site>":
        KL / N, ...}`` in nats per observation, in the order of the model's sites; the ELBO
        per observation is :func:`elbo_from_terms` of it.

    Raises:
        ConfigError: bad arguments, a latent site the guide does not sample, or data that is
            not in memory.
        DataError: empty or non-finite data.

    Example:
        >>> terms = elbo_terms(vae, encoder, x_test, num_samples=4)        # doctest: +SKIP
        >>> terms                                                           # doctest: +SKIP
        {'kl:z': 11.2, 'reconstruction:x': -86.1}
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_choice(kl, "kl", ("auto", "mc"))
    modules = _modules(model, guide)
    params = [p for m in modules for p in m.parameters()]
    dev = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    tensors = as_tensors(data, name="data", device=dev, dtype=model_dtype(model, guide))
    if tensors is None:
        raise ConfigError("elbo_terms needs in-memory data (a tensor, array or tuple of them); pass a subset "
                          "such as dataset[:1000] as a tensor")
    n = tensors[0].shape[0]
    was_training = [m.training for m in modules]
    totals: dict[str, float] = {}
    # guide draws come from torch's generators only: fork them so that a seed here leaves the
    # caller's random stream (a training loop's) exactly where it was
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            for m in modules:
                m.eval()
            with torch.no_grad():
                for _ in range(num_samples):
                    for start in range(0, n, batch_size):
                        batch = tuple(t[start : start + batch_size] for t in tensors)
                        sums = _batch_terms(model, guide, batch, kl, plate_name, count_globals=start == 0)
                        for key, value in sums.items():
                            totals[key] = totals.get(key, 0.0) + float(value)
        finally:
            for m, flag in zip(modules, was_training):
                m.train(flag)
    return {key: value / (n * num_samples) for key, value in totals.items()}


class ElboTerms:
    """Callback for :func:`inference.fit`: the ELBO terms on fixed data after every epoch.

    ``fit`` calls ``on_epoch_end(epoch, logs)`` with the per-epoch logs only, so the model and
    guide are given here (or later with :meth:`set_model`). The terms are computed at beta = 1
    whatever KL annealing the training uses, with the same guide noise every epoch (``seed``)
    so that the curves show the change of the parameters, not Monte Carlo noise, and without
    touching the training's random stream.

    Args:
        data: the observations to evaluate on ``(N, ...)`` (a few hundred suffice).
        num_samples: guide draws per observation.
        model, guide: the pair being fitted.
        every: evaluate every this many epochs.
        kl, batch_size, plate_name: as in :func:`elbo_terms`.
        seed: seed of the guide draws at every evaluation.

    Attributes:
        history: ``{"reconstruction:x": [...], "kl:z": [...]}``, one value per evaluation, ready
            for :func:`inference.diagnostics.plots.plot_elbo_terms`.
        epochs: the (1-based) epoch of each evaluation.

    Example:
        >>> terms = ElboTerms(x_val, model=vae, guide=encoder)             # doctest: +SKIP
        >>> fit(vae, encoder, x_train, callbacks=[terms])                  # doctest: +SKIP
        >>> plot_elbo_terms(terms.history)                                 # doctest: +SKIP
    """

    def __init__(self, data: Any, *, num_samples: int = 1, model: Callable | None = None,
                 guide: Callable | None = None, every: int = 1, kl: KLMethod = "auto", batch_size: int = 256,
                 plate_name: str | None = "data", seed: int = 0) -> None:
        self.data = data
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.every = check_positive_int(every, "every")
        self.kl = check_choice(kl, "kl", ("auto", "mc"))
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.plate_name = plate_name
        self.seed = seed
        self.model, self.guide = model, guide
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []

    def set_model(self, model: Callable, guide: Callable | None) -> None:
        """Attach the pair being fitted (for a loop that hands it to its callbacks)."""
        self.model, self.guide = model, guide

    def __call__(self, epoch: int, logs: dict[str, Any]) -> bool:
        return self.on_epoch_end(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        """Record the terms after ``epoch`` (1-based); never asks ``fit`` to stop."""
        if self.model is None:
            raise ConfigError(
                "ElboTerms has no model to evaluate: pass it to inference.fit(..., callbacks=[...]) (which "
                "hands it the pair), or build it as ElboTerms(data, model=model, guide=guide)"
            )
        if epoch % self.every:
            return False
        terms = elbo_terms(self.model, self.guide, self.data, num_samples=self.num_samples, kl=self.kl,
                           batch_size=self.batch_size, plate_name=self.plate_name, seed=self.seed)
        for key in [*self.history, *(k for k in terms if k not in self.history)]:
            self.history.setdefault(key, [math.nan] * len(self.epochs)).append(terms.get(key, math.nan))
        self.epochs.append(int(epoch))
        return False
