"""Tests of vi_models.diffusion.denoisers.optimal on the notes' two-point dataset {[1, 0], [0, 1]}:
the mixture marginal (T15), the posterior-weighted noise and its limit (T16), that it
minimises L_simple, and that a network trained through inference.fit approaches it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from guides.diffusion import ForwardDiffusion
from inference.engine.diffusion_elbo import fit_diffusion
from vi_models.diffusion.ddpm import DDPM
from vi_models.diffusion.denoisers.optimal import OptimalDenoiser
from vi_models.diffusion.schedules import NoiseSchedule

TWO_POINTS = [[1.0, 0.0], [0.0, 1.0]]


def naive_eps_star(x: np.ndarray, abar: float, data: np.ndarray) -> np.ndarray:
    """E[eps | x_t = x] by Bayes' rule written out with scipy densities, one point at a time."""
    dens = np.array([stats.multivariate_normal.pdf(x, math.sqrt(abar) * x0, (1 - abar) * np.eye(2)) for x0 in data])
    w = dens / dens.sum()
    return sum(wi * (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar) for wi, x0 in zip(w, data))


@pytest.mark.theory("T16")
def test_values_on_the_two_point_dataset(float64):
    sched = NoiseSchedule(20, "cosine")
    den = OptimalDenoiser(torch.tensor(TWO_POINTS), sched)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=gen) * 1.5
    for t in (1, 5, 12, 20):
        got = den(x, torch.full((6,), t))
        abar = float(sched.alphas_cumprod[t])
        want = np.stack([naive_eps_star(xi, abar, np.array(TWO_POINTS)) for xi in x.numpy()])
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-10)
    # On the symmetry line x_1 = x_2 the two points are equally likely: x-hat = (1/2, 1/2).
    on_line = torch.tensor([[0.3, 0.3], [-2.0, -2.0]])
    torch.testing.assert_close(den.denoise(on_line, torch.tensor([7, 7])), torch.full((2, 2), 0.5))


@pytest.mark.theory("T16")
def test_eps_star_tends_to_x_as_abar_vanishes(float64):
    x = torch.tensor([[0.4, -1.3], [2.0, 0.5]])
    gaps = []
    for T in (10, 100, 1000):
        sched = NoiseSchedule(T, "cosine")  # abar_T ~ 1e-9 ... 1e-5 after clipping beta_T to 0.999
        den = OptimalDenoiser(torch.tensor(TWO_POINTS), sched)
        eps = den(x, torch.full((2,), T))
        abar = float(sched.alphas_cumprod[T])
        # eps* - x = O(sqrt(abar)): (x (1 - sqrt(1 - abar)) - sqrt(abar) x-hat) / sqrt(1 - abar)
        assert float((eps - x).abs().max()) <= 2 * math.sqrt(abar) + 1e-12
        gaps.append(float((eps - x).abs().max()))
    assert gaps[0] > gaps[1] > gaps[2]
    weights = den.log_weights(x, torch.full((2,), 1000)).exp()
    torch.testing.assert_close(weights, torch.full((2, 2), 0.5), atol=1e-3, rtol=0)  # flat posterior


@pytest.mark.theory("T15", "T16")
def test_marginal_is_a_mixture_and_eps_star_is_its_scaled_score(float64):
    """Tweedie: eps*(x, t) = -sqrt(1 - abar_t) grad log q_t(x), with q_t the mixture of T15."""
    sched = NoiseSchedule(20, "cosine")
    data = torch.tensor(TWO_POINTS)
    den = OptimalDenoiser(data, sched)
    x = torch.randn(5, 2, requires_grad=True)
    t = torch.full((5,), 9)
    abar = float(sched.alphas_cumprod[9])
    log_q = den.log_marginal(x, t)
    mixture = 0.5 * sum(
        stats.multivariate_normal.pdf(x.detach().numpy(), math.sqrt(abar) * x0, (1 - abar) * np.eye(2))
        for x0 in np.array(TWO_POINTS)
    )
    np.testing.assert_allclose(log_q.detach().numpy(), np.log(mixture), rtol=1e-10)
    (score,) = torch.autograd.grad(log_q.sum(), x)
    torch.testing.assert_close(den(x.detach(), t), -math.sqrt(1 - abar) * score)


@pytest.mark.theory("T16")
def test_it_minimises_l_simple(float64):
    """With common random numbers, L_simple(eps* + c g) - L_simple(eps*) = c^2 E||g||^2 - 2c E[(eps - eps*).g];
    the cross term vanishes (orthogonality of the conditional mean), so eps* wins for every c."""
    sched = NoiseSchedule(20, "cosine")
    data = torch.tensor(TWO_POINTS)
    den = OptimalDenoiser(data, sched)
    n = 40_000
    gen = torch.Generator().manual_seed(3)
    x0 = data[torch.randint(0, 2, (n,), generator=gen)]
    t = torch.randint(1, 21, (n,), generator=gen)
    eps = torch.randn(n, 2, generator=gen)
    xt = sched.q_sample(x0, t, eps)
    resid = eps - den(xt, t)
    for g in (torch.sin(3 * xt), xt * t[:, None] / 20, torch.tensor([1.0, 2.0]).expand_as(xt)):
        cross = (resid * g).sum(-1)
        assert abs(float(cross.mean())) <= 4 * float(cross.std()) / math.sqrt(n)
        for c in (0.05, -0.05):
            assert float(((resid - c * g) ** 2).sum(-1).mean()) > float((resid**2).sum(-1).mean())


@pytest.mark.theory("T16")
def test_trained_network_approaches_the_optimal_denoiser(float64):
    torch.manual_seed(0)
    data = torch.tensor(TWO_POINTS).repeat(64, 1)  # the two points, 64 copies each
    model = DDPM(2, T=10, schedule="cosine", hidden_dim=32, num_blocks=2)
    oracle = DDPM(2, schedule=model.schedule, network=OptimalDenoiser(torch.tensor(TWO_POINTS), model.schedule))
    gen = torch.Generator().manual_seed(1)
    n = 4096
    x0 = torch.tensor(TWO_POINTS)[torch.randint(0, 2, (n,), generator=gen)]
    t = torch.randint(1, 11, (n,), generator=gen)
    eps = torch.randn(n, 2, generator=gen)

    def gap() -> float:
        with torch.no_grad():
            return float((model.simple_loss(x0, t=t, noise=eps) - oracle.simple_loss(x0, t=t, noise=eps)).mean())

    before = gap()
    fit_diffusion(model, ForwardDiffusion(model.schedule), data, objective="simple", epochs=150, batch_size=128,
                  lr=3e-3, seed=0, progress=False, check_convergence=False)
    after = gap()
    assert before > 0.3 and 0 <= after < 0.15 * before, (before, after)
