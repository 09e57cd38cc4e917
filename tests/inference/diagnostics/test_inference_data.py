"""to_inference_data: groups, dims and shapes per model family; log-likelihoods vs independent computations."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule
from scipy import stats

import inference
from guides.encoder import GaussianEncoder
from guides.linear import LinearGaussianEncoder
from inference.diagnostics.arviz_io import Group, to_arviz
from inference.diagnostics.inference_data import inference_data_groups, to_inference_data
from vi_models.errors import ConfigError
from vi_models.mixtures.gaussian import GaussianMixture
from vi_models.vae.linear_gaussian import LinearGaussian
from vi_models.vae.vae import VAE


class LogisticRegression(PyroModule):
    """beta ~ N(0, I), y_i | x_i ~ Bernoulli(sigmoid(x_i . beta))."""

    def forward(self, X, y):
        beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def _bayes_gmm(x):
    model = GaussianMixture(2, 1, covariance="diag", priors=True)
    guide = AutoNormal(poutine.block(model, hide=["assignment"]))
    guide(x)
    return model, guide


def test_bayesian_mixture_groups_and_exact_marginal(float64):
    x = torch.cat([torch.randn(8, 1) - 2, torch.randn(7, 1) + 2])
    model, guide = _bayes_gmm(x)
    idata = to_inference_data(model, guide, x, num_samples=20, chains=2, seed=0)
    post = idata.posterior
    assert post["means"].dims == ("chain", "draw", "components", "means_dim_1")
    assert post["weights"].shape == (2, 20, 2)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "data")
    assert idata.log_likelihood.attrs["estimator"] == "exact_marginal"
    assert idata.posterior_predictive["x"].shape == (2, 20, 15, 1)
    assert idata.observed_data["x"].shape == (15, 1)
    assert set(idata.sample_stats.data_vars) == {"lp", "log_q", "log_weight"}
    # log p(x_i | theta_s) = log sum_k pi_k N(x_i | mu_k, sigma_k^2), by scipy from the posterior draws
    w, mu, var = post["weights"].values, post["means"].values[..., 0], post["variances"].values[..., 0]
    comp = stats.norm.logpdf(x.numpy()[None, None, :, 0, None], mu[:, :, None, :], np.sqrt(var)[:, :, None, :])
    expected = np.logaddexp.reduce(comp + np.log(w)[:, :, None, :], axis=-1)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, expected, rtol=1e-9)
    ss = idata.sample_stats
    np.testing.assert_allclose(ss.log_weight.values, ss.lp.values - ss.log_q.values)


def test_independent_fits_become_chains(float64):
    x = torch.randn(10, 1)
    fits = [_bayes_gmm(x) for _ in range(3)]
    idata = to_inference_data(None, None, x, num_samples=10, chains=fits, posterior_predictive=False, seed=0)
    assert idata.posterior.sizes["chain"] == 3
    az = inference.diagnostics.import_arviz()
    assert np.isfinite(az.rhat(idata)["means"].values).all()


def test_logistic_regression_tuple_data(float64):
    X = torch.randn(12, 3)
    y = (torch.rand(12) < 0.5).double()
    model = LogisticRegression()
    guide = AutoNormal(model)
    guide(X, y)
    idata = to_inference_data(model, guide, (X, y), num_samples=15, seed=0, dims={"beta": ["feature"]},
                              coords={"feature": ["a", "b", "c"]})
    beta = idata.posterior["beta"]
    assert beta.dims == ("chain", "draw", "feature") and list(beta.feature.values) == ["a", "b", "c"]
    logits = np.einsum("nd,csd->csn", X.numpy(), beta.values)
    expected = y.numpy() * logits - np.logaddexp(0.0, logits)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-9)
    assert idata.observed_data["y"].shape == (12,)


def test_vae_local_latents_match_log_likelihood(float64):
    vae = VAE(4, 2, hidden_dims=(8,), likelihood="gaussian")
    enc = GaussianEncoder(4, 2, hidden_dims=(8,))
    x = torch.randn(9, 4)
    idata = to_inference_data(vae, enc, x, num_samples=30, seed=5, posterior_predictive=True)
    assert "posterior" not in idata.groups()
    assert idata.log_likelihood["x"].shape == (1, 1, 9)
    assert idata.log_likelihood.attrs == {"estimator": "iwae", "num_importance_samples": 30}
    assert idata.sample_stats["log_weight"].dims == ("chain", "draw", "particle", "data")
    assert idata.posterior_predictive["x"].shape == (1, 1, 9, 4)
    ll = inference.log_likelihood(vae, enc, x, num_samples=30, seed=5)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 0], ll.numpy(), rtol=1e-9)
    elbo = to_inference_data(vae, enc, x, num_samples=30, seed=5, estimator="elbo", posterior_predictive=False)
    assert (elbo.log_likelihood["x"].values <= idata.log_likelihood["x"].values + 1e-9).all()


def test_exact_guide_gives_exact_log_likelihood(float64):
    model = LinearGaussian(3, 2)
    guide = LinearGaussianEncoder(3, 2).set_posterior(model)
    x = torch.randn(6, 3)
    idata = to_inference_data(model, guide, x, num_samples=5, chains=2, seed=0)
    exact = model.log_prob(x).detach().numpy()
    np.testing.assert_allclose(idata.log_likelihood["x"].values, np.broadcast_to(exact, (2, 1, 6)), rtol=1e-9)


def test_ml_mixture_without_guide_is_exact(float64):
    model = GaussianMixture(3, 2, covariance="full")
    x = torch.randn(7, 2)
    idata = to_inference_data(model, None, x, num_samples=4, seed=0)
    assert idata.log_likelihood.attrs["estimator"] == "exact"
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 0], model.log_prob(x).detach().numpy(), rtol=1e-9)


def test_datatree_backend_from_numpy_groups():
    groups = {
        "posterior": Group({"mu": np.zeros((2, 5, 3))}, {"mu": ("k",)}),
        "log_likelihood": Group({"y": np.zeros((2, 5, 4))}, {"y": ("obs",)}, attrs={"estimator": "exact_marginal"}),
        "observed_data": Group({"y": np.ones(4)}, {"y": ("obs",)}, sampled=False),
        "sample_stats": Group(),
    }
    tree = to_arviz(groups, {"k": ["a", "b", "c"]}, backend="datatree")
    assert set(tree.children) == {"posterior", "log_likelihood", "observed_data"}
    assert tree["posterior"]["mu"].dims == ("chain", "draw", "k")
    assert tree["log_likelihood"].attrs["estimator"] == "exact_marginal"
    assert tree["observed_data"]["y"].dims == ("obs",)
    idata = to_arviz(groups, backend="inference_data")
    assert idata.posterior["mu"].shape == (2, 5, 3)
    with pytest.raises(ConfigError):
        Group().add("bad", np.zeros(3), ("obs",))


def test_groups_are_plain_numpy(float64):
    x = torch.randn(5, 1)
    model, guide = _bayes_gmm(x)
    groups = inference_data_groups(model, guide, x, num_samples=4, posterior_predictive=False)
    assert isinstance(groups["log_likelihood"].data["x"], np.ndarray)
    assert groups["log_likelihood"].data["x"].shape == (1, 4, 5)


def test_bad_arguments():
    x = torch.randn(5, 1)
    with pytest.raises(ConfigError):
        to_inference_data(GaussianMixture(2, 1), None, x, chains=0)
    with pytest.raises(ConfigError):
        to_inference_data(GaussianMixture(2, 1), None, x, chains=["nope"])
