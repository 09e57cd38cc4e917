"""Emission distributions of the mixtures: all K component log-densities in one pass.

``ComponentEmission(components, z)`` is the distribution of ``x | z`` for an enumerated
assignment ``z``: it evaluates every component's log-density with matrix products
(scikit-learn's formulas for Gaussians) and selects each observation's component, which is
what makes the enumerated E-step of :func:`inference.fit_em` fast. Tests check it against
Pyro's stock ``MultivariateNormal`` / ``Normal``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Final

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

__all__ = ["Components", "ComponentEmission", "GaussianComponents"]

_LOG_2PI: Final = math.log(2 * math.pi)


class Components:
    """The K component distributions of a mixture, evaluated together.

    Subclasses implement :meth:`log_prob_table` (all K log-densities, shape ``(K, *batch)``)
    and :meth:`sample` (a draw for given assignments).
    """

    n_components: int
    support: constraints.Constraint
    event_shape: torch.Size

    def log_prob_table(self, value: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class ComponentEmission(TorchDistribution):
    """``x | z ~ p(x | theta_z)``: batch shape ``z.shape``, event shape of one observation.

    ``log_prob(x)`` computes the ``(K, *batch)`` table of every component's log-density by
    matrix products, then gathers the entry of ``z``; under parallel enumeration
    (``z`` of shape ``(K, 1)``) that is the table itself.
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, components: Components, assignment: Tensor, validate_args: bool | None = None,
                 *, _enumerated: bool | None = None) -> None:
        self.components = components
        self.assignment = assignment
        k = components.n_components
        # Parallel enumeration hands over z = arange(K) on the leftmost dim: then log_prob is the table.
        self._enumerated = (
            assignment.numel() == k and assignment.shape[:1] == (k,)
            and bool((assignment.reshape(-1) == torch.arange(k, device=assignment.device)).all())
        ) if _enumerated is None else _enumerated
        super().__init__(assignment.shape, components.event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.components.support

    def expand(self, batch_shape: Any, _instance: Any = None) -> ComponentEmission:
        batch_shape = torch.Size(batch_shape)
        return ComponentEmission(self.components, self.assignment.expand(batch_shape), validate_args=False,
                                 _enumerated=self._enumerated and len(batch_shape) == self.assignment.dim())

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        event_dims = len(self.event_shape)
        value_batch = value.shape[: value.dim() - event_dims]
        shape = _broadcast_shape(self.batch_shape, value_batch)
        table = self.components.log_prob_table(value)  # (K, *value_batch)
        k = table.shape[0]
        if self._enumerated and len(shape) == self.assignment.dim():
            return table.reshape(k, *(1,) * (len(shape) - len(value_batch) - 1), *value_batch).expand(shape)
        table = table.reshape(k, *(1,) * (len(shape) - len(value_batch)), *value_batch).expand(k, *shape)
        return table.gather(0, self.assignment.expand(shape).unsqueeze(0)).squeeze(0)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        z = self.assignment.expand(torch.Size(sample_shape) + self.batch_shape)
        return self.components.sample(z)


def _broadcast_shape(*shapes: torch.Size) -> torch.Size:
    """NumPy broadcasting of shapes (``torch.broadcast_shapes`` without its first-call import cost)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        for i, size in enumerate(s, start=ndim - len(s)):
            if size != 1:
                if out[i] not in (1, size):
                    raise ValueError(f"shapes {[tuple(s) for s in shapes]} cannot be broadcast together")
                out[i] = size
    return torch.Size(out)


class GaussianComponents(Components):
    """K Gaussians ``N(mu_k, Sigma_k)`` (THEORY T10) in one of scikit-learn's four layouts.

    Args:
        means: ``(K, d)``.
        covariance: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        scale_tril: Cholesky factor L of Sigma: ``(K, d, d)`` (full) or ``(d, d)`` (tied).
        variances: ``(K, d)`` (diag) or ``(K,)`` (spherical).
    """

    support = constraints.real_vector

    def __init__(self, means: Tensor, covariance: str, *, scale_tril: Tensor | None = None,
                 variances: Tensor | None = None) -> None:
        self.means, self.covariance = means, covariance
        self.scale_tril, self.variances = scale_tril, variances
        self.n_components = means.shape[0]
        self.event_shape = torch.Size(means.shape[-1:])

    def log_prob_table(self, value: Tensor) -> Tensor:
        """``log N(x | mu_k, Sigma_k)`` for every k: ``(K, *batch)`` for ``value`` ``(*batch, d)``."""
        batch, d = value.shape[:-1], value.shape[-1]
        x = value.reshape(-1, d)  # (M, d)
        mu = self.means  # (K, d)
        k = mu.shape[0]
        if self.covariance == "full":
            L = self.scale_tril  # (K, d, d)
            eye = torch.eye(d, dtype=L.dtype, device=L.device).expand_as(L)
            # Sigma^-1 = P P^T with P = L^-T; ||P^T (x - mu)||^2 = ||x P - mu P||^2 (scikit-learn's form)
            P = torch.linalg.solve_triangular(L, eye, upper=False).mT
            muP = (mu.unsqueeze(1) @ P).squeeze(1)  # (K, d)
            # one (M, d) product per component, as scikit-learn: no (K, M, d) temporary, so that a
            # chunk of a streamed fit costs about one chunk of memory
            maha = torch.stack([torch.addmm(muP[j], x, P[j], beta=-1.0).square().sum(-1) for j in range(k)])
            half_logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        else:
            # Expanded squares ||x||^2 - 2 x.mu + ||mu||^2 by matmuls; centring on the mean of the
            # means first keeps the cancellation small when the data sit far from the origin.
            c = mu.mean(0)
            xc, mc = x - c, mu - c
            if self.covariance == "tied":
                L = self.scale_tril
                P = torch.linalg.solve_triangular(L, torch.eye(d, dtype=L.dtype, device=L.device), upper=False).mT
                y, m = xc @ P, mc @ P  # (M, d), (K, d)
                maha = y.square().sum(-1) - 2.0 * (m @ y.T) + m.square().sum(-1, keepdim=True)
                half_logdet = L.diagonal().log().sum().expand(k)
            elif x.dtype != torch.float64:
                # below float64 the expanded squares cancel: a component held at reg_covar has
                # precisions ~1e6 and unscaled data |x|^2 ~1e7, so take the differences themselves,
                # one (M, d) product per component
                prec = self.variances.reciprocal().reshape(k, -1)  # (K, d) or (K, 1)
                maha = torch.stack([(xc - mc[j]).square().mul_(prec[j]).sum(-1) for j in range(k)])
                log_var = self.variances.log()
                half_logdet = 0.5 * (d * log_var if self.covariance == "spherical" else log_var.sum(-1))
            elif self.covariance == "diag":
                prec = self.variances.reciprocal()  # (K, d)
                maha = torch.addmm((mc.square() * prec).sum(-1, keepdim=True), prec, xc.square().T)
                maha = maha.addmm_(-2.0 * mc * prec, xc.T)
                half_logdet = 0.5 * self.variances.log().sum(-1)
            else:  # spherical
                prec = self.variances.reciprocal().unsqueeze(-1)  # (K, 1)
                maha = prec * (xc.square().sum(-1) - 2.0 * (mc @ xc.T) + mc.square().sum(-1, keepdim=True))
                half_logdet = 0.5 * d * self.variances.log()
        table = -0.5 * (maha + d * _LOG_2PI) - half_logdet.unsqueeze(-1)  # (K, M)
        return table.reshape(k, *batch)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mu = self.means
        eps = torch.randn(*z.shape, mu.shape[-1], dtype=mu.dtype, device=mu.device, generator=generator)
        if self.covariance == "full":
            return mu[z] + (self.scale_tril[z] @ eps.unsqueeze(-1)).squeeze(-1)
        if self.covariance == "tied":
            return mu[z] + eps @ self.scale_tril.T
        scale = self.variances.sqrt()[z]
        return mu[z] + (scale if self.covariance == "diag" else scale.unsqueeze(-1)) * eps
