"""What :func:`inference.fit_em` returns, and the assignments of a fitted mixture-like model.

- :class:`EMResult`: the fitted model with scikit-learn's ``GaussianMixture`` attributes
  (``converged_``, ``n_iter_``, ``lower_bound_``) and methods (``predict_proba``, ``predict``,
  ``score_samples``, ``score``, ``sample``, ``bic``, ``aic``) plus ``bits_per_dim``;
- :func:`assignment_probs`: ``P(z_i = k | x_i)`` by enumeration for a model fitted by EM or by
  SVI (with a guide over its globals, averaged over the guide's draws);
- the methods that take data read it as :func:`~inference.em.loop.fit_em` does (a tensor, a
  memory-mapped array, chunks: :mod:`.sources`), one chunk at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from inference.engine._traces import plate_depth
from inference.engine.batches import model_dtype
from inference.engine.likelihood import bits_per_dim
from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError
from vi_models.mixtures.chunks import sub_chunks

from .sources import as_model_data, as_source, model_device
from .steps import e_step, log_joint

__all__ = ["EMResult", "as_model_data", "assignment_probs", "model_device"]


@dataclass
class EMResult:
    """What :func:`fit_em` returns; attributes as scikit-learn's ``GaussianMixture``.

    Attributes:
        model: the fitted model (updated in place).
        converged_: whether the best initialisation met ``tol`` within ``max_iter``.
        n_iter_: EM iterations of the best initialisation.
        lower_bound_: mean log-likelihood per observation (nats) at the parameters the last
            E-step used (scikit-learn's definition).
        lower_bounds_: ``lower_bound_`` after every iteration of the best initialisation.
        init_lower_bounds_: final lower bound of each initialisation.
        best_init_: index of the initialisation kept.
        n_components: K.
        elapsed: wall-clock seconds of the call.
        time_per_iter: mean seconds per EM iteration (E-step + M-step, and the all-reduce of the
            statistics under ``torchrun``), over all initialisations.
        config: the JSON-able arguments of the call (with ``n_rows``, ``world_size``, ``streamed``).
        iteration_seconds_: wall-clock seconds of each iteration of the best initialisation.
        reseeds_: ``(n_iter, component, row)`` of each component the best initialisation re-seeded
            (``on_degenerate="reseed"``) at the observation in row ``row``.
    """

    model: Any
    converged_: bool
    n_iter_: int
    lower_bound_: float
    lower_bounds_: list[float]
    init_lower_bounds_: list[float]
    best_init_: int
    n_components: int
    elapsed: float
    time_per_iter: float
    config: dict[str, Any] = field(default_factory=dict)
    iteration_seconds_: list[float] = field(default_factory=list)
    reseeds_: list[tuple[int, int, int]] = field(default_factory=list)
    _depth: int = 1

    def _chunks(self, X: Any, chunk_size: int | None) -> Iterator[Tensor]:
        """``X`` as chunks (:func:`~.sources.as_source`): whole when in memory and no chunk size is
        given here or at the fit, else ``chunk_size`` rows at a time (a memmap, an iterable)."""
        size = check_positive_int(chunk_size, "chunk_size") if chunk_size is not None else self.config.get("chunk_size")
        source = as_source(X, self.model, chunk_size=size, dtype=model_dtype(self.model),
                           device=model_device(self.model))
        return (x for _, x in source.chunks())

    @torch.no_grad()
    def predict_proba(self, X: Any, *, chunk_size: int | None = None) -> Tensor:
        """Responsibilities ``P(z = k | x)`` ``(N, K)`` by enumeration.

        ``X`` may be anything :func:`fit_em` reads (a tensor, a memory-mapped array, chunks); it
        is read ``chunk_size`` rows at a time (default: as the fit was). The same holds for every
        method that takes ``X``; none of them communicates across ``torchrun`` ranks.
        """
        return torch.cat([e_step(self.model, x, max_plate_nesting=self._depth)[1].exp().T
                          for x in self._chunks(X, chunk_size)])

    def predict(self, X: Any, *, chunk_size: int | None = None) -> Tensor:
        """Most probable component ``(N,)`` (long)."""
        return self.predict_proba(X, chunk_size=chunk_size).argmax(-1)

    @torch.no_grad()
    def score_samples(self, X: Any, *, chunk_size: int | None = None) -> Tensor:
        """``log p(x_i)`` ``(N,)`` (nats; a log-probability for discrete models)."""
        return torch.cat([e_step(self.model, x, max_plate_nesting=self._depth)[0] for x in self._chunks(X, chunk_size)])

    @torch.no_grad()
    def _total_log_likelihood(self, X: Any, chunk_size: int | None) -> tuple[float, int, int]:
        """``(sum_i log p(x_i), N, D)``, one chunk in memory at a time."""
        total, n, d = 0.0, 0, 0
        for x in self._chunks(X, chunk_size):
            for rows in sub_chunks(x.shape[0], self.n_components):
                total += float(e_step(self.model, x[rows], max_plate_nesting=self._depth)[0].double().sum())
            n, d = n + x.shape[0], x[0].numel()
        return total, n, d

    def score(self, X: Any, *, chunk_size: int | None = None) -> float:
        """Mean log-likelihood per observation."""
        total, n, _ = self._total_log_likelihood(X, chunk_size)
        return total / n

    def sample(self, n_samples: int = 1, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(X (n, d), labels (n,))`` drawn from the fitted model (THEORY T10)."""
        if not hasattr(self.model, "sample"):
            raise ConfigError(f"{type(self.model).__name__} has no sample(n, return_assignment=True) method")
        return self.model.sample(n_samples, generator=generator, return_assignment=True)

    def _n_parameters(self) -> int:
        n = getattr(self.model, "n_parameters", None)
        if n is None:
            n = sum(p.numel() for p in self.model.parameters())
        return int(n)

    def bic(self, X: Any, *, chunk_size: int | None = None) -> float:
        """Bayesian information criterion ``-2 log L + p log N`` (lower is better)."""
        total, n, _ = self._total_log_likelihood(X, chunk_size)
        return -2 * total + self._n_parameters() * math.log(n)

    def aic(self, X: Any, *, chunk_size: int | None = None) -> float:
        """Akaike information criterion ``-2 log L + 2 p`` (lower is better)."""
        total, _, _ = self._total_log_likelihood(X, chunk_size)
        return -2 * total + 2 * self._n_parameters()

    def bits_per_dim(self, X: Any, *, num_levels: int | None = None, chunk_size: int | None = None) -> float:
        """Held-out bits per dimension: exact for a discrete model (``model.is_discrete``),
        else the dequantised bound with ``num_levels`` (see :func:`inference.bits_per_dim`)."""
        total, n, d = self._total_log_likelihood(X, chunk_size)
        discrete = bool(getattr(self.model, "is_discrete", False))
        return bits_per_dim(total / n, d, num_levels=num_levels, discrete=discrete)


@torch.no_grad()
def assignment_probs(model: Any, data: Any, guide: Any = None, *, num_samples: int = 1,
                     max_plate_nesting: int | None = None) -> Tensor:
    """Posterior assignment probabilities ``P(z_i = k | x_i)`` ``(N, K)`` by enumeration.

    Without a guide the model's own parameters are used (after :func:`fit_em`, or SVI with
    ``guide=None``). With a fitted autoguide over the globals (``AutoDelta``: MAP;
    ``AutoNormal``: posterior) the global latents are drawn from it ``num_samples`` times and
    the enumerated posteriors averaged: ``E_q(theta)[P(z_i = k | x_i, theta)]``.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    x = as_model_data(data, model)
    from pyro import poutine

    depth = max_plate_nesting or plate_depth(model, guide, (x[: min(x.shape[0], 8)],))
    if guide is None:
        return e_step(model, x, max_plate_nesting=depth)[1].exp().T
    total = None
    for _ in range(num_samples):
        guide_trace = poutine.trace(guide).get_trace(x)
        probs = torch.softmax(log_joint(model, x, guide_trace=guide_trace, max_plate_nesting=depth), dim=0).T
        total = probs if total is None else total + probs
    return total / num_samples
