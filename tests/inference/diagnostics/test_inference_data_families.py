"""to_inference_data and psis_khat for every model family: DDPM, EM mixtures, exact densities, GANs.

Each family's log_likelihood group is checked against an independent computation (scipy,
scikit-learn, closed forms, the model's own exact log_prob); groups, dims and shapes against
what ArviZ expects: every sampled group with (chain, draw, ...) axes.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.nn import PyroModule
from scipy import stats
from scipy.special import logsumexp
from sklearn.neighbors import KernelDensity as SkKernelDensity
from torch import nn

import inference
from guides import ForwardDiffusion
from inference.diagnostics.arviz_io import to_arviz
from inference.diagnostics.inference_data import inference_data_groups, model_family
from inference.diagnostics.posterior_draws import _vectorised_draws
from vi_models import (
    DDPM,
    GAN,
    MADE,
    MAF,
    GaussianMixture,
    KernelDensity,
    LinearGaussian,
    NoiseSchedule,
    RealNVP,
)
from vi_models.errors import ConfigError

SAMPLED = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats")


def _groups(idata) -> set[str]:
    return set(idata.groups())


def _check_axes(idata, chains: int, draws: int) -> None:
    """Every sampled variable starts with (chain, draw) of the given sizes; observed_data has neither."""
    for group in SAMPLED:
        if group not in idata.groups():
            continue
        for name, var in idata[group].data_vars.items():
            assert var.dims[:2] == ("chain", "draw"), (group, name, var.dims)
            assert var.shape[:2] == (chains, draws), (group, name, var.shape)
    for var in idata.observed_data.data_vars.values():
        assert "chain" not in var.dims and "draw" not in var.dims


# --------------------------------------------------------------------------- DDPM


class GaussianEps(nn.Module):
    """E[eps | x_t] = sqrt(1 - abar_t) x_t, the exact noise predictor for data ~ N(0, I) (THEORY T16)."""

    def __init__(self, schedule: NoiseSchedule, scale: float = 1.0) -> None:
        super().__init__()
        self._schedule = [schedule]  # not a submodule: the model owns it
        self.scale = scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self._schedule[0].alphas_cumprod_at(t).unsqueeze(-1)
        return self.scale * (1 - abar).sqrt() * x


def _gaussian_ddpm(scale: float = 1.0) -> DDPM:
    schedule = NoiseSchedule(10, "cosine")
    return DDPM(2, schedule=schedule, network=GaussianEps(schedule, scale))


@pytest.mark.theory("T18")
def test_ddpm_vlb_groups_and_values(float64):
    model = _gaussian_ddpm()
    guide = ForwardDiffusion(model.schedule)
    x = torch.randn(7, 2)
    idata = inference.to_inference_data(model, guide, x, chains=2, seed=3)
    assert _groups(idata) == {"posterior_predictive", "log_likelihood", "sample_stats", "observed_data"}
    _check_axes(idata, chains=2, draws=1)
    ll = idata.log_likelihood["x_0"]
    assert ll.dims == ("chain", "draw", "data") and ll.shape == (2, 1, 7)
    assert idata.log_likelihood.attrs["estimator"] == "vlb"
    assert idata.posterior_predictive["x_0"].shape == (2, 1, 7, 2)
    np.testing.assert_array_equal(idata.observed_data["x_0"].values, x.numpy())
    terms = idata.sample_stats["vlb_terms"]
    assert terms.dims == ("chain", "draw", "data", "vlb_term") and terms.shape == (2, 1, 7, model.T + 1)
    np.testing.assert_allclose(ll.values, -terms.values.sum(-1), rtol=1e-12)

    # -L_VLB from the model itself under the same seed (chain 0 is drawn first)
    pyro.set_rng_seed(3)
    np.testing.assert_allclose(ll.values[0, 0], -model.vlb(x).numpy(), rtol=1e-10)
    # L_T = KL(N(sqrt(abar_T) x, (1 - abar_T) I) || N(0, I)) in closed form (THEORY T4), no parameters
    abar = float(torch.prod(1 - model.schedule.betas[1:]))
    l_t = 0.5 * (2 * (1 - abar) - 2 + abar * (x**2).sum(-1).numpy() - 2 * math.log(1 - abar))
    np.testing.assert_allclose(terms.values[..., -1], np.broadcast_to(l_t, (2, 1, 7)), rtol=1e-9)
    # in expectation a lower bound on the exact log-density of the data the network is optimal for
    exact = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x.numpy())
    mean = inference.to_inference_data(model, None, x, num_samples=200, posterior_predictive=False, seed=0)
    assert (mean.log_likelihood["x_0"].values < exact - 0.5).all()


def test_ddpm_vlb_averages_num_samples(float64):
    model = _gaussian_ddpm()
    x = torch.randn(4, 2)
    idata = inference.to_inference_data(model, None, x, num_samples=3, chains=2, seed=1, posterior_predictive=False)
    assert idata.log_likelihood.attrs["num_vlb_samples"] == 3
    pyro.set_rng_seed(1)
    draws = torch.stack([-model.vlb(x) for _ in range(6)]).reshape(2, 3, 4)  # chain c: draws 3c .. 3c + 2
    np.testing.assert_allclose(idata.log_likelihood["x_0"].values[:, 0], draws.mean(1).numpy(), rtol=1e-10)


@pytest.mark.theory("T21")
def test_ddpm_ode_estimator_is_exact_for_gaussian_data(float64):
    model = _gaussian_ddpm()
    x = torch.randn(5, 2)
    idata = inference.to_inference_data(model, None, x, estimator="ode", posterior_predictive=False)
    assert idata.log_likelihood.attrs["estimator"] == "ode"
    assert "sample_stats" not in idata.groups()
    exact = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x.numpy())
    np.testing.assert_allclose(idata.log_likelihood["x_0"].values[0, 0], exact, atol=1e-3)


@pytest.mark.theory("T18")
def test_ddpm_khat_of_the_forward_process(float64):
    x = torch.randn(4, 2)
    good = inference.psis_khat(_gaussian_ddpm(), None, x, 300, seed=0)
    assert good.scope == "per-observation" and good.khat.shape == (4,) and good.log_weights.shape == (300, 4)
    assert good.max_khat < 0.7
    # E_q[log w] over the whole chain is -L_VLB (the analytic bound): agree within Monte Carlo error
    pyro.set_rng_seed(1)
    vlb = torch.stack([-_gaussian_ddpm().vlb(x) for _ in range(300)]).numpy()
    se = np.sqrt(good.log_weights.var(0) / 300 + vlb.var(0) / 300)
    assert (np.abs(good.log_weights.mean(0) - vlb.mean(0)) < 5 * se).all()
    bad = inference.psis_khat(_gaussian_ddpm(scale=0.0), None, x, 300, seed=0)  # eps_theta = 0
    assert (bad.khat > 0.7).all()


def test_ddpm_errors(float64):
    model = _gaussian_ddpm()
    x = torch.randn(3, 2)
    with pytest.raises(ConfigError, match="'vlb', 'ode'"):
        inference.to_inference_data(model, None, x, estimator="iwae")
    other = ForwardDiffusion(NoiseSchedule(10, "cosine"))
    with pytest.raises(ConfigError, match="ForwardDiffusion"):
        inference.to_inference_data(model, other, x)
    with pytest.raises(ConfigError, match="one data tensor"):
        inference.to_inference_data(model, None, (x, x))


# --------------------------------------------------------------------------- mixtures by EM and MAP


def _two_clusters(n: int = 40) -> torch.Tensor:
    return torch.cat([torch.randn(n // 2, 2) * 0.5 - 2, torch.randn(n - n // 2, 2) * 0.7 + 2])


def _gmm_logpdf(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    comp = np.stack([stats.multivariate_normal(m, c).logpdf(x) for m, c in zip(means, covs)])  # (K, N)
    return logsumexp(comp + np.log(weights)[:, None], axis=0)


@pytest.mark.theory("T10")
def test_em_result_point_estimates_and_exact_marginal(float64):
    x = _two_clusters()
    fits = [inference.fit_em(GaussianMixture(2, 2, covariance="full"), x, seed=s, progress=False) for s in (0, 1)]
    idata = inference.to_inference_data(fits[0], None, x, seed=0)
    assert _groups(idata) == {"posterior", "posterior_predictive", "log_likelihood", "observed_data"}
    _check_axes(idata, chains=1, draws=1)
    post = idata.posterior
    assert post["means"].dims == ("chain", "draw", "components", "means_dim_1")
    assert post["weights"].dims == ("chain", "draw", "components")
    assert "point" in post.attrs["estimate"]
    params = {k: v.detach().numpy() for k, v in fits[0].model.params().items()}
    for name, value in params.items():
        np.testing.assert_array_equal(post[name].values[0, 0], value)
    covs = params["scale_tril"] @ np.swapaxes(params["scale_tril"], -1, -2)
    expected = _gmm_logpdf(x.numpy(), params["weights"], params["means"], covs)
    ll = idata.log_likelihood["x"].values[0, 0]
    assert idata.log_likelihood.attrs["estimator"] == "exact"
    np.testing.assert_allclose(ll, expected, rtol=1e-9)
    np.testing.assert_allclose(ll, inference.log_likelihood(fits[0].model, None, x, method="exact").numpy(), rtol=1e-12)
    np.testing.assert_allclose(ll, fits[0].score_samples(x).numpy(), rtol=1e-9)
    assert idata.posterior_predictive["x"].shape == (1, 1, 40, 2)

    # independent restarts as chains
    both = inference.to_inference_data(None, None, x, chains=fits, posterior_predictive=False)
    _check_axes(both, chains=2, draws=1)
    assert both.posterior["means"].shape == (2, 1, 2, 2)
    khat = inference.psis_khat(fits[0], None, x, 20)
    assert np.isneginf(khat.khat).all() and khat.khat.shape == (40,)


def test_map_mixture_with_autodelta(float64):
    x = _two_clusters(20)
    model = GaussianMixture(2, 2, covariance="diag", priors=True)
    guide = AutoDelta(poutine.block(model, hide=["assignment"]))
    guide(x)
    idata = inference.to_inference_data(model, guide, x, num_samples=5, seed=0)
    _check_axes(idata, chains=1, draws=5)
    post = idata.posterior
    for name in ("weights", "means", "variances"):
        assert np.ptp(post[name].values, axis=1).max() == 0.0  # a point mass: every draw the same
    np.testing.assert_array_equal(idata.sample_stats["log_q"].values, 0.0)
    w, mu, var = (post[n].values[0, 0] for n in ("weights", "means", "variances"))
    expected = _gmm_logpdf(x.numpy(), w, mu, np.stack([np.diag(v) for v in var]))
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], np.broadcast_to(expected, (5, 20)), rtol=1e-9)
    with pytest.raises(ConfigError, match="priors"):
        inference.to_inference_data(model, None, x)


# --------------------------------------------------------------------------- exact densities


@pytest.mark.theory("T24")
def test_kde_matches_scikit_learn(float64):
    train, x = torch.randn(30, 2), torch.randn(9, 2)
    kde = KernelDensity("gaussian", bandwidth=0.4).fit(train)
    idata = inference.to_inference_data(kde, None, x, chains=2, seed=0)
    assert _groups(idata) == {"posterior_predictive", "log_likelihood", "observed_data"}
    _check_axes(idata, chains=2, draws=1)
    expected = SkKernelDensity(bandwidth=0.4).fit(train.numpy()).score_samples(x.numpy())
    np.testing.assert_allclose(idata.log_likelihood["x"].values, np.broadcast_to(expected, (2, 1, 9)), rtol=1e-9)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "data", "x_dim_1")
    assert idata.posterior_predictive["x"].shape == (2, 1, 9, 2)
    assert not np.array_equal(*idata.posterior_predictive["x"].values[:, 0])  # independent replicates


@pytest.mark.parametrize(
    "make",
    [lambda: RealNVP(3, num_layers=2, hidden_dims=(8,)), lambda: MAF(3, num_layers=2, hidden_dims=(8,)),
     lambda: MADE(3, hidden_dims=(8,), num_components=2)],
    ids=["realnvp", "maf", "made"],
)
def test_flows_and_autoregressive_are_exact(float64, make):
    model = make()
    x = torch.randn(6, 3)
    idata = inference.to_inference_data(model, None, x, seed=0)
    assert model_family(model, None) == "density"
    _check_axes(idata, chains=1, draws=1)
    assert idata.log_likelihood.attrs["estimator"] == "exact"
    ll = idata.log_likelihood["x"].values[0, 0]
    np.testing.assert_allclose(ll, model.log_prob(x).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ll, inference.log_likelihood(model, None, x, method="exact").numpy(), rtol=1e-12)
    assert idata.posterior_predictive["x"].shape == (1, 1, 6, 3)


def test_linear_gaussian_without_guide_is_the_exact_marginal(float64):
    model = LinearGaussian(3, 2)
    x = torch.randn(5, 3)
    idata = inference.to_inference_data(model, None, x, posterior_predictive=False)
    w, b, s = model.weight.detach().numpy(), model.bias.detach().numpy(), model.scale.detach().numpy()
    expected = stats.multivariate_normal(b, w @ w.T + np.diag(s**2)).logpdf(x.numpy())  # Bishop eq. 12.35
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 0], expected, rtol=1e-9)


# --------------------------------------------------------------------------- GAN


def test_gan_has_no_likelihood(float64):
    gan = GAN(2, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,))
    x = torch.randn(6, 2)
    with pytest.raises(ConfigError, match="log_likelihood=False"):
        inference.to_inference_data(gan, None, x)
    with pytest.raises(ConfigError, match="no density"):
        inference.psis_khat(gan, None, x, 20)
    idata = inference.to_inference_data(gan, None, x, log_likelihood=False, chains=2, seed=0)
    assert _groups(idata) == {"posterior_predictive", "observed_data"}
    _check_axes(idata, chains=2, draws=1)
    assert idata.posterior_predictive["x"].shape == (2, 1, 6, 2)
    with pytest.raises(ConfigError, match="estimator"):
        inference.to_inference_data(gan, None, x, log_likelihood=False, estimator="exact")


# --------------------------------------------------------------------------- across families


def test_numpy_groups_and_datatree_for_every_family(float64):
    x = torch.randn(5, 2)
    kde = KernelDensity(bandwidth=0.5).fit(torch.randn(10, 2))
    for model in (_gaussian_ddpm(), kde):
        groups = inference_data_groups(model, None, x)
        tree = to_arviz(groups, backend="datatree")
        name = "x_0" if isinstance(model, DDPM) else "x"
        assert tree["log_likelihood"][name].dims == ("chain", "draw", "data")
        assert tree["observed_data"][name].dims == ("data", f"{name}_dim_1")


def test_chains_must_share_a_model_class(float64):
    x = _two_clusters(10)
    em = inference.fit_em(GaussianMixture(2, 2), x, progress=False)
    kde = KernelDensity(bandwidth=0.5).fit(x)
    with pytest.raises(ConfigError, match="same model class"):
        inference.to_inference_data(None, None, x, chains=[em, (kde, None)])


# --------------------------------------------------------------------------- global latents, vectorised draws


class BroadcastingLogistic(PyroModule):
    """beta ~ N(0, I), y_i ~ Bernoulli(sigmoid(x_i . beta)), written to broadcast over a leading draws dim."""

    def __init__(self, first_draw_only: bool = False) -> None:
        super().__init__()
        self.first_draw_only = first_draw_only

    def forward(self, X, y):
        beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
        if self.first_draw_only:  # a model that silently ignores all draws but one
            beta = beta.reshape(-1)[: X.shape[1]]
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(X * beta).sum(-1)), obs=y)


@pytest.mark.parametrize("first_draw_only", [False, True], ids=["broadcasts", "first-draw-only"])
def test_global_draws_vectorised_or_looped_agree_with_numpy(float64, first_draw_only):
    X, y = torch.randn(20, 3), (torch.rand(20) < 0.4).double()
    model = BroadcastingLogistic(first_draw_only)
    guide = AutoNormal(model)
    guide(X, y)
    vectorised = _vectorised_draws(model, guide, (X, y), 50, "data", True, 1)
    assert (vectorised is None) == first_draw_only  # the check of the last draw catches the bad model
    idata = inference.to_inference_data(model, guide, (X, y), num_samples=50, seed=0)
    beta = idata.posterior["beta"].values[0]  # (S, 3)
    logits = beta @ X.numpy().T
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], y.numpy() * logits - np.logaddexp(0, logits),
                               rtol=1e-9)
    loc, scale = (p.detach().numpy() for p in (guide.locs.beta, guide.scales.beta))
    np.testing.assert_allclose(idata.sample_stats["log_q"].values[0], stats.norm.logpdf(beta, loc, scale).sum(-1),
                               rtol=1e-9)
    log_prior = stats.norm.logpdf(beta).sum(-1)
    np.testing.assert_allclose(idata.sample_stats["lp"].values[0], log_prior + idata.log_likelihood["y"].values[0].sum(-1),
                               rtol=1e-9)
    assert idata.posterior_predictive["y"].shape == (1, 50, 20)
    assert len(np.unique(beta[:, 0])) == 50  # independent draws
