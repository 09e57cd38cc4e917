r"""Kernel density estimation with a scalar, isotropic bandwidth (THEORY T24).

Density, for data ``x_1, ..., x_N`` in ``R^d``, bandwidth ``h`` and a radial kernel ``K``:

.. code-block:: text

    p(x) = 1 / (N h^d) * sum_i  K(||x - x_i|| / h) / Z_d,      Z_d = integral_{R^d} K(||u||) du

with the kernels of scikit-learn's ``KernelDensity`` (euclidean metric); their constants
``Z_d`` and radius samplers are in :mod:`vi_models.kde.kernels`.

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

import numpy as np
import torch
from torch import Tensor, nn

from vi_models._validation import (
    as_data_tensor,
    check_choice,
    check_positive_int,
    resolve_device,
)
from vi_models.errors import ConfigError, DataError

from .kernels import KERNELS, Kernel, log_kernel, log_kernel_normalizer, sample_radius

__all__ = ["KERNELS", "KernelDensity", "log_kernel_normalizer"]

BandwidthRule = Literal["scott", "silverman", "cv"]
_RULES: Final = ("scott", "silverman", "cv")
#: Default ``"cv"`` grid: this many bandwidths, log-spaced over [0.05, 5] times Scott's rule.
_GRID_SIZE: Final = 40


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
        Where and in which floating dtype the data are stored and every computation runs
        (default CPU; ``dtype=None`` takes the dtype of the data given to :meth:`fit` when
        it is a float32 or float64 tensor or array, else ``torch.get_default_dtype()``).
        See Notes on precision.
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

    Notes
    -----
    float64 data are computed in float64 end to end: ``log_prob`` equals scikit-learn's exact
    sum (``score_samples`` of a one-leaf tree: its default trees approximate the far tails even
    at ``atol = rtol = 0``) to about ``1e-13``, tails down to ``log p ~ -1500`` and ``-inf``
    entries included (cosine in odd ``d``, see :mod:`~vi_models.kde.kernels`). Distances are
    exact differences, not the ``|x|^2 + |y|^2 - 2 x.y`` expansion; kernels use scikit-learn's
    arithmetic and support test ``r < h``; sums are max-shifted log-sum-exps. float32 data stay
    float32 (half the memory, fast on GPUs), and the rounding of data and distances then
    dominates: measured ``|error| <= 1e-6 max(1, |log p|)`` (median ``6e-8``) for the Gaussian
    and exponential kernels, up to ``7e-6 max(1, |log p|)`` for compact kernels near their edge,
    where ``log K`` is ill-conditioned and points within ``~1e-7 h`` of it may fall either side.

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
        self._dtype = dtype  # None: follow the data's dtype at fit / load_state_dict
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
                old, new = self._buffers[name], state_dict[key]
                dtype = new.dtype if self._dtype is None and new.is_floating_point() else old.dtype
                self._buffers[name] = torch.empty(new.shape, device=old.device, dtype=dtype)
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

    def _data_dtype(self, x: Any) -> torch.dtype:
        """The dtype to fit ``x`` in: the constructor's, else ``x``'s own float32/float64."""
        if self._dtype is not None:
            return self.train_x.dtype  # the constructor's, or a later .to(dtype)
        dtype = getattr(x, "dtype", None)
        if isinstance(dtype, np.dtype):
            dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}.get(dtype)
        return dtype if dtype in (torch.float32, torch.float64) else torch.get_default_dtype()

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
            partial.append(torch.logsumexp(log_kernel(r, self.kernel, h), dim=1))  # (rows,)
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
        like = torch.empty(0, dtype=self._data_dtype(x), device=self.train_x.device)
        x = self._as_points(x, "x", like)
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
            log_k = log_kernel(r.unsqueeze(0), self.kernel, grid[:, None, None])  # (G, rows, cols)
            log_k = log_k.masked_fill(same, -math.inf)
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
        radius = sample_radius(self.kernel, n, d, data, generator)
        return centres + (h * radius)[:, None] * direction
