r"""Kernel density estimation with a scalar, isotropic bandwidth (THEORY T24).

Density, for data ``x_1, ..., x_N`` in ``R^d``, bandwidth ``h`` and a radial kernel ``K``:

.. code-block:: text

    p(x) = 1 / (N h^d) * sum_i  K(||x - x_i|| / h) / Z_d,      Z_d = integral_{R^d} K(||u||) du

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
constants of ``_log_kernel_norm`` in scikit-learn's ``neighbors/_binary_tree.pxi.tp``, so
:meth:`KernelDensity.log_prob` equals ``sklearn.neighbors.KernelDensity.score_samples`` on the
same data and bandwidth, with one exception: scikit-learn's cosine constant drops the last term
of its integration by parts in even dimensions (it gives ``Z_2 = 4`` where the integral is
``2 pi (2/pi - 4/pi^2) = 1.4535``, and NaN for ``d = 4``). Here the radial integral is summed
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

Bandwidth rules (``h`` is one number for every direction):

- ``"scott"``: ``h = n^{-1/(d+4)} sigma``, ``"silverman"``: ``h = (n (d+2) / 4)^{-1/(d+4)} sigma``,
  with ``sigma^2 = tr(Cov(x)) / d`` the average per-coordinate variance (``ddof = 1``). The
  factors are those of :class:`scipy.stats.gaussian_kde` and scikit-learn; scipy scales the
  kernel by the full data covariance and scikit-learn not at all (it assumes standardised data).
  Scaling by the pooled ``sigma`` keeps the rule equivariant to rescaling the data, equals
  scipy's ``gaussian_kde`` exactly in one dimension, and equals scikit-learn's rule for data
  with unit variance. Both rules are derived for a Gaussian kernel and target; they are applied
  unchanged to the other kernels, as scikit-learn does.
- ``"cv"``: maximise the held-out log-likelihood over a grid of bandwidths, leave-one-out or
  k-fold with contiguous folds (the choice of ``GridSearchCV(KernelDensity(), cv=k)``).

References
----------
B. W. Silverman, "Density Estimation for Statistics and Data Analysis", Chapman & Hall, 1986.
D. W. Scott, "Multivariate Density Estimation", Wiley, 1992.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import torch
from torch import Tensor, nn

from inference._checks import (
    as_data_tensor,
    check_choice,
    check_positive_int,
    resolve_device,
)
from inference.errors import ConfigError, DataError

__all__ = ["KERNELS", "KernelDensity", "log_kernel_normalizer"]

Kernel = Literal["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]
KERNELS: Final = ("gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine")
BandwidthRule = Literal["scott", "silverman", "cv"]
_RULES: Final = ("scott", "silverman", "cv")
#: Default ``"cv"`` grid: this many bandwidths, log-spaced over [0.05, 5] times Scott's rule.
_GRID_SIZE: Final = 40


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


def _log_kernel(u: Tensor, kernel: str) -> Tensor:
    """Unnormalised ``log K(u)`` at scaled distances ``u = r / h >= 0`` (any shape).

    Compact kernels are ``-inf`` for ``u >= 1`` (strictly inside, as scikit-learn). The
    ``where`` keeps the out-of-support branch finite so gradients stay NaN-free.
    """
    if kernel == "gaussian":
        return -0.5 * u.square()
    if kernel == "exponential":
        return -u
    inside = u < 1.0
    v = torch.where(inside, u, torch.zeros_like(u))
    if kernel == "tophat":
        out = torch.zeros_like(v)
    elif kernel == "epanechnikov":
        out = torch.log1p(-v.square())
    elif kernel == "linear":
        out = torch.log1p(-v)
    else:  # cosine
        out = torch.log(torch.cos(0.5 * math.pi * v))
    return torch.where(inside, out, torch.full_like(out, -math.inf))


def _exponentials(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Exp(1) variates, ``-log(1 - U)`` with ``U`` in ``[0, 1)`` so the log never sees zero."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log1p(-u)


def _beta_integer_2(a_gamma: Tensor, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``Beta(a, 2) = G_a / (G_a + G_2)`` given ``G_a ~ Gamma(a)``, shape ``(n,)``."""
    g2 = _exponentials((a_gamma.shape[0], 2), like, generator).sum(-1)
    return a_gamma / (a_gamma + g2)


def _sample_radius(kernel: str, n: int, d: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
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


class KernelDensity(nn.Module):
    """Kernel density estimate ``p(x) = 1/(N h^d) sum_i K(||x - x_i|| / h)`` (THEORY T24).

    See the module docstring for the kernels, their normalisation, the sampling scheme and the
    bandwidth rules. The data live in a buffer, so ``.to(device)``, ``state_dict`` and
    ``load_state_dict`` work as for any module; all computations are torch (GPU unchanged),
    in blocks of at most ``block_size`` pairwise distances.

    Parameters
    ----------
    kernel
        One of ``"gaussian"``, ``"tophat"``, ``"epanechnikov"``, ``"exponential"``,
        ``"linear"``, ``"cosine"``.
    bandwidth
        A float ``h > 0``; ``"scott"`` or ``"silverman"`` (rules of thumb scaled by the data's
        pooled standard deviation); or ``"cv"`` (held-out log-likelihood over a grid, see
        :meth:`fit`). One scalar for every direction: standardise the data first if its
        coordinates have very different scales.
    device, dtype
        Where and in which floating dtype the data are stored (default CPU and
        ``torch.get_default_dtype()``).
    block_size
        Largest number of pairwise distances held in memory at once.

    Attributes
    ----------
    bandwidth_ : float
        The fitted bandwidth ``h``.
    cv_bandwidths_ : Tensor | None
        ``bandwidth="cv"`` only: the grid searched, shape ``(G,)``.
    cv_scores_ : Tensor | None
        ``bandwidth="cv"`` only: mean held-out log-likelihood per grid point, shape ``(G,)``.
    is_discrete : bool
        ``False``: ``log_prob`` is a density.

    Raises
    ------
    ConfigError
        Unknown ``kernel`` or rule, a bandwidth that is not a positive finite float, or
        ``block_size < 1``.

    Examples
    --------
    >>> kde = KernelDensity("epanechnikov", bandwidth=0.5).fit(torch.randn(100, 2))
    >>> kde.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    >>> kde.sample(5).shape
    torch.Size([5, 2])
    """

    is_discrete: bool = False

    def __init__(
        self,
        kernel: Kernel = "gaussian",
        bandwidth: float | BandwidthRule = "scott",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        block_size: int = 2**22,
    ) -> None:
        super().__init__()
        self.kernel: str = check_choice(kernel, "kernel", KERNELS)
        if isinstance(bandwidth, str):
            check_choice(bandwidth, "bandwidth", _RULES)
        elif isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or not (
            math.isfinite(bandwidth) and bandwidth > 0
        ):
            raise ConfigError(
                f"expected bandwidth to be a float > 0 or one of {_RULES}, got {bandwidth!r}; "
                "pass e.g. bandwidth=0.5 or bandwidth='scott'"
            )
        self.bandwidth = bandwidth
        self.block_size = check_positive_int(block_size, "block_size")
        factory: dict[str, Any] = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}
        if not factory["dtype"].is_floating_point:
            raise ConfigError(f"expected a floating dtype, got {factory['dtype']}; use torch.float64 or torch.float32")
        # (N, d) training points and the bandwidth h: empty until fit().
        self.register_buffer("train_x", torch.empty(0, 0, **factory))
        self.register_buffer("h", torch.empty(0, **factory))
        self.cv_bandwidths_: Tensor | None = None
        self.cv_scores_: Tensor | None = None

    # ------------------------------------------------------------------ state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The buffers' shapes are only known after fit(): take them from the checkpoint.
        for name in ("train_x", "h"):
            key = prefix + name
            if key in state_dict:
                old = self._buffers[name]
                self._buffers[name] = torch.empty(state_dict[key].shape, device=old.device, dtype=old.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or ``load_state_dict``) has set the data and the bandwidth."""
        return self.train_x.numel() > 0 and self.h.numel() == 1

    def _check_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise ConfigError(f"this KernelDensity is not fitted yet; call .fit(x) before using .{what}")

    @property
    def bandwidth_(self) -> float:
        """The fitted bandwidth ``h`` (a float)."""
        self._check_fitted("bandwidth_")
        return float(self.h)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the fitted data."""
        self._check_fitted("dim")
        return self.train_x.shape[1]

    def extra_repr(self) -> str:
        fitted = f", n={self.train_x.shape[0]}, d={self.train_x.shape[1]}, h={float(self.h):.4g}" if self.is_fitted else ""
        return f"kernel={self.kernel!r}, bandwidth={self.bandwidth!r}{fitted}"

    def _as_points(self, x: Any, name: str, like: Tensor, *, keep_graph: bool = False) -> Tensor:
        """Validated ``(n, d)`` points in ``like``'s dtype/device; ``keep_graph`` keeps autograd."""
        if keep_graph and isinstance(x, Tensor) and x.is_floating_point() and x.dim() == 2 and x.shape[0] > 0:
            t = x.to(device=like.device, dtype=like.dtype)
            if not bool(torch.isfinite(t).all()):
                t = as_data_tensor(x, name=name, dtype=like.dtype, device=like.device)  # raises, naming rows
        else:
            t = as_data_tensor(x, name=name, dtype=like.dtype, device=like.device)
        if t.dim() != 2:
            raise DataError(
                f"expected {name} of shape (n_samples, n_features), got shape {tuple(t.shape)}; "
                "flatten the features (x.reshape(len(x), -1)), or use x[:, None] for 1-D data"
            )
        return t

    # ------------------------------------------------------------------ blocks of distances

    def _blocks(self, x: Tensor, y: Tensor, block_size: int) -> Iterator[tuple[slice, slice, Tensor]]:
        """Yield ``(rows, cols, ||x[rows] - y[cols]||)`` blocks of at most ``block_size`` entries."""
        n_cols = min(y.shape[0], block_size)
        n_rows = max(1, block_size // n_cols)
        for i in range(0, x.shape[0], n_rows):
            rows = slice(i, min(i + n_rows, x.shape[0]))
            for j in range(0, y.shape[0], n_cols):
                cols = slice(j, min(j + n_cols, y.shape[0]))
                # Direct differences, not the |x|^2 + |y|^2 - 2 x.y expansion, which cancels
                # catastrophically for close points far from the origin.
                yield rows, cols, torch.cdist(x[rows], y[cols], compute_mode="donot_use_mm_for_euclid_dist")

    def _log_kernel_sum(self, x: Tensor, h: Tensor) -> Tensor:
        """``log sum_i K(||x - x_i|| / h)`` per row of ``x`` (M, d) -> (M,), by blocks (T33)."""
        rows_out: list[Tensor] = []
        partial: list[Tensor] = []
        for _, cols, r in self._blocks(x, self.train_x, self.block_size):
            partial.append(torch.logsumexp(_log_kernel(r / h, self.kernel), dim=1))  # (rows,)
            if cols.stop == self.train_x.shape[0]:  # last column block of these rows
                rows_out.append(torch.logsumexp(torch.stack(partial, dim=1), dim=1))
                partial = []
        return torch.cat(rows_out)

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        x: Any,
        *,
        bandwidths: Sequence[float] | Tensor | None = None,
        cv_folds: int | Literal["loo"] = "loo",
    ) -> KernelDensity:
        """Store the data and set :attr:`bandwidth_`.

        Parameters
        ----------
        x
            Data, shape ``(N, d)`` (array-like); copied, never modified.
        bandwidths
            ``bandwidth="cv"`` only: the grid to search, shape ``(G,)``, every value > 0.
            Default: 40 values log-spaced over ``[0.05, 5]`` times Scott's bandwidth.
        cv_folds
            ``bandwidth="cv"`` only: ``"loo"`` for leave-one-out, or ``k >= 2`` for k-fold
            cross-validation with contiguous folds (shuffle sorted data first). The objective
            is the mean over points of ``log p_{-fold(i)}(x_i)``, the KDE of the other folds.

        Returns
        -------
        KernelDensity
            ``self``.

        Raises
        ------
        DataError
            ``x`` is not a finite ``(N, d)`` array; a rule needs ``N >= 2`` and data that are
            not all identical; every grid bandwidth gives some held-out point zero density.
        ConfigError
            ``bandwidths``/``cv_folds`` given without ``bandwidth="cv"``, a non-positive grid
            value, or ``cv_folds`` not ``"loo"`` nor an integer in ``[2, N]``.
        """
        x = self._as_points(x, "x", self.train_x)
        if self.bandwidth != "cv" and (bandwidths is not None or cv_folds != "loo"):
            raise ConfigError(
                f"expected bandwidths/cv_folds only with bandwidth='cv', got bandwidth={self.bandwidth!r}; "
                "construct KernelDensity(bandwidth='cv') to search a grid"
            )
        self._buffers["train_x"] = x.clone()  # never alias the caller's tensor
        self.cv_bandwidths_ = self.cv_scores_ = None
        if self.bandwidth == "cv":
            h = self._cross_validate(x, bandwidths, cv_folds)
        elif isinstance(self.bandwidth, str):
            h = self._rule_of_thumb(x, self.bandwidth)
        else:
            h = float(self.bandwidth)
        self._buffers["h"] = torch.tensor(h, dtype=x.dtype, device=x.device)
        return self

    @staticmethod
    def _rule_of_thumb(x: Tensor, rule: str) -> float:
        """Scott or Silverman factor times the pooled standard deviation ``sqrt(tr Cov / d)``."""
        n, d = x.shape
        if n < 2:
            raise DataError(
                f"expected at least 2 points for bandwidth={rule!r}, got {n}; pass a float bandwidth"
            )
        sigma = float(x.var(dim=0, correction=1).mean().sqrt())
        if not sigma > 0:
            raise DataError(
                f"expected data with spread for bandwidth={rule!r}, got {n} identical points; "
                "pass a float bandwidth"
            )
        factor = n ** (-1.0 / (d + 4)) if rule == "scott" else (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        return factor * sigma

    def _cross_validate(self, x: Tensor, bandwidths: Sequence[float] | Tensor | None, cv_folds: int | str) -> float:
        """Grid search of the mean held-out log-likelihood; sets ``cv_bandwidths_``/``cv_scores_``."""
        n, d = x.shape
        if n < 2:
            raise DataError(f"expected at least 2 points for bandwidth='cv', got {n}; pass a float bandwidth")
        if bandwidths is None:
            grid = self._rule_of_thumb(x, "scott") * torch.logspace(math.log10(0.05), math.log10(5.0), _GRID_SIZE, dtype=x.dtype, device=x.device)
        else:
            grid = as_data_tensor(bandwidths, name="bandwidths", dtype=x.dtype, device=x.device).flatten()
            if not bool((grid > 0).all()):
                raise ConfigError(f"expected every bandwidth in the grid > 0, got {grid.tolist()}")
        if cv_folds == "loo":
            fold = torch.arange(n, device=x.device)
        else:
            if isinstance(cv_folds, str):
                raise ConfigError(f"expected cv_folds to be 'loo' or an integer >= 2, got {cv_folds!r}")
            k = check_positive_int(cv_folds, "cv_folds", minimum=2)
            if k > n:
                raise ConfigError(f"expected cv_folds <= number of points ({n}), got {k}; use fewer folds")
            # Contiguous folds, the first n % k one point larger (sklearn's KFold without shuffling).
            sizes = torch.full((k,), n // k, device=x.device)
            sizes[: n % k] += 1
            fold = torch.repeat_interleave(torch.arange(k, device=x.device), sizes)
        # Each held-out point x_i sees the KDE of the N - |fold(i)| points outside its fold.
        fold_size = torch.bincount(fold)[fold]
        log_n_train = torch.log((n - fold_size).to(x.dtype))
        scores = torch.empty(grid.shape[0], n, dtype=x.dtype, device=x.device)
        partial: list[Tensor] = []
        # G bandwidths share each block of distances: keep G * block <= block_size entries.
        for rows, cols, r in self._blocks(x, x, max(1, self.block_size // grid.shape[0])):
            same = fold[rows, None] == fold[None, cols]  # (rows, cols): pairs in one fold
            u = r.unsqueeze(0) / grid[:, None, None]  # (G, rows, cols)
            log_k = _log_kernel(u, self.kernel).masked_fill(same, -math.inf)
            partial.append(torch.logsumexp(log_k, dim=2))  # (G, rows)
            if cols.stop == n:
                scores[:, rows] = torch.logsumexp(torch.stack(partial, dim=2), dim=2)
                partial = []
        log_norm = log_kernel_normalizer(self.kernel, d) - d * torch.log(grid)  # (G,)
        per_point = scores + log_norm[:, None] - log_n_train[None, :]
        cv = per_point.mean(dim=1)  # (G,)
        self.cv_bandwidths_, self.cv_scores_ = grid, cv
        if not bool(torch.isfinite(cv).any()):
            raise DataError(
                f"expected some bandwidth in the grid to give every held-out point a positive density, "
                f"got none for the {self.kernel!r} kernel (largest h = {float(grid.max()):.4g}); "
                "widen the grid or use kernel='gaussian'"
            )
        return float(grid[torch.argmax(torch.nan_to_num(cv, nan=-math.inf))])

    # ------------------------------------------------------------------ density

    def log_prob(self, x: Any) -> Tensor:
        """``log p(x)`` per row.

        Parameters
        ----------
        x
            Points, shape ``(M, d)``; converted to the module's dtype and device.

        Returns
        -------
        Tensor
            Shape ``(M,)``; ``-inf`` outside the support of a compact kernel. Differentiable
            in ``x`` when ``x`` is a tensor that requires grad.

        Raises
        ------
        ConfigError
            Not fitted.
        DataError
            ``x`` is not finite, not 2-D, or has the wrong number of features.
        """
        self._check_fitted("log_prob")
        points = self._as_points(x, "x", self.train_x, keep_graph=True)
        n, d = self.train_x.shape
        if points.shape[1] != d:
            raise DataError(
                f"expected x with {d} features (the fitted data's), got shape {tuple(points.shape)}"
            )
        h = self.h
        log_norm = log_kernel_normalizer(self.kernel, d) - d * torch.log(h) - math.log(n)
        return self._log_kernel_sum(points, h) + log_norm

    def forward(self, x: Any) -> Tensor:
        """Same as :meth:`log_prob`: ``(M, d) -> (M,)``."""
        return self.log_prob(x)

    def score(self, x: Any) -> Tensor:
        """Mean log-likelihood ``(1/M) sum_m log p(x_m)`` of points ``(M, d)``: a 0-dim tensor.

        (scikit-learn's ``score`` returns the sum; divide by ``M`` to compare.)
        """
        return self.log_prob(x).mean()

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points: a uniformly chosen data point plus kernel noise (THEORY T24).

        Parameters
        ----------
        n
            Number of samples, ``>= 1``.
        generator
            Optional :class:`torch.Generator` on the module's device, for reproducible draws.

        Returns
        -------
        Tensor
            Shape ``(n, d)``, on the module's device and dtype.

        Raises
        ------
        ConfigError
            Not fitted, or ``n < 1``.
        """
        self._check_fitted("sample")
        n = check_positive_int(n, "n")
        data, h = self.train_x, self.h
        d = data.shape[1]
        centres = data[torch.randint(data.shape[0], (n,), generator=generator, device=data.device)]
        z = torch.randn((n, d), generator=generator, device=data.device, dtype=data.dtype)
        if self.kernel == "gaussian":
            return centres + h * z
        direction = z / z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(data.dtype).tiny)
        radius = _sample_radius(self.kernel, n, d, data, generator)
        return centres + (h * radius)[:, None] * direction
