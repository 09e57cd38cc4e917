"""Tests of inference.engine.elbo_terms against closed forms: on probabilistic PCA the reconstruction
term, the KL to the prior (THEORY T4) and their difference, the ELBO (T1, T2), are known exactly;
a model with a global latent checks that its KL is counted once for the data set."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints, kl_divergence

from guides import GaussianEncoder
from guides.linear import LinearGaussianEncoder
from inference import fit, log_likelihood
from inference.engine.elbo_terms import ElboTerms, elbo_from_terms, elbo_terms
from vi_models import VAE
from vi_models.errors import ConfigError
from vi_models.vae.linear_gaussian import LinearGaussian

D, Q, N = 6, 2, 150


@pytest.fixture
def ppca(float64):
    torch.manual_seed(0)
    model = LinearGaussian(D, Q)
    with torch.no_grad():
        model.weight.copy_(torch.randn(D, Q))
        model.bias.copy_(torch.randn(D))
        model.log_scale.fill_(math.log(0.5))
        x = model.sample(N)
    return model, x


def perturbed_guide(model, size, seed=1):
    guide = LinearGaussianEncoder(D, Q).set_posterior(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return guide


def closed_form_terms(model, guide, x):
    """E_q[log p(x|z)] and KL(q(z|x) || N(0, I)) per observation (THEORY T2, T4)."""
    q = guide.distribution(x)
    m, s = q.loc, q.covariance_matrix  # (N, Q), (N, Q, Q)
    w, b, sigma = model.weight, model.bias, model.scale
    var = torch.diagonal(w @ s @ w.T, dim1=-2, dim2=-1)  # Var_q[(W z)_j]: (N, D)
    recon = (-0.5 * torch.log(2 * math.pi * sigma**2) - ((x - m @ w.T - b) ** 2 + var) / (2 * sigma**2)).sum(-1)
    kl = 0.5 * (torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) - Q + (m**2).sum(-1) - torch.logdet(s))  # T4
    return recon.mean().item(), kl.mean().item()


@pytest.mark.theory("T1")
def test_at_the_exact_posterior_the_terms_sum_to_log_evidence(ppca):
    model, x = ppca
    guide = LinearGaussianEncoder(D, Q).set_posterior(model)
    terms = elbo_terms(model, guide, x, kl="mc", num_samples=3, seed=0)
    assert list(terms) == ["kl:z", "reconstruction:x"]
    # every draw has log p(x, z) - log q(z | x) = log p(x): no Monte Carlo error at all
    assert elbo_from_terms(terms) == pytest.approx(model.log_prob(x).mean().item(), abs=1e-9)


@pytest.mark.theory("T2", "T4")
def test_terms_match_their_closed_forms(ppca):
    model, x = ppca
    guide = perturbed_guide(model, 0.2)
    with torch.no_grad():
        recon, kl = closed_form_terms(model, guide, x)
    terms = elbo_terms(model, guide, x, num_samples=400, seed=0)
    assert terms["kl:z"] == pytest.approx(kl, abs=1e-10)  # analytic: the T4 formula itself
    assert terms["reconstruction:x"] == pytest.approx(recon, abs=0.01)  # Monte Carlo, std. error ~ 0.002
    mc = elbo_terms(model, guide, x, kl="mc", num_samples=400, seed=1)
    assert mc["kl:z"] == pytest.approx(kl, abs=0.01)


@pytest.mark.theory("T1", "T2")
def test_sum_is_the_elbo_of_log_likelihood(ppca):
    model, x = ppca
    guide = perturbed_guide(model, 0.1)
    terms = elbo_terms(model, guide, x, num_samples=200, seed=0)
    estimate = log_likelihood(model, guide, x, method="elbo", num_samples=200, seed=0).mean().item()
    with torch.no_grad():
        exact = (model.log_prob(x) - kl_divergence(guide.distribution(x), model.posterior(x))).mean().item()
        recon, kl = closed_form_terms(model, guide, x)
    assert recon - kl == pytest.approx(exact, abs=1e-9)  # T1 and T2 agree in closed form
    # both are Monte Carlo estimates with a standard error of about 0.016 nats here
    assert elbo_from_terms(terms) == pytest.approx(exact, abs=0.08)
    assert estimate == pytest.approx(exact, abs=0.08)


def test_batches_and_seed_do_not_change_the_answer(ppca):
    model, x = ppca
    guide = perturbed_guide(model, 0.2)
    one = elbo_terms(model, guide, x, batch_size=N, seed=3)
    assert elbo_terms(model, guide, x, batch_size=N, seed=3) == one
    state = torch.get_rng_state()
    elbo_terms(model, guide, x, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded call leaves the global stream alone
    chunked = elbo_terms(model, guide, x, batch_size=7, seed=3)
    assert chunked["kl:z"] == pytest.approx(one["kl:z"], abs=1e-12)


class GlobalMean(PyroModule):
    """mu ~ N(0, 1); x_i | mu ~ N(mu, 1) in the plate "data"; guide q(mu) = N(m, s^2)."""

    def __init__(self):
        super().__init__()
        self.m = PyroParam(torch.tensor(0.7))
        self.s = PyroParam(torch.tensor(0.3), constraint=constraints.positive)

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(self.m, self.s))


def test_a_global_latent_is_counted_once(float64):
    pair = GlobalMean()
    x = torch.linspace(-1.0, 2.0, 40)
    m, s = pair.m.item(), pair.s.item()
    kl = math.log(1 / s) + (s**2 + m**2) / 2 - 0.5  # KL(N(m, s^2) || N(0, 1))
    recon = (-0.5 * math.log(2 * math.pi) - ((x - m) ** 2 + s**2) / 2).mean().item()
    terms = elbo_terms(pair.model, pair.guide, x, num_samples=300, seed=0)
    assert terms["kl:mu"] == pytest.approx(kl / 40, abs=1e-12)
    assert terms["reconstruction:x"] == pytest.approx(recon, abs=0.02)  # std. error ~ 0.005
    batched = elbo_terms(pair.model, pair.guide, x, batch_size=7, seed=0)  # 6 batches, one KL
    assert batched["kl:mu"] == pytest.approx(kl / 40, abs=1e-12)


def test_vae_terms_use_the_analytic_kl(float64):
    torch.manual_seed(0)
    vae = VAE(5, 3, hidden_dims=(8,), likelihood="gaussian")
    encoder = GaussianEncoder(5, 3, hidden_dims=(8,))
    x = torch.randn(30, 5)
    terms = elbo_terms(vae, encoder, x, seed=0)
    with torch.no_grad():
        expected = kl_divergence(encoder.distribution(x), dist.Normal(torch.zeros(3), 1.0).to_event(1)).mean()
    assert set(terms) == {"kl:z", "reconstruction:x"}
    assert terms["kl:z"] == pytest.approx(expected.item(), abs=1e-10)
    assert vae.training and encoder.training  # evaluated in eval mode, the modes put back


def test_callback_records_every_epoch_without_changing_training(ppca):
    model, x = ppca

    def train(callbacks):
        torch.manual_seed(0)
        fresh = LinearGaussian(D, Q)
        guide = LinearGaussianEncoder(D, Q)
        cbs = [cb(fresh, guide) for cb in callbacks]
        fit(fresh, guide, x, epochs=4, batch_size=50, lr=0.02, seed=0, progress=False, check_convergence=False,
            callbacks=cbs)
        return fresh, guide, cbs

    plain, _, _ = train([])
    fitted, guide, (recorder,) = train([lambda m, g: ElboTerms(x[:60], model=m, guide=g, every=2)])
    torch.testing.assert_close(fitted.weight, plain.weight, rtol=0, atol=0)  # the training's RNG is untouched
    assert recorder.epochs == [2, 4]
    assert set(recorder.history) == {"kl:z", "reconstruction:x"}
    assert all(len(v) == 2 for v in recorder.history.values())
    last = elbo_terms(fitted, guide, x[:60], seed=0)
    assert {k: v[-1] for k, v in recorder.history.items()} == last


def test_fit_hands_the_pair_to_the_callback(ppca):
    _, x = ppca
    torch.manual_seed(0)
    model, guide = LinearGaussian(D, Q), LinearGaussianEncoder(D, Q)
    recorder = ElboTerms(x[:60])  # no model=: fit attaches it through set_model
    fit(model, guide, x, epochs=2, batch_size=50, lr=0.02, seed=0, progress=False, check_convergence=False,
        callbacks=[recorder])
    assert recorder.model is model and recorder.guide is guide
    assert recorder.epochs == [1, 2]
    assert {k: v[-1] for k, v in recorder.history.items()} == elbo_terms(model, guide, x[:60], seed=0)


def test_callback_without_a_model_says_how_to_fix():
    with pytest.raises(ConfigError, match=r"ElboTerms\(data, model=model, guide=guide\)"):
        ElboTerms(torch.zeros(3, 2)).on_epoch_end(1, {})


def test_guide_missing_a_latent_site(ppca):
    model, x = ppca
    with pytest.raises(ConfigError, match="does not sample the model's latent site 'z'"):
        elbo_terms(model, None, x)


@pytest.mark.parametrize("kwargs, match", [({"num_samples": 0}, "num_samples"), ({"kl": "exact"}, "kl")])
def test_bad_arguments(ppca, kwargs, match):
    model, x = ppca
    with pytest.raises(ConfigError, match=match):
        elbo_terms(model, LinearGaussianEncoder(D, Q), x, **kwargs)
