"""Tests of vi_models.mixtures.gaussian and vi_models.mixtures.discrete: the model contract over every
mixture, the exact marginal against explicit sums over components (scipy, naive loops), the
fast emission against Pyro's stock distributions, sampling, validation, and the Bayesian
mixture fitted by SVI with enumeration."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from scipy import stats

from inference import fit, log_likelihood
from inference.em.loop import assignment_probs
from vi_models import DATA_PLATE, OBSERVED
from vi_models.errors import ConfigError, DataError
from vi_models.mixtures.discrete import BernoulliMixture, CategoricalMixture
from vi_models.mixtures.gaussian import (
    ASSIGNMENT,
    COVARIANCE_TYPES,
    MEANS,
    WEIGHTS,
    GaussianMixture,
    MixturePrior,
)

K, D, LEVELS = 3, 4, 5
MODELS = [f"gaussian-{c}" for c in COVARIANCE_TYPES] + ["bernoulli", "categorical"]


def make_model(name: str, **kwargs) -> torch.nn.Module:
    if name.startswith("gaussian"):
        model = GaussianMixture(K, D, name.split("-")[1], **kwargs)
        # distinct, non-trivial parameters
        g = torch.Generator().manual_seed(1)
        cov = {"full": lambda: _random_spd(K, D, g), "tied": lambda: _random_spd(1, D, g)[0],
               "diag": lambda: 0.5 + torch.rand(K, D, generator=g, dtype=torch.float64),
               "spherical": lambda: 0.5 + torch.rand(K, generator=g, dtype=torch.float64)}[model.covariance]()
        if not model.has_priors:
            model.set_params(weights=torch.tensor([0.2, 0.3, 0.5]), means=2 * torch.randn(K, D, generator=g,
                             dtype=torch.float64), covariances=cov)
        return model
    if name == "bernoulli":
        return BernoulliMixture(K, D, **kwargs)
    return CategoricalMixture(K, D, LEVELS, **kwargs)


def _random_spd(k: int, d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    return a @ a.mT / d + 0.5 * torch.eye(d, dtype=torch.float64)


def make_data(model: torch.nn.Module, n: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    if isinstance(model, BernoulliMixture):
        return torch.bernoulli(torch.full((n, D), 0.5, dtype=torch.float64), generator=g)
    if isinstance(model, CategoricalMixture):
        k = torch.randint(0, LEVELS, (n, D), generator=g)
        return (k + torch.rand(n, D, generator=g, dtype=torch.float64)) / LEVELS
    return 2 * torch.randn(n, D, generator=g, dtype=torch.float64)


def naive_log_prob(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """log sum_k pi_k p(x | theta_k) by an explicit loop over observations and components."""
    w = model.weights.detach().numpy()
    out = []
    for xi in x.numpy():
        terms = []
        for k in range(model.n_components):
            if isinstance(model, GaussianMixture):
                cov_k = _full_cov(model)[k].numpy()
                lp = stats.multivariate_normal(model.means.detach().numpy()[k], cov_k).logpdf(xi)
            elif isinstance(model, BernoulliMixture):
                lp = stats.bernoulli(model.probs.detach().numpy()[k]).logpmf(xi).sum()
            else:
                levels = np.floor(xi * LEVELS).astype(int)
                lp = sum(math.log(model.probs.detach().numpy()[k, j, levels[j]]) for j in range(D))
            terms.append(math.log(w[k]) + lp)
        out.append(np.logaddexp.reduce(terms))
    return np.array(out)


# --------------------------------------------------------------------------- contract


@pytest.mark.theory("T10")
@pytest.mark.parametrize("name", MODELS)
def test_exact_marginal_equals_explicit_sum_over_components(name, float64):
    model = make_model(name)
    x = make_data(model)
    expected = naive_log_prob(model, x)
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), expected, rtol=1e-10)
    # the engine's paths: the model's own log_prob, and Pyro's enumeration of the assignment
    np.testing.assert_allclose(log_likelihood(model, None, x, method="exact").numpy(), expected, rtol=1e-10)
    tr = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace(x)
    joint = tr.nodes[ASSIGNMENT]["fn"].log_prob(tr.nodes[ASSIGNMENT]["value"]) + tr.nodes[OBSERVED]["fn"].log_prob(
        tr.nodes[OBSERVED]["value"])
    np.testing.assert_allclose(torch.logsumexp(joint, 0).detach().numpy(), expected, rtol=1e-10)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, lambda x: None, x)
    assert loss == pytest.approx(-expected.sum(), rel=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_emission_matches_pyro_distributions_for_sampled_assignments(name, float64):
    """Without enumeration the emission equals Pyro's stock distribution at each z."""
    model = make_model(name)
    x = make_data(model, n=11)
    tr = poutine.trace(model).get_trace(x)
    z, site = tr.nodes[ASSIGNMENT]["value"], tr.nodes[OBSERVED]
    assert z.shape == (11,) and site["fn"].batch_shape == (11,)
    if isinstance(model, GaussianMixture):
        ref = dist.MultivariateNormal(model.means[z], covariance_matrix=_full_cov(model)[z])
        value = x
    elif isinstance(model, BernoulliMixture):
        ref, value = dist.Bernoulli(model.probs[z]).to_event(1), x
    else:
        ref, value = dist.Categorical(model.probs[z]).to_event(1), model.levels(x)
    torch.testing.assert_close(site["fn"].log_prob(value), ref.log_prob(value))


def _full_cov(model: GaussianMixture) -> torch.Tensor:
    cov = model.covariances
    return {"full": lambda: cov, "tied": lambda: cov.expand(K, D, D),
            "diag": lambda: torch.diag_embed(cov),
            "spherical": lambda: cov[:, None, None] * torch.eye(D, dtype=cov.dtype)}[model.covariance]()


@pytest.mark.parametrize("name", MODELS)
def test_contract_shapes_gradients_seeds_and_state_dict(name, float64):
    model = make_model(name)
    x = make_data(model)
    out = model(x)
    assert out.shape == x.shape
    assert model.log_prob(x).shape == (x.shape[0],)
    # gradients reach every parameter
    model.log_prob(x).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
    # seeds reproduce, samples have the data's shape and support
    a = model.sample(50, generator=torch.Generator().manual_seed(3))
    b = model.sample(50, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == (50, D)
    if name == "bernoulli":
        assert set(a.unique().tolist()) <= {0.0, 1.0}
    if name == "categorical":
        assert bool(((a > 0) & (a < 1)).all())
        model.log_prob(a)  # valid data for the model
    # prior predictive through the Pyro model
    assert model(num_samples=6).shape == (6, D)
    # save/load round trip
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = make_model(name)
    clone.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(clone.log_prob(x), model.log_prob(x))


@pytest.mark.theory("T10")
@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_sampling_is_ancestral(covariance, float64):
    """k ~ pi, then x ~ N(mu_k, Sigma_k): label frequencies and per-label moments."""
    model = make_model(f"gaussian-{covariance}")
    x, z = model.sample(20000, generator=torch.Generator().manual_seed(0), return_assignment=True)
    freq = torch.bincount(z, minlength=K).double() / len(z)
    torch.testing.assert_close(freq, model.weights.detach(), atol=0.015, rtol=0)
    covs = _full_cov(model)
    for k in range(K):
        xk = x[z == k]
        torch.testing.assert_close(xk.mean(0), model.means.detach()[k], atol=0.08, rtol=0)
        torch.testing.assert_close(torch.cov(xk.T), covs[k], atol=0.12, rtol=0)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_set_params_layouts_round_trip(covariance, float64):
    model = make_model(f"gaussian-{covariance}")
    cov, prec = model.covariances, model.precisions
    if covariance in ("full", "tied"):
        torch.testing.assert_close(cov @ prec, torch.eye(D, dtype=cov.dtype).expand_as(cov))
    else:
        torch.testing.assert_close(cov * prec, torch.ones_like(cov))
    other = GaussianMixture(K, D, covariance)
    other.set_params(weights=model.weights.detach(), means=model.means.detach(), precisions=prec)
    torch.testing.assert_close(other.covariances, cov)
    assert model.n_parameters == {"full": K * D * (D + 3) // 2 + K - 1, "diag": 2 * K * D + K - 1,
                                  "spherical": K * D + 2 * K - 1, "tied": D * (D + 1) // 2 + K * D + K - 1}[covariance]


def test_singular_covariance_names_the_component(float64):
    model = GaussianMixture(2, 2, "full")
    cov = torch.stack([torch.eye(2), torch.zeros(2, 2)])
    with pytest.raises(DataError, match=r"component\(s\) \[1\].*reg_covar"):
        model.set_params(covariances=cov)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: GaussianMixture(0, 2), ConfigError),
        (lambda: GaussianMixture(2, 2, "banana"), ConfigError),
        (lambda: GaussianMixture(2, 0), ConfigError),
        (lambda: GaussianMixture(2, 2, priors="yes"), ConfigError),
        (lambda: MixturePrior(mean_scale=-1.0), ConfigError),
        (lambda: BernoulliMixture(2, 3, pseudo_count=-1), ConfigError),
        (lambda: CategoricalMixture(2, 3, num_levels=1), ConfigError),
    ],
)
def test_bad_configuration_raises(build, error):
    with pytest.raises(error, match="expected"):
        build()


def test_bad_data_raises(float64):
    model = GaussianMixture(2, 3)
    with pytest.raises(DataError, match=r"shape \(B, 3\)"):
        model.log_prob(torch.zeros(4, 2))
    with pytest.raises(DataError, match="finite"):
        model.log_prob(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(DataError, match="binary"):
        BernoulliMixture(2, 3).log_prob(torch.full((2, 3), 0.5))
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        CategoricalMixture(2, 3).log_prob(torch.full((2, 3), 1.0))
    with pytest.raises(ConfigError, match="exactly one"):
        model()


# --------------------------------------------------------------------------- SVI with enumeration


def _separated_data(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    z = torch.randint(0, 3, (n,), generator=g)
    return means[z] + 0.6 * torch.randn(n, 2, generator=g, dtype=torch.float64), z, means


def _match(estimated: torch.Tensor, truth: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    """Smallest max-error over relabellings of the components (label switching)."""
    return min((float((estimated[list(p)] - truth).abs().max()), p) for p in itertools.permutations(range(len(truth))))


@pytest.mark.parametrize("covariance, kind", [("full", "map"), ("diag", "normal"), ("tied", "normal")])
def test_bayesian_mixture_by_svi_recovers_separated_components(covariance, kind, float64):
    x, z, truth = _separated_data()
    model = GaussianMixture(3, 2, covariance, priors=True)
    blocked = poutine.block(model, hide=[ASSIGNMENT])
    init = model.init_loc_fn(x, seed=0)
    guide = AutoDelta(blocked, init_loc_fn=init) if kind == "map" else AutoNormal(blocked, init_loc_fn=init, init_scale=0.05)
    fit(model, guide, x, loss="enum", epochs=120, batch_size=300, lr=0.05, progress=False, seed=0,
        check_convergence=False)
    model.use_point_estimate(guide, x)
    error, perm = _match(model.means.detach(), truth)
    assert error < 0.25
    probs = assignment_probs(model, x, guide, num_samples=3)
    assert probs.shape == (300, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(300, dtype=torch.float64))
    relabel = torch.empty(3, dtype=torch.long)
    relabel[list(perm)] = torch.arange(3)
    assert float((relabel[probs.argmax(1)] == z).double().mean()) > 0.97


def test_assignment_probs_match_pyro_compute_marginals(float64):
    x, _, _ = _separated_data(60)
    model = GaussianMixture(3, 2, "diag", priors=True)
    guide = AutoDelta(poutine.block(model, hide=[ASSIGNMENT]), init_loc_fn=model.init_loc_fn(x, seed=0))
    guide(x)
    marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, guide, x)
    torch.testing.assert_close(assignment_probs(model, x, guide), marginals[ASSIGNMENT].probs)


def test_maximum_likelihood_svi_without_guide(float64):
    """guide=None: every latent is enumerated, the loss is -log p(x) exactly."""
    x, _, _ = _separated_data(200)
    model = GaussianMixture(3, 2, "spherical")
    model.set_params(means=x[[0, 1, 2]])
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, lambda x: None, x)
    assert loss == pytest.approx(-float(model.log_prob(x).detach().sum()), rel=1e-12)
    result = fit(model, None, x, loss="enum", epochs=150, batch_size=200, lr=0.05, progress=False, seed=0,
                 check_convergence=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    trace = poutine.trace(model).get_trace(x)
    assert trace.nodes[MEANS]["type"] == "param" and trace.nodes[WEIGHTS]["type"] == "param"
    assert trace.nodes[ASSIGNMENT]["infer"]["enumerate"] == "parallel"
    assert DATA_PLATE in {f.name for f in trace.nodes[ASSIGNMENT]["cond_indep_stack"]}
