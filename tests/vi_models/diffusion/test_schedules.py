"""Tests of vi_models.diffusion.schedules: the forward process against closed forms, numerical
Bayes' rule and simulation (THEORY T14, T17, T19), in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Normal, kl_divergence

from vi_models.diffusion.schedules import (
    NoiseSchedule,
    cosine_beta_schedule,
    linear_beta_schedule,
)
from vi_models.errors import ConfigError, DataError

SCHEDULES = [(200, "linear"), (12, "cosine")]


@pytest.mark.theory("T14")
@pytest.mark.parametrize("T,name", SCHEDULES)
def test_marginal_equals_composition_of_one_step_kernels(float64, T, name):
    """Composing t kernels N(sqrt(1 - beta) x, beta) maps N(m, v) to N(sqrt(alpha) m, alpha v + beta):
    from a point x_0 the moments must be sqrt(abar_t) x_0 and 1 - abar_t."""
    s = NoiseSchedule(T, name)
    x0 = torch.tensor([1.5, -0.3])
    mean, var = x0.clone(), torch.zeros(())
    for t in range(1, T + 1):
        beta = float(s.betas[t])
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
        q_mean, q_var = s.q_mean_variance(x0, torch.tensor(t))
        torch.testing.assert_close(q_mean, mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(q_var.squeeze(), var, rtol=1e-12, atol=1e-14)


@pytest.mark.theory("T14")
def test_marginal_by_simulating_the_chain(float64):
    T, n = 12, 200_000
    s = NoiseSchedule(T, "cosine")
    gen = torch.Generator().manual_seed(1)
    x = torch.full((n,), 0.8)
    for t in range(1, T + 1):
        beta = s.betas[t]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n, generator=gen)
        if t in (1, 5, T):
            mean, var = s.q_mean_variance(torch.tensor(0.8), torch.tensor(t), event_dim=0)
            assert abs(float(x.mean() - mean)) < 5 * math.sqrt(float(var) / n)
            # Var of the sample variance of a Gaussian: 2 var^2 / n
            assert abs(float(x.var() - var)) < 5 * float(var) * math.sqrt(2 / n)
    # and the draw q_sample makes in one go has the same law (two-sample KS test)
    one_go = s.q_sample(torch.full((n,), 0.8), torch.full((n,), T), torch.randn(n, generator=gen), event_dim=0)
    assert stats.ks_2samp(x.numpy(), one_go.numpy()).pvalue > 1e-3


@pytest.mark.theory("T17")
@pytest.mark.parametrize("t", [2, 7, 12])
def test_posterior_equals_bayes_rule_on_a_grid(float64, t):
    """q(x_{t-1} | x_t, x_0) proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised numerically."""
    s = NoiseSchedule(12, "cosine")
    x0, xt = 0.7, -0.4
    beta, abar_prev = float(s.betas[t]), float(s.alphas_cumprod[t - 1])

    def unnormalised(x_prev):
        return stats.norm.pdf(xt, math.sqrt(1 - beta) * x_prev, math.sqrt(beta)) * stats.norm.pdf(
            x_prev, math.sqrt(abar_prev) * x0, math.sqrt(1 - abar_prev)
        )

    z = integrate.quad(unnormalised, -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0]
    m1 = integrate.quad(lambda u: u * unnormalised(u), -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0] / z
    m2 = integrate.quad(lambda u: (u - m1) ** 2 * unnormalised(u), -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0] / z
    mean, var = s.q_posterior(torch.tensor(x0), torch.tensor(xt), torch.tensor(t), event_dim=0)
    assert float(mean) == pytest.approx(m1, rel=1e-8, abs=1e-10)
    assert float(var) == pytest.approx(m2, rel=1e-8)
    grid = np.linspace(m1 - 4 * math.sqrt(m2), m1 + 4 * math.sqrt(m2), 9)
    np.testing.assert_allclose(unnormalised(grid) / z, stats.norm.pdf(grid, float(mean), math.sqrt(float(var))), rtol=1e-7)


@pytest.mark.theory("T17")
def test_posterior_mean_in_terms_of_the_noise(float64):
    """mu~_t = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) when x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    s = NoiseSchedule(100, "linear")
    t = torch.tensor([2, 50, 100])
    x0, eps = torch.randn(3, 4), torch.randn(3, 4)
    xt = s.q_sample(x0, t, eps)
    mean, _ = s.q_posterior(x0, xt, t)
    beta, alpha, abar = s.betas[t, None], s.alphas[t, None], s.alphas_cumprod[t, None]
    torch.testing.assert_close(mean, (xt - beta / (1 - abar).sqrt() * eps) / alpha.sqrt(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.predict_x0_from_eps(xt, t, eps), x0)
    torch.testing.assert_close(s.predict_eps_from_x0(xt, t, x0), eps)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0
    torch.testing.assert_close(s.predict_eps_from_v(xt, t, v), eps)


@pytest.mark.theory("T19", "T4")
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_kl_is_weighted_noise_error_plus_constant(float64, variance):
    """KL(q(x_{t-1} | x_t, x_0) || N(mu_theta, sigma_t^2)) = w_t ||eps - eps_theta||^2 + c_t, with c_t = 0
    for sigma_t^2 = beta~_t; the KL by torch.distributions (THEORY T4)."""
    s = NoiseSchedule(100, "linear", variance)
    d = 3
    for t in (2, 40, 100):
        x0, eps, eps_theta = torch.randn(d), torch.randn(d), torch.randn(d)
        xt = s.q_sample(x0, torch.tensor(t), eps, event_dim=1)
        post_mean, post_var = s.q_posterior(x0, xt, torch.tensor(t))
        mu_theta = (xt - s.betas[t] / s.sqrt_one_minus_alphas_cumprod[t] * eps_theta) / s.alphas[t].sqrt()
        kl = kl_divergence(Normal(post_mean, post_var.sqrt()), Normal(mu_theta, s.reverse_variance[t].sqrt())).sum()
        ratio = s.posterior_variance[t] / s.reverse_variance[t]
        c_t = 0.5 * d * (ratio - 1 - ratio.log())
        w_t = s.betas[t] ** 2 / (2 * s.reverse_variance[t] * s.alphas[t] * (1 - s.alphas_cumprod[t]))
        torch.testing.assert_close(s.loss_weights[t], w_t)
        torch.testing.assert_close(kl, w_t * ((eps - eps_theta) ** 2).sum() + c_t, rtol=1e-9, atol=1e-12)
        if variance == "fixed_small":
            assert float(c_t) == pytest.approx(0.0, abs=1e-12)


def test_schedules_match_their_papers(float64):
    betas = linear_beta_schedule(1000)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    T, s_ = 50, 0.008
    f = np.cos((np.arange(T + 1) / T + s_) / (1 + s_) * np.pi / 2) ** 2
    expected = np.clip(1 - (f[1:] / f[0]) / (f[:-1] / f[0]), None, 0.999)
    np.testing.assert_allclose(cosine_beta_schedule(T).numpy(), expected, rtol=1e-12)
    sched = NoiseSchedule(T, "cosine")
    np.testing.assert_allclose(sched.alphas_cumprod[1:-1].numpy(), (f / f[0])[1:-1], rtol=1e-10)
    assert sched.betas.dtype == torch.float64 and float(sched.alphas_cumprod[0]) == 1.0


def test_tables_are_computed_in_float64_then_cast(float64):
    s32 = NoiseSchedule(1000, "linear", dtype=torch.float32)
    s64 = NoiseSchedule(1000, "linear")
    assert s32.alphas_cumprod.dtype == torch.float32
    # 1 - abar_1 = beta_1 = 1e-4 survives in float32 only because it was formed in float64
    torch.testing.assert_close(s32.sqrt_one_minus_alphas_cumprod, s64.sqrt_one_minus_alphas_cumprod.float())
    assert "alphas_cumprod" not in s32.state_dict()  # derived, not state


def test_continuous_time_interpolates_and_inverts(float64):
    s = NoiseSchedule(30, "cosine")
    ints = torch.arange(31.0)
    torch.testing.assert_close(s.alphas_cumprod_at(ints), s.alphas_cumprod, rtol=1e-12, atol=0)
    t = torch.tensor([0.0, 0.25, 3.5, 17.01, 29.9, 30.0])
    torch.testing.assert_close(s.time_at(s.alphas_cumprod_at(t)), t, rtol=1e-9, atol=1e-9)
    # log abar is linear between the integers
    mid = s.alphas_cumprod_at(torch.tensor(4.5)).log()
    assert float(mid) == pytest.approx(0.5 * float(s.log_alphas_cumprod[4] + s.log_alphas_cumprod[5]))


def test_standardisation_round_trip(float64):
    s = NoiseSchedule(60, data_loc=torch.tensor([1.0, -2.0]), data_scale=torch.tensor([2.0, 0.5]))
    x = torch.randn(4, 2)
    torch.testing.assert_close(s.denormalise(s.normalise(x)), x)
    assert float(s.log_data_scale(torch.Size([2]))) == pytest.approx(math.log(2.0) + math.log(0.5))


def test_invalid_configurations_raise_clear_errors():
    with pytest.raises(ConfigError, match="T >= 51"):
        NoiseSchedule(10, "linear")
    with pytest.raises(ConfigError, match="variance"):
        NoiseSchedule(100, variance="learned")
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        NoiseSchedule(schedule=[0.1, 1.2])
    with pytest.raises(ConfigError, match="data_scale"):
        NoiseSchedule(100, data_scale=0.0)
    s = NoiseSchedule(100)
    with pytest.raises(DataError, match="1-based"):
        s.q_posterior(torch.zeros(2), torch.zeros(2), torch.tensor(0))
    with pytest.raises(DataError, match="integer"):
        s.q_sample(torch.zeros(2), torch.tensor(1.5), torch.zeros(2))
