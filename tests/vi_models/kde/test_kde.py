"""THEORY T24: kernel density estimation, against scikit-learn, scipy and naive numpy.

The references are independent of the module: scikit-learn's ``KernelDensity`` for the
log-densities and k-fold scores (to float64 precision, in ``test_kde_sklearn.py``), a
brute-force numpy sum with normalising constants from ``scipy.integrate.quad`` for the kernels'
normalisation, grid integration for "integrates to one", radial CDFs from
``cumulative_trapezoid`` for the sampling, and a naive leave-one-out objective maximised by
``scipy.optimize`` for the cross-validated bandwidth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats
from sklearn.neighbors import KernelDensity as SklearnKDE

from vi_models.errors import ConfigError, DataError
from vi_models.kde.kde import KERNELS, KernelDensity, log_kernel_normalizer

# Unnormalised radial profiles K(u), written out independently of the module.
PROFILES = {
    "gaussian": lambda u: np.exp(-0.5 * u**2),
    "tophat": lambda u: np.where(u < 1, 1.0, 0.0),
    "epanechnikov": lambda u: np.where(u < 1, 1 - u**2, 0.0),
    "exponential": lambda u: np.exp(-u),
    "linear": lambda u: np.where(u < 1, 1 - u, 0.0),
    "cosine": lambda u: np.where(u < 1, np.cos(0.5 * np.pi * np.minimum(u, 1)), 0.0),
}
COMPACT = {"tophat", "epanechnikov", "linear", "cosine"}


def _radial_integral(kernel: str, d: int) -> float:
    """int_0^inf r^{d-1} K(r) dr by quadrature."""
    upper = 1.0 if kernel in COMPACT else np.inf
    return integrate.quad(lambda r: r ** (d - 1) * PROFILES[kernel](np.asarray(r)), 0.0, upper, epsabs=1e-14, epsrel=1e-13)[0]


def _z(kernel: str, d: int) -> float:
    """Z_d = S_{d-1} int r^{d-1} K(r) dr, with S_{d-1} = 2 pi^{d/2} / Gamma(d/2)."""
    return 2 * np.pi ** (d / 2) / special.gamma(d / 2) * _radial_integral(kernel, d)


def _naive_log_density(data: np.ndarray, query: np.ndarray, kernel: str, h: float) -> np.ndarray:
    n, d = data.shape
    r = np.sqrt(((query[:, None, :] - data[None, :, :]) ** 2).sum(-1))
    with np.errstate(divide="ignore"):
        return np.log(PROFILES[kernel](r / h).sum(1) / (n * h**d * _z(kernel, d)))


def _gaussian_data(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# ---------------------------------------------------------------------- log-densities


@pytest.mark.theory("T24")
@pytest.mark.parametrize("d", [1, 2, 3, 6])
@pytest.mark.parametrize("kernel", KERNELS)
def test_normalising_constant_matches_quadrature(kernel: str, d: int) -> None:
    assert log_kernel_normalizer(kernel, d) == pytest.approx(-math.log(_z(kernel, d)), abs=1e-10)


@pytest.mark.theory("T24")
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kernel", KERNELS)
def test_log_prob_equals_a_naive_sum(float64, kernel: str, d: int) -> None:
    """Against numpy and quadrature constants; scikit-learn, to 1e-9, in test_kde_sklearn.py."""
    data, query = _gaussian_data(150, d, seed=d), 0.6 * _gaussian_data(60, d, seed=10 + d)
    for h in (0.25, 0.8):
        ours = KernelDensity(kernel, h).fit(data).log_prob(query).numpy()
        np.testing.assert_allclose(ours, _naive_log_density(data, query, kernel, h), rtol=0, atol=1e-10)


@pytest.mark.theory("T24")
@pytest.mark.parametrize("kernel", KERNELS)
def test_integrates_to_one_in_one_and_two_dimensions(float64, kernel: str) -> None:
    rng = np.random.default_rng(3)
    kde1 = KernelDensity(kernel, 0.4).fit(rng.normal(size=(7, 1)))
    dx = 2e-4
    grid = torch.arange(-8.0, 8.0, dx, dtype=torch.float64)[:, None] + dx / 2  # midpoints
    assert float(kde1.log_prob(grid).exp().sum() * dx) == pytest.approx(1.0, abs=2e-4)

    kde2 = KernelDensity(kernel, 0.3).fit(rng.normal(size=(5, 2)))
    dx = 0.025
    axis = torch.arange(-8.0, 8.0, dx, dtype=torch.float64) + dx / 2
    cells = torch.cartesian_prod(axis, axis)
    assert float(kde2.log_prob(cells).exp().sum() * dx**2) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.theory("T24")
def test_rules_of_thumb_follow_scipy_and_sklearn(float64) -> None:
    x = np.random.default_rng(4).normal(2.0, 3.0, size=(300, 1))
    query = np.linspace(-8.0, 12.0, 50)[:, None]
    for rule in ("scott", "silverman"):
        kde = KernelDensity("gaussian", rule).fit(x)
        reference = stats.gaussian_kde(x[:, 0], bw_method=rule).logpdf(query[:, 0])
        np.testing.assert_allclose(kde.log_prob(query).numpy(), reference, rtol=0, atol=1e-10)
    # d > 1: one scalar, factor * sqrt(mean per-coordinate variance); sklearn's rule on data whose
    # pooled variance is one.
    y = np.random.default_rng(5).normal(size=(200, 3)) * np.array([1.0, 2.0, 0.5])
    y = y / np.sqrt(y.var(axis=0, ddof=1).mean())
    for rule in ("scott", "silverman"):
        ours = KernelDensity("gaussian", rule).fit(y).bandwidth_
        assert ours == pytest.approx(SklearnKDE(bandwidth=rule).fit(y).bandwidth_, rel=1e-12)
    scott = KernelDensity(bandwidth="scott")
    assert scott.fit(3.0 * y).bandwidth_ == pytest.approx(3.0 * scott.fit(y).bandwidth_, rel=1e-12)


# ---------------------------------------------------------------------- sampling


def _radial_cdf(kernel: str, d: int, r: np.ndarray) -> np.ndarray:
    upper = 1.0 if kernel in COMPACT else 60.0
    grid = np.linspace(0.0, upper, 200_001)
    density = grid ** (d - 1) * PROFILES[kernel](grid)
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    return np.interp(r, grid, cdf / cdf[-1])


@pytest.mark.theory("T24")
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_noise_has_the_radial_law_and_uniform_directions(float64, kernel: str, d: int) -> None:
    h, centre = 0.7, np.array([[1.0, -2.0, 0.5][:d]])
    kde = KernelDensity(kernel, h).fit(centre)
    noise = kde.sample(8000, generator=torch.Generator().manual_seed(d)).numpy() - centre
    r = np.linalg.norm(noise, axis=1) / h
    assert stats.kstest(r, lambda t: _radial_cdf(kernel, d, t)).pvalue > 1e-3
    w = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    if d == 1:
        assert stats.binomtest(int((w[:, 0] > 0).sum()), len(w)).pvalue > 1e-3
    elif d == 2:
        assert stats.kstest(np.arctan2(w[:, 1], w[:, 0]), stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3
    else:  # Archimedes: one coordinate of a uniform direction on S^2 is uniform on [-1, 1]
        assert stats.kstest(w[:, 2], stats.uniform(-1, 2).cdf).pvalue > 1e-3


@pytest.mark.theory("T24")
@pytest.mark.parametrize("kernel", KERNELS)
def test_samples_match_the_density_on_a_grid_of_cells(float64, kernel: str) -> None:
    """Chi-square of 2-D sample counts against the density integrated over each cell."""
    data = np.array([[0.0, 0.0], [1.0, 0.5], [-0.7, 1.2]])
    kde = KernelDensity(kernel, 0.8).fit(data)
    n = 20_000
    x = kde.sample(n, generator=torch.Generator().manual_seed(7)).numpy()
    edges = np.linspace(-2.5, 3.0, 9)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    fine = 40  # midpoints per cell side
    step = (edges[1] - edges[0]) / fine
    mid = np.arange(edges[0] + step / 2, edges[-1], step)
    dens = kde.log_prob(torch.cartesian_prod(torch.tensor(mid), torch.tensor(mid))).exp().numpy()
    prob = dens.reshape(8, fine, 8, fine).sum(axis=(1, 3)) * step**2
    expected = np.append(prob.ravel(), 1 - prob.sum()) * n
    observed = np.append(counts.ravel(), n - counts.sum())
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2(keep.sum() - 1).sf(chi2) > 1e-3


def test_sampling_is_reproducible_and_shaped(float64) -> None:
    kde = KernelDensity("cosine", 0.5).fit(_gaussian_data(20, 3, seed=0))
    a = kde.sample(11, generator=torch.Generator().manual_seed(0))
    b = kde.sample(11, generator=torch.Generator().manual_seed(0))
    assert a.shape == (11, 3) and a.dtype == torch.float64 and torch.equal(a, b)


# ---------------------------------------------------------------------- cross-validation


def _naive_loo(x: np.ndarray, h: float) -> float:
    """Mean leave-one-out log-likelihood of a 1-D Gaussian KDE, by an explicit loop."""
    n, total = len(x), 0.0
    for i in range(n):
        others = np.delete(x, i)
        total += np.log(np.mean(stats.norm.pdf(x[i], loc=others, scale=h)))
    return total / n


@pytest.mark.theory("T24")
def test_leave_one_out_bandwidth_finds_the_optimum(float64) -> None:
    x = np.random.default_rng(8).normal(size=120)
    best = optimize.minimize_scalar(lambda h: -_naive_loo(x, h), bounds=(0.05, 2.0), method="bounded", options={"xatol": 1e-6}).x
    grid = np.geomspace(0.05, 2.0, 300)
    kde = KernelDensity("gaussian", "cv").fit(x[:, None], bandwidths=grid)
    ratio = grid[1] / grid[0]
    assert best / ratio <= kde.bandwidth_ <= best * ratio
    for i in (0, 150, 299):
        assert float(kde.cv_scores_[i]) == pytest.approx(_naive_loo(x, grid[i]), abs=1e-10)
    default = KernelDensity("gaussian", "cv").fit(x[:, None])  # default grid around Scott's rule
    assert default.cv_bandwidths_.shape == (40,)
    assert abs(math.log(default.bandwidth_ / best)) < 0.2


# ---------------------------------------------------------------------- module contract


def test_blocks_state_dict_gradients_and_dtype(float64) -> None:
    data, query = _gaussian_data(50, 2, seed=1), torch.tensor(_gaussian_data(30, 2, seed=2))
    kde = KernelDensity("epanechnikov", 0.9).fit(data)
    small = KernelDensity("epanechnikov", 0.9, block_size=7).fit(data)
    torch.testing.assert_close(small.log_prob(query), kde.log_prob(query), rtol=0, atol=1e-12)

    grid = np.geomspace(0.2, 2.0, 7)
    for folds in ("loo", 3):
        full = KernelDensity("epanechnikov", "cv").fit(data, bandwidths=grid, cv_folds=folds)
        blocked = KernelDensity("epanechnikov", "cv", block_size=60).fit(data, bandwidths=grid, cv_folds=folds)
        torch.testing.assert_close(blocked.cv_scores_, full.cv_scores_, rtol=0, atol=1e-12)

    mutable = torch.tensor(data)
    owned = KernelDensity("epanechnikov", 0.9).fit(mutable)
    mutable.add_(100.0)  # the module keeps its own copy
    torch.testing.assert_close(owned.log_prob(query), kde.log_prob(query))

    restored = KernelDensity("epanechnikov", 0.9)
    restored.load_state_dict(kde.state_dict())
    assert restored.bandwidth_ == kde.bandwidth_
    torch.testing.assert_close(restored.log_prob(query), kde.log_prob(query))
    assert kde.score(query) == pytest.approx(float(kde.log_prob(query).mean()))
    assert kde.is_discrete is False

    gauss = KernelDensity("gaussian", 0.5).fit(data)
    point = torch.tensor([[0.3, -0.2]], requires_grad=True)
    (grad,) = torch.autograd.grad(gauss.log_prob(point).sum(), point)
    eps = 1e-6
    numeric = [
        (gauss.log_prob(point.detach() + eps * e) - gauss.log_prob(point.detach() - eps * e)) / (2 * eps)
        for e in torch.eye(2, dtype=torch.float64)
    ]
    torch.testing.assert_close(grad[0], torch.cat(numeric), rtol=1e-6, atol=1e-8)

    single = KernelDensity("linear", 0.9, dtype=torch.float32).fit(data)
    assert single.log_prob(query).dtype == torch.float32
    reference = KernelDensity("linear", 0.9).fit(data).log_prob(query)
    torch.testing.assert_close(single.log_prob(query).double(), reference, rtol=1e-5, atol=1e-5)
    assert single.to(torch.float64).log_prob(query).dtype == torch.float64


def test_bad_inputs_raise_clear_errors(float64) -> None:
    data = _gaussian_data(10, 2, seed=0)
    with pytest.raises(ConfigError, match="kernel"):
        KernelDensity("box")
    for bad in (0.0, -1.0, float("nan"), True, "auto"):
        with pytest.raises(ConfigError, match="bandwidth"):
            KernelDensity("gaussian", bad)
    with pytest.raises(ConfigError, match="block_size"):
        KernelDensity(block_size=0)
    with pytest.raises(ConfigError, match="not fitted"):
        KernelDensity().log_prob(data)
    with pytest.raises(ConfigError, match="not fitted"):
        KernelDensity().sample(3)
    kde = KernelDensity(bandwidth=0.5).fit(data)
    with pytest.raises(DataError, match="2 features"):
        kde.log_prob(np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"x\[:, None\]"):
        KernelDensity().fit(np.zeros(5))
    with pytest.raises(DataError, match="NaN"):
        KernelDensity().fit(np.array([[0.0], [np.nan]]))
    with pytest.raises(ConfigError, match="bandwidth='cv'"):
        KernelDensity(bandwidth=0.5).fit(data, bandwidths=[0.1, 0.2])
    with pytest.raises(ConfigError, match="cv_folds"):
        KernelDensity(bandwidth="cv").fit(data, cv_folds=1)
    with pytest.raises(ConfigError, match="cv_folds"):
        KernelDensity(bandwidth="cv").fit(data, cv_folds=11)
    with pytest.raises(ConfigError, match="> 0"):
        KernelDensity(bandwidth="cv").fit(data, bandwidths=[0.1, -0.2])
    with pytest.raises(DataError, match="at least 2"):
        KernelDensity(bandwidth="scott").fit(data[:1])
    with pytest.raises(DataError, match="identical"):
        KernelDensity(bandwidth="silverman").fit(np.ones((5, 2)))
    with pytest.raises(DataError, match="widen the grid"):
        KernelDensity("tophat", "cv").fit(np.array([[0.0], [10.0], [20.0]]), bandwidths=[0.1, 1.0])
    with pytest.raises(ConfigError, match="n to be an integer"):
        kde.sample(0)
