"""THEORY T24 to float64 precision: ``log_prob`` equals scikit-learn's ``score_samples``.

The reference is ``sklearn.neighbors.KernelDensity`` with ``atol = rtol = 0`` (its defaults) and
``leaf_size >= N``. scikit-learn has no brute-force algorithm, and its trees are not exact even
at zero tolerances: they refine running bounds with ``logsubexp``, which cancels where the density
lies far below a node's bounds (with the default ``leaf_size=40``, scikit-learn 1.9 is 340 nats
off at ``log p = -1480`` in five dimensions, and returns about ``e^-34`` where a compact kernel's
density is zero). A tree that is one leaf has no bounds to refine: its ``score_samples`` is a
sequential ``logaddexp`` over every data point, the exact sum to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity as SklearnKDE

from vi_models.kde.kde import KERNELS, KernelDensity

COMPACT = ("tophat", "epanechnikov", "linear", "cosine")
#: scikit-learn's cosine constant in two dimensions is 4; the integral is 2 pi (2/pi - 4/pi^2).
COSINE_2D_OFFSET = math.log(4.0 / (4.0 - 8.0 / math.pi))


@pytest.fixture
def float32_default():
    """Run a test with torch's float32 default dtype (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


def _sklearn_exact(kernel: str, h: float, data: np.ndarray) -> SklearnKDE:
    """scikit-learn's KDE as a single-leaf tree, so ``score_samples`` sums every point exactly."""
    reference = SklearnKDE(kernel=kernel, bandwidth=h, atol=0, rtol=0, leaf_size=len(data)).fit(data)
    assert reference.tree_.get_arrays()[2].shape[0] == 1  # one node: no bounds, no pruning
    return reference


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    z = rng.normal(size=(n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _queries(data: np.ndarray, h: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bulk, far-tail and support-edge queries; and a mask of those outside every kernel.

    Edge points sit at distance ``h (1 -+ delta)`` beyond the data point furthest along a random
    direction ``e``: every other point is at least as far, so ``h (1 + delta)`` is outside every
    kernel's support and ``h (1 - delta)`` inside exactly one edge.
    """
    d = data.shape[1]
    bulk = data.mean(0) + 0.8 * rng.normal(size=(60, d))
    tails = data.mean(0) + rng.uniform(4.0, 12.0, size=(30, 1)) * _unit(rng, 30, d)
    e = _unit(rng, 20, d)
    furthest = data[np.argmax(e @ data.T, axis=1)]
    inside = [furthest + h * (1.0 - delta) * e for delta in (1e-3, 1e-6)]
    outside = [furthest + h * (1.0 + delta) * e for delta in (1e-9, 1e-3)]
    query = np.concatenate([bulk, tails, *inside, *outside])
    beyond = np.zeros(len(query), dtype=bool)
    beyond[-40:] = True
    return query, beyond


def _assert_same(ours: np.ndarray, reference: np.ndarray, atol: float) -> float:
    """Equal ``-inf`` positions, no NaN, finite entries within ``atol``; returns the max gap."""
    assert not np.isnan(ours).any() and not np.isnan(reference).any()
    assert np.array_equal(np.isneginf(ours), np.isneginf(reference))
    finite = np.isfinite(reference)
    gap = float(np.abs(ours[finite] - reference[finite]).max())
    assert gap <= atol, gap
    return gap


@pytest.mark.theory("T24", "T33")
@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("kernel", KERNELS)
def test_log_prob_equals_sklearn_to_float64_precision(float32_default, kernel: str, d: int) -> None:
    """Float64 data, no float64 fixture: the data's dtype, not the default one, sets the precision."""
    rng = np.random.default_rng(100 + d)
    data = 30.0 + rng.normal(size=(200, d))  # off the origin: |x|^2 + |y|^2 - 2 x.y would cancel
    for h in (0.2, 0.7, 2.0):
        query, beyond = _queries(data, h, rng)
        kde = KernelDensity(kernel, h).fit(data)
        assert kde.train_x.dtype == torch.float64
        ours = kde.log_prob(query).numpy()
        reference = _sklearn_exact(kernel, h, data).score_samples(query)
        if kernel == "cosine" and d % 2 == 0:
            reference = reference + COSINE_2D_OFFSET  # scikit-learn's constant: see kernels.py
        _assert_same(ours, reference, atol=1e-9)
        if kernel in COMPACT:
            assert np.isneginf(ours[beyond]).all() and np.isfinite(ours[90:130]).all()  # the edges
        else:
            assert np.isfinite(ours).all()
        if kernel == "gaussian" and h == 0.2:
            assert reference.min() < -500  # the far tails are in the comparison


@pytest.mark.theory("T24")
@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_data_stay_float32_within_the_documented_accuracy(kernel: str) -> None:
    rng = np.random.default_rng(7)
    data = rng.normal(size=(300, 2))
    query = np.concatenate([1.5 * rng.normal(size=(100, 2)), 6.0 * rng.normal(size=(20, 2))])
    h = 0.5
    kde = KernelDensity(kernel, h).fit(torch.tensor(data, dtype=torch.float32))
    assert kde.train_x.dtype == torch.float32
    ours = kde.log_prob(torch.tensor(query, dtype=torch.float32))
    assert ours.dtype == torch.float32
    reference = _sklearn_exact(kernel, h, data).score_samples(query)
    if kernel == "cosine":
        reference = reference + COSINE_2D_OFFSET
    ours64 = ours.double().numpy()
    both = np.isfinite(reference) & np.isfinite(ours64)
    assert both.sum() >= 60
    error = np.abs(ours64[both] - reference[both]) / np.maximum(1.0, np.abs(reference[both]))
    # The class docstring's measured 1e-6 (infinite support) and 7e-6 (compact), with margin.
    assert error.max() <= (2e-5 if kernel in COMPACT else 2e-6)
    assert np.median(error) <= 3e-7


def test_the_dtype_follows_the_data_unless_given(float32_default) -> None:
    x = np.random.default_rng(0).normal(size=(20, 2))
    assert KernelDensity(bandwidth=0.5).fit(x).train_x.dtype == torch.float64
    assert KernelDensity(bandwidth=0.5).fit(x.astype(np.float32)).train_x.dtype == torch.float32
    assert KernelDensity(bandwidth=0.5).fit(torch.tensor(x)).h.dtype == torch.float64
    assert KernelDensity(bandwidth=0.5).fit(x.tolist()).train_x.dtype == torch.float32  # default
    assert KernelDensity(bandwidth=0.5, dtype=torch.float32).fit(x).train_x.dtype == torch.float32
    assert KernelDensity(bandwidth=0.5, dtype=torch.float64).fit(x.astype(np.float32)).train_x.dtype == torch.float64
    fitted = KernelDensity("linear", "cv").fit(x)
    assert fitted.cv_scores_.dtype == torch.float64
    restored = KernelDensity("linear", 0.5)
    restored.load_state_dict(fitted.state_dict())
    assert restored.train_x.dtype == torch.float64 and restored.bandwidth_ == fitted.bandwidth_
    torch.testing.assert_close(restored.log_prob(x), fitted.log_prob(x), rtol=0, atol=0)


@pytest.mark.theory("T24")
@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "epanechnikov"])
def test_k_fold_scores_equal_grid_search_cv_exactly(kernel: str) -> None:
    x = np.random.default_rng(9).normal(size=(200, 2))
    # Wide enough for the compact kernel to reach every held-out point from its training folds.
    grid = np.geomspace(1.5, 4.0, 40) if kernel == "epanechnikov" else np.geomspace(0.05, 2.0, 40)
    ours = KernelDensity(kernel, "cv").fit(x, bandwidths=grid, cv_folds=5)
    single_leaf = SklearnKDE(kernel=kernel, leaf_size=len(x))
    search = GridSearchCV(single_leaf, {"bandwidth": grid}, cv=5).fit(x)
    assert ours.bandwidth_ == search.best_params_["bandwidth"]
    # GridSearchCV averages per-fold total log-likelihoods; folds have 40 points each.
    ours_total = ours.cv_scores_.numpy() * 40
    assert np.isfinite(ours_total).all()
    _assert_same(ours_total, search.cv_results_["mean_test_score"], atol=1e-9)
