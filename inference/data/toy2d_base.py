"""The base class of the 2-D toy densities and the numerical helpers their log densities share.

:class:`ToyDensity` fixes the interface (``sample``, an exact ``log_prob`` evaluated in float64
and in chunks); :class:`GaussianMixtureDensity` is a noise kernel mixed over points or over a
quadrature rule on a curve; the rest are quadrature and tail-accurate normal-CDF helpers. The
densities themselves are in :mod:`inference.data.toy2d`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from vi_models._validation import check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError

__all__ = [
    "CHUNK_ELEMENTS", "F64", "GaussianMixtureDensity", "Quadrature", "ToyDensity", "float_dtype",
    "gauss_legendre", "log_ndtr_diff", "ndtr_diff", "segment_logsumexp",
]

F64 = torch.float64
# Rows x quadrature nodes evaluated at once by log_prob (bounds the memory of a call).
CHUNK_ELEMENTS = 2**21


class ToyDensity(ABC):
    """A normalised density on R^2 with an exact sampler and an exact ``log_prob``.

    Attributes
    ----------
    name : str
        Canonical name, a key of :data:`TOY_DENSITIES`.
    bounds : tuple of float
        ``(xmin, xmax, ymin, ymax)``: a window holding all but a negligible (< 1e-9)
        part of the mass, for plots and grid integration.
    """

    name: ClassVar[str]
    bounds: ClassVar[tuple[float, float, float, float]]

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` points.

        Parameters
        ----------
        n : int
            Number of points, >= 1.
        generator : torch.Generator, optional
            Source of randomness; a seeded generator makes the draw reproducible. The noise
            is drawn on the generator's device (on ``device`` when no generator is given).
        dtype : torch.dtype, optional
            Floating dtype of the result; default ``torch.get_default_dtype()``.
        device : torch.device or str, optional
            Device of the result; default CPU.

        Returns
        -------
        torch.Tensor
            Shape ``(n, 2)``.
        """
        n = check_positive_int(n, "n")
        dtype = float_dtype(dtype)
        target = resolve_device(device)
        noise_device = generator.device if generator is not None else target
        return self._sample(n, generator, noise_device).to(device=target, dtype=dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density, computed in float64 (quadrature: < 1e-8 error where log p > -50).

        Parameters
        ----------
        x : torch.Tensor
            Points, shape ``(..., 2)``.

        Returns
        -------
        torch.Tensor
            Shape ``(...)``, in ``x``'s floating dtype and on its device (``-inf`` outside
            the support of the checkerboard).

        Raises
        ------
        DataError
            ``x`` does not end in a dimension of size 2.
        """
        x = torch.as_tensor(x)
        if x.dim() == 0 or x.shape[-1] != 2:
            raise DataError(
                f"expected points of shape (..., 2), got shape {tuple(x.shape)}; "
                "stack the two coordinates in the last dimension"
            )
        out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        flat = x.to(F64).reshape(-1, 2)
        if flat.shape[0] == 0:
            return flat.new_empty(x.shape[:-1], dtype=out_dtype)
        rows = max(1, CHUNK_ELEMENTS // self._work_per_row())
        out = torch.cat([self._log_prob(chunk) for chunk in flat.split(rows)])
        return out.reshape(x.shape[:-1]).to(out_dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def _work_per_row(self) -> int:
        """Elements one row of ``_log_prob`` touches (sets the chunk size)."""
        return 1

    @abstractmethod
    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """``(n, 2)`` float64 points drawn on ``device``."""

    @abstractmethod
    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of ``x`` (float64, ``(m, 2)``), shape ``(m,)``."""


class Quadrature:
    """Composite Gauss-Legendre quadrature over a curve parameter: ``panels`` panels of ``order`` nodes."""

    def __init__(self, panels: int, order: int) -> None:
        self.panels = check_positive_int(panels, "panels")
        self.order = check_positive_int(order, "order")
        super().__init__()


class GaussianMixtureDensity(ToyDensity):
    """p(x) = sum_j w_j N(x | c_j, sigma^2 I): a finite mixture or a quadrature rule over a curve."""

    sigma: float

    def __init__(self) -> None:
        centers, log_weights = self._components()
        self._centers = torch.as_tensor(centers, dtype=F64)  # (K, 2)
        self._log_weights = torch.as_tensor(log_weights, dtype=F64)  # (K,)

    @abstractmethod
    def _components(self) -> tuple[np.ndarray, np.ndarray]:
        """Centers ``(K, 2)`` and log weights ``(K,)`` (summing to one)."""

    def _work_per_row(self) -> int:
        return len(self._log_weights)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        c = self._centers.to(x.device)
        # |x - c|^2 through one matmul: (m, K) instead of an (m, K, 2) difference.
        sq = (x * x).sum(-1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(-1)
        log_kernel = -0.5 * sq.clamp_min(0.0) / self.sigma**2 - math.log(2 * math.pi * self.sigma**2)
        return torch.logsumexp(log_kernel + self._log_weights.to(x.device), dim=-1)


def float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ConfigError(f"expected a floating dtype such as torch.float64, got {dtype}")
    return dtype


def gauss_legendre(breaks: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre rule on the panels [breaks[k], breaks[k+1]]; nodes and weights ``(P*order,)``."""
    z, w = np.polynomial.legendre.leggauss(order)
    lo, hi = breaks[:-1, None], breaks[1:, None]
    return (0.5 * (hi - lo) * z + 0.5 * (hi + lo)).ravel(), (0.5 * (hi - lo) * w).ravel()


def ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Phi(a) - Phi(b) for a > b, with relative accuracy in the tails (until it underflows)."""
    erfc_a, erfc_b = torch.special.erfc(a.abs() / math.sqrt(2)), torch.special.erfc(b.abs() / math.sqrt(2))
    both_above, both_below = b > 0, a < 0  # tails: Phi(-|z|) = erfc(|z| / sqrt 2) / 2
    straddle = 1.0 - 0.5 * (erfc_a + erfc_b)
    return torch.where(both_above, 0.5 * (erfc_b - erfc_a), torch.where(both_below, 0.5 * (erfc_a - erfc_b), straddle))


def log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(a) - Phi(b)) for a > b, accurate in both tails."""
    upper = b > 0  # both in the upper tail: use Phi(a) - Phi(b) = Phi(-b) - Phi(-a)
    hi, lo = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    d = log_lo - log_hi  # < 0
    return log_hi + torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """logsumexp of ``values`` grouped by ``segment`` ids; ``(num_segments,)``."""
    peak = values.new_full((num_segments,), -math.inf).scatter_reduce(0, segment, values.detach(), "amax")
    total = values.new_zeros(num_segments).index_add(0, segment, (values - peak[segment]).exp())
    return total.log() + peak
