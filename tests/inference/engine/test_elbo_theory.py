"""The ELBO identities of THEORY T1-T3, T6-T8 checked against closed forms.

The reference model is the linear-Gaussian (PPCA) model, whose marginal and posterior
are Gaussian, so every quantity has a closed form computed here independently of the
package's Monte Carlo estimators.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.decomposition import PCA
from torch.distributions import kl_divergence

from guides.linear import LinearGaussianEncoder
from inference import fit, log_importance_weights, log_likelihood, logmeanexp, make_elbo
from vi_models.vae.linear_gaussian import LinearGaussian


def _random_pair(x_dim=4, z_dim=2, covariance="full", seed=0):
    torch.manual_seed(seed)
    model = LinearGaussian(x_dim, z_dim, noise="diagonal")
    guide = LinearGaussianEncoder(x_dim, z_dim, covariance=covariance)
    with torch.no_grad():
        model.weight.normal_()
        model.bias.normal_()
        model.log_scale.uniform_(-0.5, 0.3)
        guide.weight.normal_(0.0, 0.3)
        guide.bias.normal_(0.0, 0.3)
        guide.log_diag.uniform_(-1.0, 0.0)
        guide.off_diag.normal_(0.0, 0.2)
    x = model.sample(6)
    return model, guide, x


def _q_mvn(guide, x):
    """The guide's q(z | x) as a MultivariateNormal (diag or full)."""
    return dist.MultivariateNormal(guide.distribution(x).mean, scale_tril=guide.scale_tril())


def _closed_form_elbo(model, guide, x):
    """T2: E_q[log p(x|z)] - KL(q || p(z)), both closed form (Gaussian identities)."""
    q = _q_mvn(guide, x)
    m, S = q.mean, q.covariance_matrix
    W, b, psi = model.weight, model.bias, model.scale**2
    resid = x - m @ W.T - b
    recon = dist.Normal(torch.zeros_like(psi), psi.sqrt()).log_prob(resid).sum(-1) - 0.5 * torch.einsum(
        "ij,bjk,ik->b", W / psi[:, None], S.expand(x.shape[0], -1, -1), W
    )
    prior = dist.MultivariateNormal(torch.zeros_like(m), scale_tril=torch.eye(m.shape[-1], dtype=m.dtype))
    return recon - kl_divergence(dist.MultivariateNormal(m, covariance_matrix=S), prior)


@pytest.mark.theory("T1")
def test_elbo_gap_equals_kl_to_posterior(float64):
    model, guide, x = _random_pair()
    exact_ll = model.log_prob(x)
    gap = kl_divergence(_q_mvn(guide, x), model.posterior(x))
    logw = log_importance_weights(model, guide, x, num_samples=200_000)
    elbo_mc = logw.mean(0)
    stderr = logw.std(0) / math.sqrt(logw.shape[0])
    assert torch.all(gap > 0.01)
    assert torch.all((elbo_mc - (exact_ll - gap)).abs() < 5 * stderr + 1e-6)
    # The engine's loss is -sum_i ELBO_i.
    loss = make_elbo("elbo", num_particles=50_000, vectorize_particles=True).loss(model, guide, x)
    assert loss == pytest.approx(-(exact_ll - gap).sum().item(), abs=6 * float(stderr.norm()) * math.sqrt(4) + 1e-3)


@pytest.mark.theory("T1")
def test_gap_closes_at_exact_posterior(float64):
    model, guide, x = _random_pair()
    guide.set_posterior(model)
    assert torch.allclose(kl_divergence(_q_mvn(guide, x), model.posterior(x)), torch.zeros(6), atol=1e-10)
    logw = log_importance_weights(model, guide, x, num_samples=64)
    # With q = p(z|x) every weight equals p(x): zero variance, ELBO = IWAE = log p(x).
    assert torch.allclose(logw, model.log_prob(x).expand(64, -1), atol=1e-9)


@pytest.mark.theory("T2")
@pytest.mark.parametrize("loss", ["elbo", "meanfield"])
def test_elbo_is_reconstruction_minus_kl(float64, loss):
    model, guide, x = _random_pair(covariance="diag")
    closed = _closed_form_elbo(model, guide, x)
    # Cross-check the closed form against log p(x) - KL(q || posterior) (T1), independently.
    t1 = model.log_prob(x) - kl_divergence(_q_mvn(guide, x), model.posterior(x))
    assert torch.allclose(closed, t1, atol=1e-9)
    estimate = -make_elbo(loss, num_particles=40_000, vectorize_particles=True).loss(model, guide, x)
    assert estimate == pytest.approx(closed.sum().item(), abs=0.05)


@pytest.mark.theory("T3", "T33")
def test_jensen_examples_and_stable_logmeanexp(float64):
    for values, log_mean in (([1.0, 4.0], math.log(2.5)), ([2.0, 8.0], math.log(5.0))):
        logx = torch.tensor(values).log()
        assert logmeanexp(logx).item() == pytest.approx(log_mean, abs=1e-12)
        assert logmeanexp(logx).item() > logx.mean().item()
    assert logmeanexp(torch.tensor([1.0, 4.0]).log()).item() == pytest.approx(0.916, abs=1e-3)
    assert torch.tensor([1.0, 4.0]).log().mean().item() == pytest.approx(0.693, abs=1e-3)
    big = torch.tensor([1000.0, 1000.0 + math.log(3.0)])
    assert torch.isinf(big.exp().mean().log())  # the naive form overflows ...
    assert logmeanexp(big).item() == pytest.approx(1000.0 + math.log(2.0), abs=1e-9)  # ... the stable one does not


@pytest.mark.theory("T6")
def test_reparameterised_gradient_matches_analytic(float64):
    model, guide, x = _random_pair(covariance="diag")
    x = x[:2]
    closed = _closed_form_elbo(model, guide, x).sum()
    analytic = torch.autograd.grad(closed, [guide.weight, guide.bias, guide.log_diag])
    loss = make_elbo("elbo", num_particles=200_000, vectorize_particles=True).differentiable_loss(model, guide, x)
    mc = torch.autograd.grad(-loss, [guide.weight, guide.bias, guide.log_diag])
    for a, m in zip(analytic, mc):
        assert torch.allclose(a, m, rtol=0.05, atol=0.03), (a, m)


@pytest.mark.theory("T7")
def test_iwae_increases_with_k_towards_log_px(float64):
    model, guide, x = _random_pair(covariance="full")
    guide.set_posterior(model)
    with torch.no_grad():  # a near miss: shifted mean, wider and rotated covariance
        guide.bias.add_(0.3)
        guide.log_diag.add_(0.3)
        guide.off_diag.add_(0.3)
    exact = model.log_prob(x)
    means = []
    for k in (1, 4, 16, 64, 512):
        reps = torch.stack([log_likelihood(model, guide, x, num_samples=k) for _ in range(200)])
        means.append(reps.mean(0))
    means = torch.stack(means)
    assert torch.all(means[1:] >= means[:-1] - 0.01)
    assert torch.all(means <= exact + 0.01)
    assert torch.all((means[0] - exact) < -0.01)  # the ELBO (K = 1) leaves a real gap ...
    close = log_likelihood(model, guide, x, num_samples=200_000)
    assert torch.allclose(close, exact, atol=0.01)  # ... that a large K closes


@pytest.mark.theory("T7")
def test_naive_prior_estimator_variance_explodes_with_latent_dim(float64):
    def prior_guide_for(model):
        def prior_guide(x):
            with pyro.plate("data", x.shape[-2]):
                pyro.sample("z", dist.Normal(torch.zeros(model.z_dim), 1.0).to_event(1))

        return prior_guide

    ratios = {}
    for z_dim in (1, 8):
        torch.manual_seed(1)
        model = LinearGaussian(z_dim, z_dim)
        with torch.no_grad():
            model.weight.copy_(2.0 * torch.eye(z_dim))
            model.log_scale.fill_(math.log(0.3))
        x = model.sample(20)
        post = LinearGaussianEncoder(z_dim, z_dim).set_posterior(model)
        w_prior = log_importance_weights(model, prior_guide_for(model), x, num_samples=2000).exp()
        w_post = log_importance_weights(model, post, x, num_samples=2000).exp()
        # relative standard deviation of the estimator of p(x)
        ratios[z_dim] = ((w_prior.std(0) / w_prior.mean(0)).median().item(), (w_post.std(0) / w_post.mean(0)).max().item())
    assert ratios[8][0] > 5 * ratios[1][0]  # the naive estimator degrades with dimension
    assert ratios[1][1] < 1e-6 and ratios[8][1] < 1e-6  # sampling from the posterior has none


def _t8_pair(d, mu, sigma, t, s):
    model = LinearGaussian(d, d)
    guide = LinearGaussianEncoder(d, d, covariance="diag")
    with torch.no_grad():
        model.weight.copy_(sigma * torch.eye(d))
        model.bias.copy_(mu)
        model.log_scale.fill_(math.log(s))
        guide.weight.copy_(torch.eye(d) / sigma)
        guide.bias.copy_(-mu / sigma)
        guide.log_diag.fill_(math.log(t))
    return model, guide


@pytest.mark.theory("T8")
@pytest.mark.parametrize("t,s", [(0.5, 0.7), (0.2, 0.3), (1.0, 1.5)])
def test_linear_gaussian_vae_elbo_closed_form(float64, t, s):
    d, sigma = 3, 1.5
    mu = torch.tensor([0.5, -1.0, 2.0])
    x = mu + sigma * torch.randn(5, d)
    model, guide = _t8_pair(d, mu, sigma, t, s)
    u = (x - mu) / sigma
    closed = (
        -d / 2 * math.log(2 * math.pi * s**2)
        - sigma**2 * d * t**2 / (2 * s**2)
        - 0.5 * (d * t**2 - d + (u**2).sum(-1) - 2 * d * math.log(t))
    )
    logw = log_importance_weights(model, guide, x, num_samples=100_000)
    assert torch.allclose(logw.mean(0), closed, atol=6 * float(logw.std(0).max()) / math.sqrt(100_000) + 1e-6)
    # At s = sigma t the bound is log N(x | mu, sigma^2 I) - d t^2 / 2: it closes only as t -> 0.
    model_st, guide_st = _t8_pair(d, mu, sigma, t, sigma * t)
    data_ll = dist.Normal(mu, sigma).log_prob(x).sum(-1)
    assert torch.allclose(_closed_form_elbo(model_st, guide_st, x), data_ll - d * t**2 / 2, atol=1e-9)


@pytest.mark.theory("T8")
def test_linear_vae_reaches_ppca_maximum_likelihood(float64):
    torch.manual_seed(0)
    d, q, n = 6, 2, 1000
    w_true = torch.randn(d, q) * torch.tensor([1.5, 0.8])
    x = torch.randn(n, q) @ w_true.T + 0.5 * torch.randn(n, d) + torch.linspace(-1, 1, d)
    model = LinearGaussian(d, q, noise="isotropic")
    guide = LinearGaussianEncoder(d, q, covariance="full")
    epochs = 600
    decay = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.05 ** (e / epochs))  # noqa: E731
    result = fit(model, guide, x, loss="meanfield", epochs=epochs, batch_size=n, lr=0.05, scheduler=decay,
                 seed=0, progress=False)
    ppca_ml = PCA(n_components=q).fit(x.numpy()).score(x.numpy())  # scikit-learn's PPCA log-likelihood
    fitted_ll = model.log_prob(x).mean().item()
    assert fitted_ll <= ppca_ml + 1e-9  # PPCA's closed form is the maximum ...
    assert fitted_ll == pytest.approx(ppca_ml, abs=5e-3)  # ... and SVI on the linear VAE reaches it
    assert -result.final_loss == pytest.approx(ppca_ml, abs=0.02)  # with the bound tight at the optimum
