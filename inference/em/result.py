"""What :func:`inference.fit_em` returns, and the assignments of a fitted mixture-like model.

- :class:`EMResult`: the fitted model with scikit-learn's ``GaussianMixture`` attributes
  (``converged_``, ``n_iter_``, ``lower_bound_``) and methods (``predict_proba``, ``predict``,
  ``score_samples``, ``score``, ``sample``, ``bic``, ``aic``) plus ``bits_per_dim``;
- :func:`assignment_probs`: ``P(z_i = k | x_i)`` by enumeration for a model fitted by EM or by
  SVI (with a guide over its globals, averaged over the guide's draws);
- :func:`as_model_data`: data as the ``(N, n_features)`` tensor the model expects, in its
  dtype and on its device (also how :func:`~inference.em.loop.fit_em` reads its data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from inference.engine._traces import plate_depth
from inference.engine.batches import model_dtype
from inference.engine.likelihood import bits_per_dim
from vi_models._validation import as_data_tensor, check_positive_int
from vi_models.errors import ConfigError, DataError

from .steps import e_step, log_joint

__all__ = ["EMResult", "as_model_data", "assignment_probs", "model_device"]


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameter (CPU if it has none)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def as_model_data(data: Any, model: Any, name: str = "data", device: torch.device | None = None) -> Tensor:
    """Validated ``(N, n_features)`` tensor in the model's dtype, on its device."""
    if hasattr(data, "train") and isinstance(data.train, Tensor):
        data = data.train
    x = as_data_tensor(data, name=name, dtype=model_dtype(model), device=device or model_device(model))
    n_features = getattr(model, "n_features", None)
    if n_features is not None and (x.dim() != 2 or x.shape[1] != n_features):
        fix = (f"reshape it with {name}.reshape(-1, {n_features})" if x.numel() % n_features == 0
               else "build the model with n_features equal to the data's number of columns")
        raise DataError(f"expected {name} of shape (n_samples, {n_features}), got {tuple(x.shape)}; {fix}")
    return x


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
        time_per_iter: mean seconds per EM iteration (E-step + M-step), over all initialisations.
        config: the JSON-able arguments of the call.
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
    _depth: int = 1

    def _x(self, X: Any) -> Tensor:
        return as_model_data(X, self.model, name="X")

    @torch.no_grad()
    def predict_proba(self, X: Any) -> Tensor:
        """Responsibilities ``P(z = k | x)`` ``(N, K)`` by enumeration."""
        return e_step(self.model, self._x(X), max_plate_nesting=self._depth)[1].exp().T

    def predict(self, X: Any) -> Tensor:
        """Most probable component ``(N,)`` (long)."""
        return self.predict_proba(X).argmax(-1)

    @torch.no_grad()
    def score_samples(self, X: Any) -> Tensor:
        """``log p(x_i)`` ``(N,)`` (nats; a log-probability for discrete models)."""
        return e_step(self.model, self._x(X), max_plate_nesting=self._depth)[0]

    def score(self, X: Any) -> float:
        """Mean log-likelihood per observation."""
        return float(self.score_samples(X).mean())

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

    def bic(self, X: Any) -> float:
        """Bayesian information criterion ``-2 log L + p log N`` (lower is better)."""
        x = self._x(X)
        return -2 * self.score(x) * x.shape[0] + self._n_parameters() * math.log(x.shape[0])

    def aic(self, X: Any) -> float:
        """Akaike information criterion ``-2 log L + 2 p`` (lower is better)."""
        x = self._x(X)
        return -2 * self.score(x) * x.shape[0] + 2 * self._n_parameters()

    def bits_per_dim(self, X: Any, *, num_levels: int | None = None) -> float:
        """Held-out bits per dimension: exact for a discrete model (``model.is_discrete``),
        else the dequantised bound with ``num_levels`` (see :func:`inference.bits_per_dim`)."""
        x = self._x(X)
        discrete = bool(getattr(self.model, "is_discrete", False))
        return bits_per_dim(self.score_samples(x).mean(), x[0].numel(), num_levels=num_levels, discrete=discrete)


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
