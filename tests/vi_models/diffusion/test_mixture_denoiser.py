"""Tests of vi_models.diffusion.denoisers.mixture: the closed-form noise predictor of a Gaussian mixture.

Against truth: the noised marginal is a Gaussian mixture (T15; checked by simulating the forward
process), eps* = -sqrt(1 - abar) grad log q_t (T16; autograd of the closed-form marginal and a
Monte Carlo estimate of E[eps | x_t] by self-normalised weights), the point-mass limit is the
OptimalDenoiser, and a DDPM whose network output is zero on top of the base has the mixture's
exact density by the probability-flow ODE (T21).
"""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGMM
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from guides.diffusion import ForwardDiffusion
from inference.em import fit_mixture_denoiser
from inference.engine.diffusion_elbo import fit_diffusion
from vi_models import (
    DDPM,
    GaussianMixture,
    GaussianMixtureDenoiser,
    NoiseSchedule,
    OptimalDenoiser,
)
from vi_models.diffusion.ode import probability_flow_log_prob
from vi_models.errors import ConfigError


def random_mixture(k: int = 3, d: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=gen) + 0.2
    m = 2 * torch.randn(k, d, generator=gen)
    a = 0.5 * torch.randn(k, d, d, generator=gen)
    return w / w.sum(), m, a @ a.mT + 0.05 * torch.eye(d)


def torch_mixture(w, m, c) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(w), MultivariateNormal(m, c))


@pytest.mark.theory("T15")
def test_noised_marginal_is_the_noised_mixture(float64):
    """Simulated x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps has the closed-form mixture density:
    mean log q_t over the draws equals minus the entropy estimated by the same draws' true density."""
    w, m, c = random_mixture()
    sched = NoiseSchedule(100, "cosine", data_loc=torch.tensor([0.5, -0.3]), data_scale=torch.tensor([1.5, 0.7]))
    den = GaussianMixtureDenoiser(w, m, c, sched)
    gen = torch.Generator().manual_seed(1)
    x0 = sched.normalise(torch_mixture(w, m, c).sample((200_000,)))
    for t in (10, 60):
        ab = float(sched.alphas_cumprod[t])
        y = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=gen)
        # the standardised mixture noised in closed form, built independently with torch.distributions
        loc = torch.tensor([0.5, -0.3])
        scale = torch.tensor([1.5, 0.7])
        ms = (m - loc) / scale
        cs = c / (scale[:, None] * scale[None, :])
        truth = torch_mixture(w, math.sqrt(ab) * ms, ab * cs + (1 - ab) * torch.eye(2))
        got = den.log_marginal(y[:500], torch.full((500,), t))
        torch.testing.assert_close(got, truth.log_prob(y[:500]), rtol=1e-10, atol=1e-10)
        # and the simulated draws do follow it: first two moments
        torch.testing.assert_close(y.mean(0), math.sqrt(ab) * (w @ ms), atol=0.01, rtol=0)
        second = (w[:, None, None] * (ab * cs + (1 - ab) * torch.eye(2) + ab * ms[:, :, None] * ms[:, None, :])).sum(0)
        torch.testing.assert_close((y.T @ y) / y.shape[0], second, atol=0.02, rtol=0)


@pytest.mark.theory("T16")
def test_noise_is_minus_scaled_score_and_the_posterior_mean_of_eps(float64):
    w, m, c = random_mixture(seed=2)
    sched = NoiseSchedule(60, "linear")
    den = GaussianMixtureDenoiser(w, m, c, sched)
    gen = torch.Generator().manual_seed(3)
    y = (2 * torch.randn(7, 2, generator=gen)).requires_grad_(True)
    t = torch.tensor([1.0, 5.0, 12.5, 20.0, 33.3, 45.0, 60.0])
    (score,) = torch.autograd.grad(den.log_marginal(y, t).sum(), y)
    abar = sched.alphas_cumprod_at(t).unsqueeze(-1)
    torch.testing.assert_close(den(y.detach(), t), -(1 - abar).sqrt() * score, rtol=1e-10, atol=1e-12)
    # E[eps | x_t = y] by importance sampling of x_0 from the mixture, at one (y, t)
    x0 = sched.normalise(torch_mixture(w, m, c).sample((400_000,)))
    ab = float(sched.alphas_cumprod[20])
    point = torch.tensor([[0.4, -0.2]])
    eps = (point - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    logw = -0.5 * (eps**2).sum(-1)
    mc = (torch.softmax(logw, 0)[:, None] * eps).sum(0)
    torch.testing.assert_close(den(point, torch.tensor([20]))[0], mc, atol=0.02, rtol=0)


def test_point_masses_give_the_optimal_denoiser(float64):
    data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 2.0]])
    sched = NoiseSchedule(30, "cosine")
    den = GaussianMixtureDenoiser(torch.ones(3), data, torch.zeros(3), sched)
    oracle = OptimalDenoiser(data, sched)
    y = torch.randn(9, 2, generator=torch.Generator().manual_seed(0))
    for t in (1, 10, 30):
        tt = torch.full((9,), t)
        torch.testing.assert_close(den(y, tt), oracle(y, tt), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(den.log_marginal(y, tt), oracle.log_marginal(y, tt), rtol=1e-9, atol=1e-11)


def test_covariance_layouts_agree_with_full(float64):
    sched = NoiseSchedule(20, "cosine")
    m = torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.0]])
    diag = torch.tensor([[0.5, 1.0, 2.0], [0.3, 0.2, 0.1]])
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 7)
    full = GaussianMixtureDenoiser(torch.ones(2), m, torch.diag_embed(diag), sched)
    torch.testing.assert_close(GaussianMixtureDenoiser(torch.ones(2), m, diag, sched)(y, t), full(y, t))
    sph = GaussianMixtureDenoiser(torch.ones(2), m, torch.tensor([0.5, 2.0]), sched)
    torch.testing.assert_close(sph(y, t), GaussianMixtureDenoiser(torch.ones(2), m, torch.tensor([[0.5] * 3, [2.0] * 3]), sched)(y, t))
    tied = torch.tensor([[1.0, 0.2, 0.0], [0.2, 1.0, 0.1], [0.0, 0.1, 0.5]])
    torch.testing.assert_close(GaussianMixtureDenoiser(torch.ones(2), m, tied, sched)(y, t),
                               GaussianMixtureDenoiser(torch.ones(2), m, tied.expand(2, 3, 3), sched)(y, t))


@pytest.mark.theory("T21")
def test_ddpm_on_the_base_has_the_mixture_density_by_the_ode(float64):
    """An untrained DDPM (zero output layer) with the exact mixture base: its probability-flow ODE
    log-likelihood is the mixture's log-density, in the data's units, for every prediction."""
    w, m, c = random_mixture(seed=4)
    mix = torch_mixture(w, m, c)
    x = mix.sample((40,))
    # cosine: abar_T ~ 1e-9, so p(x_T) = N(0, I) is the noised mixture at T to ~1e-5 nats (the
    # linear schedule's abar_T ~ 4e-5 leaves a prior mismatch of ~1e-2 nats here, L_T's share)
    sched = NoiseSchedule(1000, "cosine", data_loc=torch.tensor([0.3, -0.1]), data_scale=torch.tensor([2.0, 1.5]))
    base = GaussianMixtureDenoiser(w, m, c, sched)
    for prediction in ("eps", "v"):
        model = DDPM(2, schedule=sched, base=base, prediction=prediction, hidden_dim=8, num_blocks=1)
        log_p = probability_flow_log_prob(model, x, trace="exact", rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(log_p, mix.log_prob(x), atol=3e-4, rtol=0)


def test_fit_selects_k_by_held_out_likelihood_and_matches_sklearn(float64):
    w, m, c = random_mixture(k=3, seed=5)
    x = torch_mixture(w, m, c).sample((3000,))
    sched = NoiseSchedule(100, "cosine", data_loc=x.mean(0), data_scale=x.std(0))
    den = fit_mixture_denoiser(x, sched, (1, 3))
    assert den.selected_components == 3 and den.validation_scores[3] > den.validation_scores[1]
    sk = SkGMM(3, covariance_type="full", random_state=0, tol=1e-10, max_iter=1000).fit(x.numpy())
    ref = GaussianMixtureDenoiser.from_mixture(sk, sched)
    # at t = 0 the marginal is the mixture itself; both reach the same maximum likelihood on the data
    y, t0 = sched.normalise(x), torch.zeros(x.shape[0])
    log_jac = float(sched.log_data_scale(torch.Size([2])))
    assert abs(float(den.log_marginal(y, t0).mean()) - log_jac - sk.score(x.numpy())) < 1e-3
    torch.testing.assert_close(ref.log_marginal(y, t0) - log_jac, torch.from_numpy(sk.score_samples(x.numpy())))
    ours = GaussianMixture(2, 2, covariance="diag")
    assert GaussianMixtureDenoiser.from_mixture(ours, sched).n_components == 2


def test_a_network_on_the_base_trains_through_fit():
    torch.manual_seed(0)
    x = torch.randn(512, 2) * torch.tensor([1.0, 0.3]) + torch.tensor([2.0, 0.0])
    model0 = DDPM(2, T=100, data_loc=x.mean(0), data_scale=x.std(0), hidden_dim=16, num_blocks=1)
    base = fit_mixture_denoiser(x, model0.schedule, 1)
    model = DDPM(2, schedule=model0.schedule, base=base, hidden_dim=16, num_blocks=1)
    before = model.simple_loss(x, generator=torch.Generator().manual_seed(0)).mean()
    fit_diffusion(model, ForwardDiffusion(model.schedule), x, objective="simple", epochs=3, batch_size=128, lr=1e-3,
                  seed=0, progress=False, check_convergence=False)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.network.parameters())
    assert float(model.network.out.weight.detach().abs().sum()) > 0  # the residual moved
    # buffers of the base travel in the state dict and stay fixed by training
    state = model.state_dict()
    assert {"base.means", "base.log_weights", "base.eigenvalues", "base.eigenvectors"} <= set(state)
    torch.testing.assert_close(state["base.means"], base.means)
    assert math.isfinite(float(before))


def test_bad_input_is_refused():
    sched = NoiseSchedule(20, "cosine")
    with pytest.raises(ConfigError, match="shape"):
        GaussianMixtureDenoiser(torch.ones(2), torch.zeros(3, 2), torch.ones(2), sched)
    with pytest.raises(ConfigError, match="positive mixture weights"):
        GaussianMixtureDenoiser(torch.tensor([1.0, 0.0]), torch.zeros(2, 2), torch.ones(2), sched)
    with pytest.raises(ConfigError, match="ambiguous"):
        GaussianMixtureDenoiser(torch.ones(2), torch.zeros(2, 2), torch.ones(2, 2), sched)
    with pytest.raises(ConfigError, match="semi-definite"):
        GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 2), -torch.ones(1), sched)
    with pytest.raises(ConfigError, match="NoiseSchedule"):
        GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 2), torch.ones(1), "linear")
    other = NoiseSchedule(20, "cosine")
    base = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 2), torch.ones(1), other)
    with pytest.raises(ConfigError, match="schedule"):
        DDPM(2, T=20, schedule="cosine", base=base)


def test_fit_with_averaged_em_is_the_averaged_mixture(float64):
    from inference import fit_em_average

    w, m, c = random_mixture(k=2, seed=6)
    x = torch_mixture(w, m, c).sample((800,))
    sched = NoiseSchedule(100, "cosine", data_loc=x.mean(0), data_scale=x.std(0))
    den = fit_mixture_denoiser(x, sched, 3, n_average=4, max_iter=50)
    avg = fit_em_average(GaussianMixture(3, 2), x, 4, max_iter=50, reg_covar=1e-6)
    assert den.n_components == 12 and den.selected_components == 3
    log_jac = sched.log_data_scale(torch.Size([2]))
    torch.testing.assert_close(den.log_marginal(sched.normalise(x), torch.zeros(800)) - log_jac, avg.log_prob(x).detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_base_lives_and_fits_on_the_gpu():
    x = torch.randn(400, 2, device="cuda")
    model0 = DDPM(2, T=100, data_loc=x.mean(0), data_scale=x.std(0), device="cuda", hidden_dim=8, num_blocks=1)
    base = fit_mixture_denoiser(x, model0.schedule, (1, 2), n_average=2, max_iter=20)
    assert base.means.device.type == "cuda"
    model = DDPM(2, schedule=model0.schedule, base=base, hidden_dim=8, num_blocks=1)
    eps, _ = model.predict(x[:5], torch.full((5,), 10, device="cuda"))
    assert eps.device.type == "cuda" and bool(torch.isfinite(eps).all())


def test_edge_cases_singular_components_at_t0_float32_rank_one_and_shape_checks():
    sched = NoiseSchedule(20, "cosine")
    points = GaussianMixtureDenoiser(torch.ones(2), torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]), torch.zeros(2), sched)
    eps = points(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    assert torch.equal(eps, torch.zeros(2, 3))  # no noise at t = 0, not NaN
    v = torch.tensor([1.0, 2.0, 3.0])
    rank_one = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 3), (0.3 * torch.outer(v, v))[None], sched)
    assert bool(torch.isfinite(rank_one(torch.randn(4, 3), torch.full((4,), 5))).all())
    with pytest.raises(ConfigError, match="data of shape"):
        DDPM(2, schedule=sched, base=points)
    with pytest.raises(ConfigError, match="n_average"):
        fit_mixture_denoiser(torch.randn(50, 3), sched, 2, n_average=0)
    with pytest.raises(ConfigError, match="n_components"):
        fit_mixture_denoiser(torch.randn(50, 3), sched, (2, 48))
    import numpy as np

    assert fit_mixture_denoiser(torch.randn(50, 3), sched, np.int64(2), max_iter=5).n_components <= 2
