"""THEORY T5, T30-T33: divergences, their variational bounds, Wasserstein, MMD, log-sum-exp.

Every reference is computed independently of the module: the T4 Gaussian KL in numpy,
``scipy.integrate.quad`` for the integrals over two 1-D Gaussians, "quantile samples"
``F^-1((i + 1/2) / n)`` (a midpoint rule in probability space) for the expectations inside the
dual bounds, ``scipy.stats.wasserstein_distance``, and naive numpy loops for MMD and W_p.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from inference.divergences.estimators import (
    F_DIVERGENCES,
    donsker_varadhan_bound,
    f_activation,
    f_conjugate,
    f_divergence,
    f_dual_bound,
    f_optimal_critic,
    js_divergence,
    js_dual_bound,
    kl_divergence,
    mmd,
    reverse_kl,
    sliced_wasserstein,
    wasserstein_1d,
)
from inference.engine.likelihood import logmeanexp
from vi_models.errors import ConfigError, DataError

# Generators f(t) of the named f-divergences, written out plainly (numpy, t = p / q).
F_NUMPY = {
    "kl": lambda t: t * np.log(t),
    "reverse_kl": lambda t: -np.log(t),
    "js": lambda t: 0.5 * (t * np.log(t) - (t + 1) * np.log((t + 1) / 2)),
    "pearson": lambda t: (t - 1) ** 2,
    "hellinger": lambda t: (np.sqrt(t) - 1) ** 2,
    "total_variation": lambda t: 0.5 * np.abs(t - 1),
}
# Two 1-D Gaussians; p narrower than q keeps p/q bounded, so every E_q[g(p/q)] has finite variance.
P_LOC, P_SCALE, Q_LOC, Q_SCALE = 0.4, 0.8, -0.1, 1.0
P_REF, Q_REF = stats.norm(P_LOC, P_SCALE), stats.norm(Q_LOC, Q_SCALE)


def _pair() -> tuple[Normal, Normal]:
    t = lambda v: torch.tensor(v, dtype=torch.float64)
    return Normal(t(P_LOC), t(P_SCALE)), Normal(t(Q_LOC), t(Q_SCALE))


def _quad(g, lo: float = -12.0, hi: float = 12.0) -> float:
    return integrate.quad(g, lo, hi, epsabs=1e-12, epsrel=1e-10, limit=200)[0]


def _quantile_samples(ref, n: int = 200_000) -> np.ndarray:
    return ref.ppf((np.arange(n) + 0.5) / n)


def _log_ratio(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(P_REF.logpdf(x) - Q_REF.logpdf(x))


def _kl_numpy(m0, s0, m1, s1) -> float:
    """THEORY T4: KL(N(m0, S0) || N(m1, S1))."""
    d = len(m0)
    s1_inv = np.linalg.inv(s1)
    diff = m1 - m0
    return 0.5 * (
        np.trace(s1_inv @ s0) - d + diff @ s1_inv @ diff + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1]
    )


# ---------------------------------------------------------------------- T5: KL


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


@pytest.mark.theory("T5", "T4")
def test_gaussian_kl_closed_form_both_directions(float64) -> None:
    rng = np.random.default_rng(0)
    m0, m1 = rng.normal(size=3), rng.normal(size=3)
    s0, s1 = _random_spd(rng, 3), _random_spd(rng, 3)
    p = MultivariateNormal(torch.tensor(m0), torch.tensor(s0))
    q = MultivariateNormal(torch.tensor(m1), torch.tensor(s1))
    forward, backward = _kl_numpy(m0, s0, m1, s1), _kl_numpy(m1, s1, m0, s0)
    assert float(kl_divergence(p, q)) == pytest.approx(forward, rel=1e-10)
    assert float(reverse_kl(p, q)) == pytest.approx(backward, rel=1e-10)
    assert float(kl_divergence(q, p)) == pytest.approx(backward, rel=1e-10)
    # The Monte Carlo estimate (same call, method="mc") is unbiased: within 5 standard errors.
    torch.manual_seed(0)
    x = p.sample((100_000,))
    se = float((p.log_prob(x) - q.log_prob(x)).std()) / math.sqrt(100_000)
    torch.manual_seed(1)
    mc = float(kl_divergence(p, q, num_samples=100_000, method="mc"))
    assert abs(mc - forward) < 5 * se


@pytest.mark.theory("T5")
def test_kl_is_non_negative_zero_on_the_diagonal_and_asymmetric(float64) -> None:
    rng = np.random.default_rng(1)
    loc_p, loc_q = torch.tensor(rng.normal(size=(50, 2))), torch.tensor(rng.normal(size=(50, 2)))
    scale_p, scale_q = torch.tensor(rng.uniform(0.2, 3, (50, 2))), torch.tensor(rng.uniform(0.2, 3, (50, 2)))
    p, q = Independent(Normal(loc_p, scale_p), 1), Independent(Normal(loc_q, scale_q), 1)
    forward, backward = kl_divergence(p, q), kl_divergence(q, p)
    assert forward.shape == (50,)
    assert bool((forward >= 0).all()) and bool((backward >= 0).all())
    assert float(kl_divergence(p, p).abs().max()) < 1e-12
    assert float((forward - backward).abs().max()) > 0.5


@pytest.mark.theory("T5")
def test_notes_exercise_kl_values_by_quadrature(float64) -> None:
    """p = N(0.5, 0.1^2), q = N(0.3, 0.3^2): the two directions differ."""
    p_ref, q_ref = stats.norm(0.5, 0.1), stats.norm(0.3, 0.3)
    kl_pq = _quad(lambda x: p_ref.pdf(x) * (p_ref.logpdf(x) - q_ref.logpdf(x)), -3, 4)
    kl_qp = _quad(lambda x: q_ref.pdf(x) * (q_ref.logpdf(x) - p_ref.logpdf(x)), -3, 4)
    p, q = Normal(torch.tensor(0.5), torch.tensor(0.1)), Normal(torch.tensor(0.3), torch.tensor(0.3))
    assert float(kl_divergence(p, q)) == pytest.approx(kl_pq, rel=1e-8)
    assert float(kl_divergence(q, p)) == pytest.approx(kl_qp, rel=1e-8)
    assert float(reverse_kl(p, q)) == pytest.approx(kl_qp, rel=1e-8)
    assert kl_pq == pytest.approx(math.log(3) + 0.05 / 0.18 - 0.5, rel=1e-8)  # T4 in one dimension
    assert kl_qp - kl_pq > 3.0


def _bimodal() -> MixtureSameFamily:
    return MixtureSameFamily(
        Categorical(probs=torch.tensor([0.5, 0.5])),
        Normal(torch.tensor([-3.0, 3.0]), torch.tensor([0.5, 0.5])),
    )


def _fit_gaussian(loss_fn, steps: int = 200) -> tuple[float, float]:
    loc = torch.tensor(1.0, requires_grad=True)
    log_scale = torch.tensor(0.0, requires_grad=True)
    optim = torch.optim.Adam([loc, log_scale], lr=0.05)
    for _ in range(steps):
        optim.zero_grad()
        loss_fn(Normal(loc, log_scale.exp())).backward()
        optim.step()
    return loc.item(), log_scale.exp().item()


@pytest.mark.theory("T5")
def test_forward_kl_covers_both_modes_reverse_kl_locks_onto_one(float64) -> None:
    target = _bimodal()
    torch.manual_seed(0)
    # Forward KL(p || q) = -E_p[log q] + const: maximum likelihood, i.e. moment matching.
    x = target.sample((20_000,))
    mle_loc, mle_scale = float(x.mean()), float(x.std(correction=0))
    assert abs(mle_loc) < 0.15 and mle_scale == pytest.approx(math.sqrt(9 + 0.25), abs=0.1)
    fwd_loc, fwd_scale = _fit_gaussian(lambda q: kl_divergence(target, q, num_samples=500))
    assert abs(fwd_loc - mle_loc) < 0.3 and abs(fwd_scale - mle_scale) < 0.3
    # Reverse KL(q || p), reparameterised draws from q: mode seeking.
    rev_loc, rev_scale = _fit_gaussian(lambda q: reverse_kl(target, q, num_samples=200))
    assert abs(rev_loc - 3.0) < 0.2 and rev_scale == pytest.approx(0.5, abs=0.1)
    # Each fit is the better one under its own objective.
    wide, narrow = Normal(torch.tensor(mle_loc), torch.tensor(mle_scale)), Normal(torch.tensor(rev_loc), torch.tensor(rev_scale))
    assert float(kl_divergence(target, wide, num_samples=20_000)) < float(kl_divergence(target, narrow, num_samples=20_000))
    assert float(reverse_kl(target, narrow, num_samples=20_000)) < float(reverse_kl(target, wide, num_samples=20_000))


# ---------------------------------------------------------------------- T30: f-divergences


@pytest.mark.theory("T30")
@pytest.mark.parametrize("name", F_DIVERGENCES)
def test_named_f_divergences_match_quadrature(float64, name: str) -> None:
    f = F_NUMPY[name]
    g = lambda x: f(np.exp(P_REF.logpdf(x) - Q_REF.logpdf(x)))
    exact = _quad(lambda x: Q_REF.pdf(x) * g(x))
    sd = math.sqrt(_quad(lambda x: Q_REF.pdf(x) * g(x) ** 2) - exact**2)
    p, q = _pair()
    torch.manual_seed(0)
    estimate = float(f_divergence(p, q, name, num_samples=100_000))
    assert abs(estimate - exact) < 5 * sd / math.sqrt(100_000)
    assert exact >= 0


@pytest.mark.theory("T30", "T5")
def test_kl_and_reverse_kl_generators_equal_the_analytic_kl(float64) -> None:
    p, q = _pair()
    for f, analytic in (("kl", kl_divergence(p, q)), ("reverse_kl", kl_divergence(q, p))):
        torch.manual_seed(0)
        assert float(f_divergence(p, q, f, 200_000)) == pytest.approx(float(analytic), abs=3e-3)
    torch.manual_seed(0)
    named = f_divergence(p, q, "kl", 1000)
    torch.manual_seed(0)
    custom = f_divergence(p, q, lambda t: t * torch.log(t), 1000)  # a callable f(t) works the same
    torch.testing.assert_close(custom, named)


@pytest.mark.theory("T30")
def test_js_is_the_mean_kl_to_the_mixture(float64) -> None:
    p, q = _pair()
    m = lambda x: 0.5 * (P_REF.pdf(x) + Q_REF.pdf(x))
    kl_pm = _quad(lambda x: P_REF.pdf(x) * (P_REF.logpdf(x) - np.log(m(x))))
    kl_qm = _quad(lambda x: Q_REF.pdf(x) * (Q_REF.logpdf(x) - np.log(m(x))))
    exact = 0.5 * kl_pm + 0.5 * kl_qm
    torch.manual_seed(0)
    assert float(js_divergence(p, q, 100_000)) == pytest.approx(exact, abs=2e-3)
    torch.manual_seed(1)
    assert float(f_divergence(p, q, "js", 100_000)) == pytest.approx(exact, abs=2e-3)
    assert 0 < exact < math.log(2)
    torch.manual_seed(2)
    assert abs(float(js_divergence(p, p, 10_000))) < 1e-12  # identical: every log-ratio is 0


# ---------------------------------------------------------------------- T31: dual bounds


@pytest.mark.theory("T31")
def test_donsker_varadhan_is_tight_at_the_log_ratio(float64) -> None:
    xp, xq = _quantile_samples(P_REF), _quantile_samples(Q_REF)
    p, q = _pair()
    kl = float(kl_divergence(p, q))
    for c in (0.0, 3.0, -7.5):
        bound = donsker_varadhan_bound(_log_ratio(xp) + c, _log_ratio(xq) + c)
        assert float(bound) == pytest.approx(kl, abs=1e-5)
    critics = [lambda x: 0.5 * _log_ratio(x), lambda x: _log_ratio(x) + torch.tensor(0.3 * x), lambda x: torch.tensor(x)]
    for critic in critics:
        assert float(donsker_varadhan_bound(critic(xp), critic(xq))) < kl - 0.01


@pytest.mark.theory("T31", "T30")
@pytest.mark.parametrize("name", F_DIVERGENCES)
def test_f_gan_dual_bound_is_tight_at_the_optimal_critic(float64, name: str) -> None:
    xp, xq = _quantile_samples(P_REF), _quantile_samples(Q_REF)
    f = F_NUMPY[name]
    exact = _quad(lambda x: Q_REF.pdf(x) * f(np.exp(P_REF.logpdf(x) - Q_REF.logpdf(x))))
    t_p, t_q = f_optimal_critic(name, _log_ratio(xp)), f_optimal_critic(name, _log_ratio(xq))
    # T* is a step function for total variation; for reverse KL, E_p[T*] = -E_p[q/p] weighs the
    # far tails of p, beyond its largest quantile sample.
    tol = {"total_variation": 2e-3, "reverse_kl": 1e-3}.get(name, 1e-4)
    assert float(f_dual_bound(name, t_p, t_q)) == pytest.approx(exact, abs=tol)
    # Any other critic in dom f* gives less.
    assert float(f_dual_bound(name, 0.8 * t_p, 0.8 * t_q)) < exact - 1e-3
    # Raw outputs through the activation: the stable closed forms agree with composing g_f and f*.
    v = torch.linspace(-3, 3, 101, dtype=torch.float64)
    composed = f_activation(name, v).mean() - f_conjugate(name, f_activation(name, v)).mean()
    torch.testing.assert_close(f_dual_bound(name, v, v, activation=True), composed)


@pytest.mark.theory("T31", "T28", "T29")
def test_js_dual_is_tight_at_the_optimal_discriminator(float64) -> None:
    xp, xq = _quantile_samples(P_REF), _quantile_samples(Q_REF)
    d_star = lambda x: torch.tensor(P_REF.pdf(x) / (P_REF.pdf(x) + Q_REF.pdf(x)))
    m = lambda x: 0.5 * (P_REF.pdf(x) + Q_REF.pdf(x))
    js = 0.5 * _quad(lambda x: P_REF.pdf(x) * np.log(P_REF.pdf(x) / m(x))) + 0.5 * _quad(
        lambda x: Q_REF.pdf(x) * np.log(Q_REF.pdf(x) / m(x))
    )
    assert float(js_dual_bound(d_star(xp), d_star(xq))) == pytest.approx(js, abs=1e-5)
    logit = lambda x: _log_ratio(x)
    assert float(js_dual_bound(logit(xp), logit(xq), logits=True)) == pytest.approx(js, abs=1e-5)
    assert float(js_dual_bound(d_star(xp) ** 2, d_star(xq) ** 2)) < js - 0.01
    # p = q: D* = 1/2 and the GAN value E log D + E log(1 - D) is -2 log 2, the bound 0.
    half = torch.full((10,), 0.5, dtype=torch.float64)
    assert float(js_dual_bound(half, half)) == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------------- T32: Wasserstein, MMD


def _naive_wasserstein_p(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """Equal-weight W_p after replicating both samples to size lcm(n, m)."""
    size = math.lcm(len(x), len(y))
    a, b = np.sort(np.repeat(x, size // len(x))), np.sort(np.repeat(y, size // len(y)))
    return float(np.mean(np.abs(a - b) ** p) ** (1 / p))


@pytest.mark.theory("T32")
def test_wasserstein_1d_equals_scipy_and_the_shift(float64) -> None:
    rng = np.random.default_rng(2)
    for n, m in ((37, 50), (100, 100), (1, 7), (12, 18)):
        x, y = rng.normal(size=n), rng.gamma(2.0, size=m)
        ours = float(wasserstein_1d(torch.tensor(x), torch.tensor(y)))
        assert ours == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-12, abs=1e-12)
        assert float(wasserstein_1d(torch.tensor(x), torch.tensor(y), p=2)) == pytest.approx(
            _naive_wasserstein_p(x, y, 2), rel=1e-10
        )
    # Batched: one distribution per column.
    xb, yb = rng.normal(size=(30, 4)), rng.normal(size=(45, 4))
    ours = wasserstein_1d(torch.tensor(xb), torch.tensor(yb)).numpy()
    np.testing.assert_allclose(ours, [stats.wasserstein_distance(xb[:, j], yb[:, j]) for j in range(4)], rtol=1e-12)
    # A shifted copy is exactly |shift| away; two shifted equal-shape laws approximately so.
    x = rng.gumbel(size=500)
    assert float(wasserstein_1d(torch.tensor(x), torch.tensor(x + 1.3))) == pytest.approx(1.3, rel=1e-12)
    a, b = rng.gumbel(0.0, 1.0, 20_000), rng.gumbel(2.0, 1.0, 30_000)
    assert float(wasserstein_1d(torch.tensor(a), torch.tensor(b))) == pytest.approx(2.0, abs=0.05)


@pytest.mark.theory("T32")
def test_sliced_wasserstein_zero_for_identical_sets_positive_otherwise(float64) -> None:
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(200, 3)))
    gen = lambda: torch.Generator().manual_seed(0)
    assert float(sliced_wasserstein(x, x[torch.randperm(200)], 50, generator=gen())) == pytest.approx(0.0, abs=1e-12)
    for p in (1, 2):
        shifted = sliced_wasserstein(x, x + torch.tensor([1.0, 0.0, 0.0]), 200, p=p, generator=gen())
        assert float(shifted) > 0.2
    # In one dimension every projection is +-1: the sliced distance is the exact W_p.
    a, b = torch.tensor(rng.normal(size=(40, 1))), torch.tensor(rng.normal(1.0, 2.0, size=(25, 1)))
    for p in (1, 2):
        torch.testing.assert_close(sliced_wasserstein(a, b, 5, p=p, generator=gen()), wasserstein_1d(a[:, 0], b[:, 0], p=p))
    # Differentiable: a usable training loss.
    y = x.clone().requires_grad_(True)
    sliced_wasserstein(y, x + 0.5, 20, generator=gen()).backward()
    assert y.grad is not None and bool(torch.isfinite(y.grad).all()) and float(y.grad.abs().sum()) > 0


def _naive_mmd(x: np.ndarray, y: np.ndarray, kernel: str, sigma: float, unbiased: bool) -> float:
    def k(a, b):
        r = math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))
        return math.exp(-(r**2) / (2 * sigma**2)) if kernel == "rbf" else math.exp(-r / sigma)

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    dx, dy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return sxx / dx + syy / dy - 2 * sxy / (n * m)


@pytest.mark.theory("T32")
@pytest.mark.parametrize("kernel", ["rbf", "laplacian"])
def test_mmd_equals_a_naive_double_loop(float64, kernel: str) -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(25, 3)), rng.normal(0.5, 1.0, size=(30, 3))
    pooled = np.vstack([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(55) for j in range(i + 1, 55)]
    for bandwidth, sigma in ((0.7, 0.7), ("median", float(np.median(dists)))):
        for unbiased in (True, False):
            ours = float(mmd(torch.tensor(x), torch.tensor(y), kernel, bandwidth, unbiased))
            assert ours == pytest.approx(_naive_mmd(x, y, kernel, sigma, unbiased), rel=1e-10)


@pytest.mark.theory("T32")
def test_mmd_near_zero_for_one_distribution_positive_for_two(float64) -> None:
    rng = np.random.default_rng(5)
    a, b, c = (torch.tensor(rng.normal(size=(400, 2))) for _ in range(3))
    same = float(mmd(a, b))
    different = float(mmd(a, c + torch.tensor([1.0, 0.0])))
    assert abs(same) < 0.01 and different > 0.1
    y = a.clone().requires_grad_(True)
    mmd(y, c + 1.0).backward()
    assert bool(torch.isfinite(y.grad).all())


# ---------------------------------------------------------------------- T33: log-sum-exp


@pytest.mark.theory("T33")
def test_stable_log_sum_exp_where_the_naive_form_overflows(float64) -> None:
    a = np.array([1000.0, 1000.5, 999.0])
    with np.errstate(over="ignore"):
        naive = np.log(np.mean(np.exp(a)))
    assert np.isinf(naive)
    m = a.max()
    expected = m + math.log(np.mean(np.exp(a - m)))  # the shifted form, by hand
    assert float(logmeanexp(torch.tensor(a))) == pytest.approx(expected, rel=1e-14)
    # The DV bound is invariant to shifting the critic, even far past exp's range.
    xp, xq = _quantile_samples(P_REF, 2000), _quantile_samples(Q_REF, 2000)
    t_p, t_q = _log_ratio(xp), _log_ratio(xq)
    with np.errstate(over="ignore"):
        naive_dv = float(np.mean(t_p.numpy() + 800) - np.log(np.mean(np.exp(t_q.numpy() + 800))))
    assert math.isinf(naive_dv)
    torch.testing.assert_close(donsker_varadhan_bound(t_p + 800, t_q + 800), donsker_varadhan_bound(t_p, t_q))
    # JS of two far-apart Gaussians: log m by logaddexp, where p + q would underflow to 0.
    far_p, far_q = Normal(torch.tensor(-60.0), torch.tensor(1.0)), Normal(torch.tensor(60.0), torch.tensor(1.0))
    assert float(js_divergence(far_p, far_q, 1000)) == pytest.approx(math.log(2), abs=1e-12)


# ---------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors(float64) -> None:
    p, q = _pair()
    target = _bimodal()
    with pytest.raises(ConfigError, match="Distribution"):
        kl_divergence(p, 1.0)
    with pytest.raises(ConfigError, match="event shapes"):
        kl_divergence(p, Independent(Normal(torch.zeros(2), 1.0), 1))
    with pytest.raises(ConfigError, match="num_samples=1000"):
        kl_divergence(target, q)
    with pytest.raises(ConfigError, match="closed-form"):
        kl_divergence(target, q, method="analytic")
    with pytest.raises(ConfigError, match="num_samples"):
        js_divergence(p, q, 0)
    with pytest.raises(ConfigError, match="f-divergence name"):
        f_divergence(p, q, "chi", 10)
    with pytest.raises(ConfigError, match="f-divergence name"):
        f_dual_bound("wasserstein", torch.zeros(3), torch.zeros(3))
    with pytest.raises(DataError, match="NaN"):
        donsker_varadhan_bound(torch.tensor([0.0, float("nan")]), torch.zeros(2))
    with pytest.raises(DataError, match="logits=True"):
        js_dual_bound(torch.tensor([0.5, 1.5]), torch.tensor([0.5]))
    with pytest.raises(ConfigError, match=">= 1"):
        wasserstein_1d(torch.zeros(3), torch.ones(3), p=0.5)
    with pytest.raises(DataError, match="batch shape"):
        wasserstein_1d(torch.zeros(3, 2), torch.ones(4, 3))
    with pytest.raises(DataError, match="non-empty"):
        wasserstein_1d([], [1.0])
    with pytest.raises(ConfigError, match="1 or 2"):
        sliced_wasserstein(torch.zeros(3, 2), torch.ones(3, 2), p=3)
    with pytest.raises(DataError, match="same d"):
        sliced_wasserstein(torch.zeros(3, 2), torch.ones(3, 3))
    with pytest.raises(DataError, match="at least 2"):
        mmd(torch.zeros(1, 2), torch.ones(3, 2))
    with pytest.raises(ConfigError, match="bandwidth"):
        mmd(torch.zeros(3, 2), torch.ones(3, 2), bandwidth=-1.0)
    with pytest.raises(ConfigError, match="kernel"):
        mmd(torch.zeros(3, 2), torch.ones(3, 2), kernel="poly")
    assert float(f_conjugate("total_variation", torch.tensor(0.7))) == math.inf  # outside dom f*
    assert float(f_dual_bound("reverse_kl", torch.tensor([-1.0]), torch.tensor([0.5]))) == -math.inf
