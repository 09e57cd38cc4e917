r"""Mixtures of Bernoullis and of categoricals: the EM engine is not Gaussian-only.

Generative stories, for each observation ``i`` of the plate ``"data"``:

.. code-block:: text

    z_i          ~ Categorical(pi)                                   (enumerated)
    Bernoulli:   x_ij | z_i ~ Bernoulli(p_{z_i j}),      x_ij in {0, 1}
    categorical: k_ij | z_i ~ Categorical(p_{z_i j .}),  k_ij = floor(L x_ij) in {0, ..., L-1}

The categorical mixture observes the grey level ``k = floor(L x)`` of dequantised data
``x = (k + u) / L`` in ``[0, 1)``, exactly like ``vi_models.VAE(likelihood="categorical")``, so its
``log_prob`` is the exact discrete ``log P(k)`` (``is_discrete = True``: bits/dim need no
dequantisation offset).

The M-step (Bishop 2006, eqs. 9.59-9.60 for Bernoullis) is the weighted frequency with a
pseudo-count ``a`` on every outcome, i.e. the MAP under a Beta(1 + a, 1 + a) /
Dirichlet(1 + a) prior on each component's probabilities:

.. code-block:: text

    N_k      = sum_i r_ik,        pi_k = N_k / N
    p_kj     = (sum_i r_ik x_ij + a) / (N_k + 2 a)                    Bernoulli
    p_kjl    = (sum_i r_ik [k_ij = l] + a) / (N_k + L a)              categorical

so EM increases ``log p(x | theta) + log_prior(theta)`` at every step, and a pixel never seen
on in a component keeps a non-zero probability on held-out data.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pyro.distributions import constraints
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroParam
from torch import Tensor

from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError, DataError
from vi_models.nets import check_batch

from .base import WEIGHTS, MixtureModel
from .components import Components
from .statistics import level_counts, padded_mass

__all__ = ["PROBS", "BernoulliMixture", "CategoricalMixture"]

#: Name of the per-component outcome probabilities (parameter of both mixtures).
PROBS = "probs"


def _check_pseudo_count(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"expected pseudo_count >= 0, got {value!r}; 1.0 is Laplace smoothing")
    return float(value)


class BernoulliComponents(Components):
    """K products of Bernoullis, ``probs`` ``(K, d)``."""

    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, probs: Tensor) -> None:
        self.probs = probs
        self.n_components = probs.shape[0]
        self.event_shape = torch.Size(probs.shape[-1:])

    def log_prob_table(self, value: Tensor) -> Tensor:
        """``sum_j x_j log p_kj + (1 - x_j) log(1 - p_kj)`` for every k: ``(K, *batch)``."""
        eps = torch.finfo(self.probs.dtype).eps
        p = self.probs.clamp(eps, 1 - eps)  # as torch's probs_to_logits
        log_p, log_q = p.log(), (-p).log1p()
        x = value.reshape(-1, value.shape[-1])
        table = log_q.sum(-1, keepdim=True) + (log_p - log_q) @ x.T  # (K, M)
        return table.reshape(-1, *value.shape[:-1])

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.probs[z], generator=generator)


class CategoricalComponents(Components):
    """K products of categoricals over ``L`` levels, ``probs`` ``(K, d, L)``."""

    def __init__(self, probs: Tensor) -> None:
        self.probs = probs
        self.n_components, d, self.num_levels = probs.shape
        self.event_shape = torch.Size([d])
        self.support = constraints.independent(constraints.integer_interval(0, self.num_levels - 1), 1)

    def log_prob_table(self, value: Tensor) -> Tensor:
        """``sum_j log p_{k j k_j}`` for every k: ``(K, *batch)`` for levels ``value`` ``(*batch, d)``."""
        k, d, levels = self.probs.shape
        log_p = self.probs.clamp_min(torch.finfo(self.probs.dtype).tiny).log().reshape(k, d * levels)
        flat = value.reshape(-1, d).long() + levels * torch.arange(d, device=value.device)  # (M, d)
        return log_p[:, flat].sum(-1).reshape(k, *value.shape[:-1])  # (K, M, d) -> (K, *batch)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.probs[z]  # (*z, d, L)
        draws = torch.multinomial(p.reshape(-1, self.num_levels), 1, generator=generator)
        return draws.reshape(p.shape[:-1])


class _DiscreteMixture(MixtureModel):
    is_discrete: ClassVar[bool] = True
    param_names: ClassVar[tuple[str, ...]] = (WEIGHTS, PROBS)

    def __init__(self, n_components: int, n_features: int, *, pseudo_count: float, device: Any,
                 dtype: torch.dtype | None) -> None:
        super().__init__(n_components, n_features, device=device, dtype=dtype)
        self.pseudo_count = _check_pseudo_count(pseudo_count)

    def set_params(self, *, weights: Any = None, probs: Any = None) -> None:
        """Write ``weights`` ``(K,)`` and/or ``probs`` (any subset)."""
        if weights is not None:
            self._set_weights(weights)
        if probs is not None:
            p = torch.as_tensor(probs)
            if bool(((p < 0) | (p > 1)).any()):
                raise DataError("expected probs in [0, 1]")
            self._write(PROBS, p, tuple(self.probs.shape))

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, n_features={self.n_features}, pseudo_count={self.pseudo_count}"


class BernoulliMixture(_DiscreteMixture):
    """Mixture of K products of ``d`` Bernoullis (binary data), a Pyro model.

    Args:
        n_components: K >= 1.
        n_features: d >= 1.
        pseudo_count: ``a >= 0`` added to both outcome counts in the M-step (0: maximum likelihood).
        device, dtype: where and in which precision the parameters live.

    Example:
        >>> model = BernoulliMixture(3, 4)
        >>> model.log_prob(torch.tensor([[0.0, 1.0, 1.0, 0.0]])).shape
        torch.Size([1])
    """

    def __init__(self, n_components: int, n_features: int, *, pseudo_count: float = 1.0,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(n_components, n_features, pseudo_count=pseudo_count, device=device, dtype=dtype)
        # Distinct random components (identical ones would never separate, THEORY T13).
        init = 0.25 + 0.5 * torch.rand(self.n_components, self.n_features, **self._factory)
        self.probs = PyroParam(init, constraint=constraints.unit_interval)

    def observation(self, x: Tensor) -> Tensor:
        check_batch(x, torch.Size([self.n_features]), like=self.weights_unconstrained, name="x")
        if is_validation_enabled() and not bool(((x == 0) | (x == 1)).all()):
            raise DataError(
                f"expected binary x in {{0, 1}} for a BernoulliMixture, got values in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; binarise the data first, e.g. (x > 0.5).to(x.dtype)"
            )
        return x

    def components(self, params: dict[str, Tensor]) -> BernoulliComponents:
        return BernoulliComponents(params[PROBS])

    @property
    def n_parameters(self) -> int:
        return self.n_components * self.n_features + self.n_components - 1

    def sufficient_statistics(self, x: Tensor, resp: Tensor, *, shift: Tensor | None = None) -> dict[str, Tensor]:
        """``N_k`` and ``sum_i r_ik x_i`` ``(K, d)`` of a chunk ``x`` ``(n, d)``, ``resp`` ``(n, K)``
        (additive over chunks; ``shift`` is unused: the sums are counts)."""
        return {"nk": resp.sum(0), "sum_x": resp.T @ x}

    def m_step_from_statistics(self, stats: dict[str, Tensor], *, shift: Tensor | None = None,
                               reg_covar: float = 0.0) -> dict[str, Tensor]:
        """Weighted frequencies with the pseudo-count (module docstring) from summed statistics.
        ``reg_covar`` is unused (there is no covariance)."""
        nk = padded_mass(stats)
        a = self.pseudo_count
        return {WEIGHTS: nk / nk.sum(), PROBS: (stats["sum_x"] + a) / (nk.unsqueeze(-1) + 2 * a)}

    def log_prior(self) -> Tensor:
        """``a sum_kj [log p_kj + log(1 - p_kj)]``: the Beta(1 + a, 1 + a) log-density up to a constant."""
        p = self.probs
        return self.pseudo_count * (p.log() + torch.log1p(-p)).sum()


class CategoricalMixture(_DiscreteMixture):
    """Mixture of K products of ``d`` categoricals over ``num_levels`` grey levels, a Pyro model.

    Data are dequantised levels ``x = (k + u) / L`` in ``[0, 1)``; the model observes
    ``k = floor(L x)`` (as ``VAE(likelihood="categorical")``) and :meth:`log_prob` is the exact
    ``log P(k)``.

    Args:
        n_components: K >= 1.
        n_features: d >= 1.
        num_levels: L >= 2 (17 for the digits).
        pseudo_count: ``a >= 0`` added to every level's count in the M-step.
        device, dtype: where and in which precision the parameters live.
    """

    def __init__(self, n_components: int, n_features: int, num_levels: int = 17, *,
                 pseudo_count: float = 1.0, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(n_components, n_features, pseudo_count=pseudo_count, device=device, dtype=dtype)
        self.num_levels = check_positive_int(num_levels, "num_levels", minimum=2)
        init = torch.rand(self.n_components, self.n_features, self.num_levels, **self._factory) + 0.5
        self.probs = PyroParam(init / init.sum(-1, keepdim=True), constraint=constraints.simplex)

    def levels(self, x: Tensor) -> Tensor:
        """Grey level ``k = floor(L x)`` (long), clamped to ``[0, L - 1]``."""
        return torch.floor(x * self.num_levels).clamp(0, self.num_levels - 1).long()

    def observation(self, x: Tensor) -> Tensor:
        check_batch(x, torch.Size([self.n_features]), like=self.weights_unconstrained, name="x")
        if is_validation_enabled() and not bool(((x >= 0) & (x < 1)).all()):
            raise DataError(
                f"expected dequantised x in [0, 1) for a CategoricalMixture, got values in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; pass (k + u) / num_levels with k the "
                "integer level and u ~ U[0, 1) (the data loader's dequantisation)"
            )
        return self.levels(x)

    def to_data_scale(self, value: Tensor) -> Tensor:
        """Bin centres ``(k + 0.5) / L`` of sampled levels."""
        return (value.to(self.weights_unconstrained.dtype) + 0.5) / self.num_levels

    def components(self, params: dict[str, Tensor]) -> CategoricalComponents:
        return CategoricalComponents(params[PROBS])

    @property
    def n_parameters(self) -> int:
        return self.n_components * self.n_features * (self.num_levels - 1) + self.n_components - 1

    def sufficient_statistics(self, x: Tensor, resp: Tensor, *, shift: Tensor | None = None) -> dict[str, Tensor]:
        """``N_k`` and the weighted level counts ``C_kjl`` ``(K, d, L)`` of a chunk of dequantised
        ``x`` ``(n, d)``, ``resp`` ``(n, K)`` (additive over chunks; ``shift`` is unused)."""
        return {"nk": resp.sum(0), "counts": level_counts(self.levels(x), resp, self.num_levels)}

    def m_step_from_statistics(self, stats: dict[str, Tensor], *, shift: Tensor | None = None,
                               reg_covar: float = 0.0) -> dict[str, Tensor]:
        """Weighted level frequencies with the pseudo-count (module docstring) from summed
        statistics. ``reg_covar`` is unused."""
        nk = padded_mass(stats)
        a = self.pseudo_count
        return {WEIGHTS: nk / nk.sum(), PROBS: (stats["counts"] + a) / (nk[:, None, None] + self.num_levels * a)}

    def log_prior(self) -> Tensor:
        """``a sum_kjl log p_kjl``: the Dirichlet(1 + a) log-density up to a constant."""
        return self.pseudo_count * self.probs.log().sum()
