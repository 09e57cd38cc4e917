r"""The radial kernels of kernel density estimation: normalising constants and radius samplers.

For a radial kernel ``K`` in ``R^d`` and ``u = r / h``, ``Z_d = integral_{R^d} K(||u||) du``;
with the kernels of scikit-learn's ``KernelDensity`` (euclidean metric), ``u = r / h``:

.. code-block:: text

    gaussian      K(u) = exp(-u^2 / 2)                Z_d = (2 pi)^{d/2}
    tophat        K(u) = 1{u < 1}                     Z_d = V_d
    epanechnikov  K(u) = (1 - u^2) 1{u < 1}           Z_d = V_d * 2 / (d + 2)
    exponential   K(u) = exp(-u)                      Z_d = S_{d-1} * Gamma(d)
    linear        K(u) = (1 - u) 1{u < 1}             Z_d = V_d / (d + 1)
    cosine        K(u) = cos(pi u / 2) 1{u < 1}       Z_d = S_{d-1} * int_0^1 r^{d-1} cos(pi r / 2) dr

``V_d = pi^{d/2} / Gamma(d/2 + 1)`` is the volume of the unit ball and
``S_{d-1} = 2 pi^{d/2} / Gamma(d/2) = d V_d`` the area of the unit sphere. These are the
constants of ``_log_kernel_norm`` in scikit-learn's ``neighbors/_binary_tree.pxi.tp``, and
:func:`log_kernel` is its ``compute_log_kernel``, so :meth:`KernelDensity.log_prob` equals
``sklearn.neighbors.KernelDensity.score_samples`` on the same data and bandwidth to float64
rounding (against scikit-learn's exact sum, a one-leaf tree), with one exception:
scikit-learn's cosine constant drops the last term of its integration by parts in even
dimensions (it gives ``Z_2 = 4`` where the integral is ``2 pi (2/pi - 4/pi^2) = 1.4535``, and
NaN for ``d = 4``). Here the radial integral is summed
from its power series, so the cosine density integrates to one in every dimension and agrees
with scikit-learn in odd ``d``.

Sampling (T24): pick a data point uniformly, then add ``h * r * w`` where ``w`` is uniform on
the unit sphere (a normalised standard normal) and the unit-bandwidth radius ``r`` has the
radial density ``S_{d-1} r^{d-1} K(r) / Z_d``:

.. code-block:: text

    gaussian      h * N(0, I_d) directly
    tophat        r = U^{1/d}                                       (r^{d-1} on [0, 1])
    epanechnikov  r = sqrt(B),  B ~ Beta(d/2, 2)                     (s = r^2 has s^{d/2-1}(1 - s))
    linear        r ~ Beta(d, 2)                                     (r^{d-1}(1 - r))
    exponential   r ~ Gamma(d, 1)                                    (r^{d-1} e^{-r})
    cosine        r ~ Beta(d, 2), accepted with probability sinc-like
                  cos(pi r / 2) / ((pi / 2)(1 - r)) >= 2 / pi        (rejection sampling)

The Gamma and Beta variates are built from exponentials and normals so that a
:class:`torch.Generator` reproduces them: ``Gamma(k) = sum of k Exp(1)``,
``Gamma(d/2) = ||N(0, I_d)||^2 / 2``, ``Beta(a, b) = G_a / (G_a + G_b)``.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import torch
from torch import Tensor

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError

__all__ = ["KERNELS", "Kernel", "log_kernel_normalizer", "log_kernel", "sample_radius"]

Kernel = Literal["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]
KERNELS: Final = ("gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine")


def _log_unit_ball_volume(d: int) -> float:
    """``log V_d``, ``V_d = pi^{d/2} / Gamma(d/2 + 1)``."""
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def _log_unit_sphere_area(d: int) -> float:
    """``log S_{d-1}``, the area of the unit sphere in ``R^d``: ``2 pi^{d/2} / Gamma(d/2)``."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def _cosine_radial_integral(d: int) -> float:
    """``int_0^1 r^{d-1} cos(pi r / 2) dr`` from the power series of the cosine.

    ``sum_k (-1)^k a^{2k} / ((2k)! (d + 2k))`` with ``a = pi / 2``: the terms fall like
    ``a^{2k} / (2k)!``, and their absolute sum stays within ``cosh(a) / d``, so unlike the
    forward recursion in the integration by parts no error is amplified as ``d`` grows.
    """
    a2 = (0.5 * math.pi) ** 2
    total, term, k = 0.0, 1.0, 0  # term = (-1)^k a^{2k} / (2k)!
    while abs(term) > 1e-20 or k < 2:
        total += term / (d + 2 * k)
        k += 1
        term *= -a2 / ((2 * k - 1) * (2 * k))
    return total


def log_kernel_normalizer(kernel: Kernel, d: int) -> float:
    """``-log Z_d``, the log normalising constant of a unit-bandwidth kernel in ``d`` dimensions.

    Parameters
    ----------
    kernel
        One of :data:`KERNELS`.
    d
        Dimension ``>= 1``.

    Returns
    -------
    float
        ``-log integral_{R^d} K(||u||) du``; with bandwidth ``h`` add ``-d log h``.

    Examples
    --------
    >>> round(math.exp(log_kernel_normalizer("tophat", 1)), 6)  # uniform on [-1, 1]
    0.5
    """
    check_choice(kernel, "kernel", KERNELS)
    d = check_positive_int(d, "d")
    if kernel == "gaussian":
        log_z = 0.5 * d * math.log(2.0 * math.pi)
    elif kernel == "tophat":
        log_z = _log_unit_ball_volume(d)
    elif kernel == "epanechnikov":
        log_z = _log_unit_ball_volume(d) + math.log(2.0 / (d + 2.0))
    elif kernel == "exponential":
        log_z = _log_unit_sphere_area(d) + math.lgamma(d)
    elif kernel == "linear":
        log_z = _log_unit_ball_volume(d) - math.log(d + 1.0)
    else:  # cosine
        log_z = _log_unit_sphere_area(d) + math.log(_cosine_radial_integral(d))
    return -log_z


def log_kernel(r: Tensor, kernel: str, h: Tensor | float = 1.0) -> Tensor:
    """Unnormalised ``log K(r / h)`` at distances ``r >= 0`` and bandwidth ``h`` (broadcast).

    Operation for operation scikit-learn's ``compute_log_kernel``, support test ``r < h`` on the
    distance itself (strictly inside) included, so on equal distances the two agree to the
    last bits, ``-inf`` entries included. (Near a compact kernel's edge ``log K`` has condition
    number about ``r / (h - r)``: the rounding of ``r`` itself sets the accuracy there.) With
    the default ``h = 1`` the first argument is the scaled distance ``u``. The ``where`` keeps
    the out-of-support branch finite so gradients stay NaN-free.
    """
    if kernel == "gaussian":
        return -0.5 * (r * r) / (h * h)
    if kernel == "exponential":
        return -r / h
    inside = r < h
    v = torch.where(inside, r, torch.zeros_like(r))
    if kernel == "tophat":
        out = torch.zeros_like(v)
    elif kernel == "epanechnikov":
        out = torch.log(1.0 - (v * v) / (h * h))
    elif kernel == "linear":
        out = torch.log(1.0 - v / h)
    else:  # cosine
        out = torch.log(torch.cos(0.5 * math.pi * v / h))
    return torch.where(inside, out, torch.full_like(out, -math.inf))


def _exponentials(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Exp(1) variates, ``-log(1 - U)`` with ``U`` in ``[0, 1)`` so the log never sees zero."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log1p(-u)


def _beta_integer_2(a_gamma: Tensor, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``Beta(a, 2) = G_a / (G_a + G_2)`` given ``G_a ~ Gamma(a)``, shape ``(n,)``."""
    g2 = _exponentials((a_gamma.shape[0], 2), like, generator).sum(-1)
    return a_gamma / (a_gamma + g2)


def sample_radius(kernel: str, n: int, d: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Unit-bandwidth radii, shape ``(n,)``, with density ``proportional to r^{d-1} K(r)``."""
    if kernel == "tophat":
        u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
        return u.pow(1.0 / d)
    if kernel == "exponential":
        return _exponentials((n, d), like, generator).sum(-1)  # Gamma(d, 1)
    if kernel == "epanechnikov":
        z = torch.randn((n, d), generator=generator, device=like.device, dtype=like.dtype)
        return _beta_integer_2(0.5 * z.square().sum(-1), like, generator).sqrt()  # sqrt(Beta(d/2, 2))
    if kernel == "linear":
        return _beta_integer_2(_exponentials((n, d), like, generator).sum(-1), like, generator)
    if kernel == "cosine":
        # Proposal r^{d-1}(1 - r) (Beta(d, 2)); cos(pi r/2) = sin(pi s/2) <= (pi/2) s with s = 1 - r,
        # so the acceptance probability sin(pi s/2) / (pi s/2) is at least 2/pi in every dimension.
        accepted: list[Tensor] = []
        remaining = n
        while remaining > 0:
            m = max(16, int(1.6 * remaining) + 8)
            r = _beta_integer_2(_exponentials((m, d), like, generator).sum(-1), like, generator)
            s = (1.0 - r).clamp_min(torch.finfo(like.dtype).tiny)
            ratio = torch.sin(0.5 * math.pi * s) / (0.5 * math.pi * s)
            u = torch.rand(m, generator=generator, device=like.device, dtype=like.dtype)
            keep = r[u < ratio][:remaining]
            accepted.append(keep)
            remaining -= keep.shape[0]
        return torch.cat(accepted)
    raise ConfigError(f"expected a kernel among {KERNELS}, got {kernel!r}")  # pragma: no cover
