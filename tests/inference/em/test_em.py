"""Tests of inference.em (fit_em, EMResult, assignment_probs) against scikit-learn's
GaussianMixture, the EM identities of THEORY T11-T13, the notes' initialisation cases, the
degenerate fits, input validation, and the discrete mixtures on the digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from inference import ConvergenceWarning, DegenerateFitWarning
from inference.em.loop import EMResult, assignment_probs, fit_em
from inference.em.steps import e_step, expected_complete_log_likelihood, log_joint
from vi_models.errors import ConfigError, DataError
from vi_models.mixtures.discrete import BernoulliMixture, CategoricalMixture
from vi_models.mixtures.gaussian import COVARIANCE_TYPES, GaussianMixture

K, D = 3, 2


def blobs(n: int = 300, seed: int = 0, spread: float = 1.0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    centres = np.array([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]])
    scales = np.array([0.5, 1.0, 0.7])
    z = rng.randint(0, 3, size=n)
    return centres[z] + spread * scales[z, None] * rng.randn(n, 2) @ np.array([[1.0, 0.3], [0.0, 1.0]])


def sklearn_initial_state(x: np.ndarray, covariance: str, seed: int = 1) -> dict[str, np.ndarray]:
    """A deliberately poor start (random data points, unit covariances) for both libraries."""
    rng = np.random.RandomState(seed)
    means = x[rng.choice(len(x), K, replace=False)] + 0.5
    precisions = {"full": np.stack([np.eye(D)] * K), "tied": np.eye(D), "diag": np.ones((K, D)),
                  "spherical": np.ones(K)}[covariance]
    return {"weights": np.array([0.5, 0.3, 0.2]), "means": means, "precisions": precisions}


# --------------------------------------------------------------------------- scikit-learn parity


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_initial_parameters(covariance, float64):
    x = blobs()
    start = sklearn_initial_state(x, covariance)
    sk = SkGaussianMixture(K, covariance_type=covariance, tol=1e-8, max_iter=500, reg_covar=1e-6,
                           weights_init=start["weights"], means_init=start["means"],
                           precisions_init=start["precisions"]).fit(x)
    result = fit_em(GaussianMixture(K, D, covariance), x, init=start, tol=1e-8, max_iter=500, progress=False)
    model = result.model
    assert result.converged_ and sk.converged_
    assert result.n_iter_ == sk.n_iter_
    assert result.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-6)
    np.testing.assert_allclose(result.lower_bounds_, sk.lower_bounds_, atol=1e-6)
    np.testing.assert_allclose(model.weights.detach().numpy(), sk.weights_, atol=1e-6)
    np.testing.assert_allclose(model.means.detach().numpy(), sk.means_, atol=1e-6)
    np.testing.assert_allclose(model.covariances.numpy(), sk.covariances_, atol=1e-6)
    np.testing.assert_allclose(model.precisions.numpy(), sk.precisions_, atol=1e-5)
    # the result's scikit-learn-like methods
    np.testing.assert_allclose(result.score_samples(x).numpy(), sk.score_samples(x), atol=1e-6)
    assert result.score(x) == pytest.approx(sk.score(x), abs=1e-6)
    np.testing.assert_allclose(result.predict_proba(x).numpy(), sk.predict_proba(x), atol=1e-6)
    np.testing.assert_array_equal(result.predict(x).numpy(), sk.predict(x))
    assert result.bic(x) == pytest.approx(sk.bic(x), abs=1e-4)
    assert result.aic(x) == pytest.approx(sk.aic(x), abs=1e-4)


@pytest.mark.parametrize("init", ["k-means++", "random_from_data", "random"])
@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_string_initialisations_reproduce_sklearn_with_the_same_seed(init, covariance, float64):
    x = blobs(200, seed=3)
    sk = SkGaussianMixture(K, covariance_type=covariance, init_params=init, random_state=7, n_init=2,
                           tol=1e-6, max_iter=300).fit(x)
    result = fit_em(GaussianMixture(K, D, covariance), x, init=init, seed=7, n_init=2, tol=1e-6, max_iter=300,
                    progress=False)
    assert result.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-6)
    np.testing.assert_allclose(result.model.means.detach().numpy(), sk.means_, atol=1e-5)
    assert len(result.init_lower_bounds_) == 2 and result.lower_bound_ == max(result.init_lower_bounds_)


# --------------------------------------------------------------------------- EM identities


@pytest.mark.theory("T12")
@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(covariance, float64):
    x = blobs(400, seed=5, spread=1.6)  # overlapping clusters: many iterations
    start = sklearn_initial_state(x, covariance, seed=4)
    result = fit_em(GaussianMixture(K, D, covariance), x, init=start, reg_covar=0.0, tol=1e-10, max_iter=300,
                    progress=False)
    bounds = np.array(result.lower_bounds_)
    assert len(bounds) >= 5
    assert np.all(np.diff(bounds) >= -1e-12), np.diff(bounds).min()


@pytest.mark.theory("T12")
@pytest.mark.parametrize("model_cls", [BernoulliMixture, CategoricalMixture])
def test_penalised_objective_never_decreases_for_discrete_mixtures(model_cls, float64):
    """With a pseudo-count the M-step is a MAP step: log p(x) + log prior increases."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 2 if model_cls is BernoulliMixture else 5, (300, 8), generator=g)
    levels[:150, :4] = 0  # two populations
    model = model_cls(3, 8) if model_cls is BernoulliMixture else model_cls(3, 8, num_levels=5)
    x = levels.double() if model_cls is BernoulliMixture else (levels + torch.rand(300, 8, generator=g, dtype=torch.float64)) / 5
    fit_em(model, x, max_iter=0, seed=0, progress=False)
    objective = []
    for _ in range(25):
        objective.append(float(model.log_prob(x).detach().sum() + model.log_prior().detach()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit_em(model, x, warm_start=True, max_iter=1, progress=False)
    assert np.all(np.diff(objective) >= -1e-9)


@pytest.mark.theory("T12")
@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_elbo_touches_and_is_tangent_to_the_log_likelihood_after_an_e_step(covariance, float64):
    x = torch.as_tensor(blobs(120, seed=2))
    model = GaussianMixture(K, D, covariance)
    start = sklearn_initial_state(x.numpy(), covariance)
    model.set_params(**start)
    with torch.no_grad():
        log_px, log_q = e_step(model, x)  # Q(z | x_i) = P(z | x_i, theta_0)
    q = log_q.exp()
    params = [p for p in model.parameters()]

    def elbo_and_loglik():
        joint = log_joint(model, x)  # (K, N): log p(x_i, z = k | theta)
        elbo = (q * (joint - log_q)).sum()
        return elbo, torch.logsumexp(joint, 0).sum()

    elbo, loglik = elbo_and_loglik()
    assert float(elbo.detach()) == pytest.approx(float(log_px.sum()), rel=1e-12)  # the bound touches
    assert float(elbo.detach()) == pytest.approx(float(loglik.detach()), rel=1e-12)
    kl = loglik - elbo  # KL(Q || P(z | x, theta)) >= 0, zero at theta_0
    grads = torch.autograd.grad(kl, params)
    for p, grad in zip(params, grads):
        torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-9, rtol=0)
    # ... and away from theta_0 the bound is strictly below
    with torch.no_grad():
        model.means_unconstrained.add_(0.3)
    elbo, loglik = elbo_and_loglik()
    assert float((loglik - elbo).detach()) > 1e-3


@pytest.mark.theory("T11")
@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_closed_form_m_step_is_the_argmax_of_the_expected_complete_log_likelihood(covariance, float64):
    x = torch.as_tensor(blobs(150, seed=6))
    model = GaussianMixture(K, D, covariance)
    model.set_params(**sklearn_initial_state(x.numpy(), covariance))
    with torch.no_grad():
        resp = e_step(model, x)[1].exp()  # (K, N)
    closed = model.m_step(x, resp.T, reg_covar=0.0)
    # gradient ascent on Q(theta) from the E-step's parameters
    opt = torch.optim.LBFGS(list(model.parameters()), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -expected_complete_log_likelihood(model, x, resp)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(model.weights.detach().numpy(), closed["weights"].numpy(), atol=1e-5)
    np.testing.assert_allclose(model.means.detach().numpy(), closed["means"].numpy(), atol=1e-5)
    np.testing.assert_allclose(model.covariances.numpy(), closed["covariances"].numpy(), atol=1e-5)


@pytest.mark.theory("T11")
def test_spherical_m_step_is_the_notes_formula(float64):
    x = torch.as_tensor(blobs(90, seed=8))
    g = torch.Generator().manual_seed(0)
    q = torch.rand(90, K, generator=g, dtype=torch.float64)
    q = q / q.sum(1, keepdim=True)
    out = GaussianMixture(K, D, "spherical").m_step(x, q, reg_covar=0.0)
    for z in range(K):
        qz = q[:, z]
        mu = (qz[:, None] * x).sum(0) / qz.sum()
        var = (qz * ((x - mu) ** 2).sum(1)).sum() / (D * qz.sum())
        torch.testing.assert_close(out["means"][z], mu)
        torch.testing.assert_close(out["covariances"][z], var)
        torch.testing.assert_close(out["weights"][z], qz.sum() / 90)  # Lagrange multiplier lambda = n


# --------------------------------------------------------------------------- the notes' initialisation cases


@pytest.mark.theory("T13")
@pytest.mark.parametrize("weights", [[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
def test_identical_means_and_variances_never_separate(weights, float64):
    x = blobs(200, seed=1)
    init = {"weights": np.array(weights), "means": np.zeros((K, D)), "covariances": np.ones((K, D))}
    with pytest.warns(DegenerateFitWarning, match=r"components \[\[0, 1, 2\]\] are identical"):
        result = fit_em(GaussianMixture(K, D, "diag"), x, init=init, progress=False)
    means = result.model.means.detach()
    torch.testing.assert_close(means, means[:1].expand(K, D))  # one Gaussian: the data mean
    torch.testing.assert_close(means[0], torch.as_tensor(x.mean(0)))
    proba = result.predict_proba(x)
    torch.testing.assert_close(proba, proba[:1].expand_as(proba))


@pytest.mark.theory("T13")
def test_identical_means_with_different_variances_separate(float64):
    x = blobs(300, seed=1)
    init = {"weights": np.full(K, 1 / K), "means": np.zeros((K, D)),
            "covariances": np.array([[0.5, 0.5], [2.0, 2.0], [8.0, 8.0]])}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        result = fit_em(GaussianMixture(K, D, "diag"), x, init=init, max_iter=500, progress=False)
    means = result.model.means.detach()
    assert float(torch.cdist(means, means).add(torch.eye(K) * 1e9).min()) > 1.0


@pytest.mark.theory("T13")
def test_random_data_points_as_means_separate_and_find_the_clusters(float64):
    x = blobs(300, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        result = fit_em(GaussianMixture(K, D, "full"), x, init="random_from_data", seed=0, n_init=3, progress=False)
    found = result.model.means.detach().numpy()
    for centre in ([-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]):
        assert np.linalg.norm(found - centre, axis=1).min() < 0.3


@pytest.mark.theory("T13")
def test_component_centred_on_an_outlier_collapses_with_a_warning(float64):
    x = np.concatenate([blobs(200, seed=1), [[40.0, 40.0]]])
    init = {"weights": np.array([0.45, 0.45, 0.1]), "means": np.array([[-4.0, 0.0], [2.0, 3.0], [40.0, 40.0]]),
            "covariances": np.ones((K, D))}
    with pytest.warns(DegenerateFitWarning, match=r"component\(s\) \[2\] collapsed.*reg_covar"):
        result = fit_em(GaussianMixture(K, D, "diag"), x, init=init, reg_covar=1e-6, progress=False)
    np.testing.assert_allclose(result.model.covariances.numpy()[2], 1e-6, rtol=1e-3)
    assert result.model.weights.detach()[2] == pytest.approx(1 / len(x))


def test_emptied_component_is_named(float64):
    x = blobs(200, seed=1)
    init = {"weights": np.array([0.5, 0.49, 0.01]), "means": np.array([[-4.0, 0.0], [2.0, 3.0], [500.0, 500.0]]),
            "covariances": np.ones((K, D))}
    with pytest.warns(DegenerateFitWarning, match=r"component\(s\) \[2\] are empty"):
        fit_em(GaussianMixture(K, D, "diag"), x, init=init, progress=False)


def test_convergence_warning_when_max_iter_is_hit(float64):
    x = blobs(300, seed=5, spread=1.6)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        result = fit_em(GaussianMixture(K, D), x, max_iter=2, tol=1e-12, seed=0, progress=False)
    assert not result.converged_ and result.n_iter_ == 2 and len(result.lower_bounds_) == 2


# --------------------------------------------------------------------------- engine features


class PoissonMixture(PyroModule):
    """A model without a closed-form M-step: EM falls back to gradient steps (generalised EM)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = PyroParam(torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
        self.rates = PyroParam(torch.tensor([1.0, 3.0]), constraint=constraints.positive)

    def forward(self, x):
        import pyro
        import pyro.distributions as dist

        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(self.weights))  # enumerable: the engine enumerates it
            pyro.sample("x", dist.Poisson(self.rates[z].unsqueeze(-1).expand(*z.shape, 2)).to_event(1), obs=x)


def naive_poisson_em(x: np.ndarray, iters: int = 2000) -> tuple[np.ndarray, float]:
    from scipy.stats import poisson

    w, rates = np.array([0.5, 0.5]), np.array([1.0, 3.0])
    for _ in range(iters):
        joint = np.log(w) + poisson.logpmf(x[:, :1], rates).reshape(-1, 2) + poisson.logpmf(x[:, 1:], rates)
        resp = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
        w = resp.mean(0)
        rates = (resp * x.sum(1, keepdims=True)).sum(0) / (2 * resp.sum(0))
    joint = np.log(w) + poisson.logpmf(x[:, :1], rates) + poisson.logpmf(x[:, 1:], rates)
    return rates, float(np.logaddexp.reduce(joint, axis=1).mean())


def test_generalised_m_step_fits_a_model_without_closed_form(float64):
    rng = np.random.RandomState(0)
    x = np.concatenate([rng.poisson(2.0, (150, 2)), rng.poisson(9.0, (150, 2))]).astype(float)
    rates, loglik = naive_poisson_em(x)
    model = PoissonMixture()
    result = fit_em(model, x, init={"weights": torch.tensor([0.5, 0.5]), "rates": torch.tensor([1.0, 3.0])},
                    max_iter=400, tol=1e-9, gem_steps=5, gem_lr=0.05, progress=False)
    assert result.config["m_step"].startswith("generalised")
    assert result.score(x) == pytest.approx(loglik, abs=1e-4)
    np.testing.assert_allclose(np.sort(model.rates.detach().numpy()), np.sort(rates), atol=2e-2)


def test_warm_start_continues_from_the_current_parameters(float64):
    x = blobs(300, seed=5, spread=1.6)
    model = GaussianMixture(K, D)
    with pytest.warns(ConvergenceWarning):
        first = fit_em(model, x, max_iter=3, tol=1e-10, seed=0, progress=False)
    second = fit_em(model, x, warm_start=True, max_iter=200, tol=1e-10, progress=False)
    assert second.lower_bounds_[0] >= first.lower_bounds_[-1] - 1e-12
    reference = fit_em(GaussianMixture(K, D), x, max_iter=300, tol=1e-10, seed=0, progress=False)
    assert second.lower_bound_ == pytest.approx(reference.lower_bound_, abs=1e-6)


def test_result_methods_and_log_likelihood_agree(float64):
    from inference import log_likelihood

    x = torch.as_tensor(blobs(200, seed=2))
    result = fit_em(GaussianMixture(K, D, "tied"), x, seed=0, progress=False)
    assert isinstance(result, EMResult) and result.n_components == K
    torch.testing.assert_close(result.score_samples(x), result.model.log_prob(x).detach())
    torch.testing.assert_close(log_likelihood(result.model, None, x, method="exact"), result.score_samples(x))
    torch.testing.assert_close(assignment_probs(result.model, x), result.predict_proba(x))
    samples, labels = result.sample(50, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (50, D) and labels.shape == (50,)
    assert result.time_per_iter > 0 and result.elapsed > 0


def test_float32_and_float64(float64):
    x = blobs(200, seed=2)
    r64 = fit_em(GaussianMixture(K, D, dtype=torch.float64), x, seed=0, progress=False)
    r32 = fit_em(GaussianMixture(K, D, dtype=torch.float32), x, seed=0, progress=False)
    assert r32.model.means.dtype == torch.float32
    assert r32.lower_bound_ == pytest.approx(r64.lower_bound_, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_unchanged(float64):
    x = blobs(500, seed=2)
    cpu = fit_em(GaussianMixture(K, D), x, seed=0, progress=False)
    gpu = fit_em(GaussianMixture(K, D), x, seed=0, progress=False, device="cuda")
    assert gpu.model.means.device.type == "cuda"
    assert gpu.lower_bound_ == pytest.approx(cpu.lower_bound_, abs=1e-8)


# --------------------------------------------------------------------------- discrete mixtures vs the EM peers


def test_bernoulli_mixture_matches_the_em_peer_on_binary_digits(float64):
    """Mixture of 30 Bernoullis: the peers report 18.9 nats test NLL on digits-binary."""
    from inference.data.datasets import load_dataset

    bundle = load_dataset("digits-binary")
    result = fit_em(BernoulliMixture(30, 64), bundle.train.double(), seed=0, n_init=2, tol=1e-4,
                    max_iter=300, progress=False)
    assert -result.score(bundle.test.double()) <= 18.9


@pytest.mark.filterwarnings("ignore::inference.DegenerateFitWarning")  # an emptied component is fine here
def test_categorical_mixture_matches_the_em_peer_on_digits(float64):
    """Mixture of 10 categoricals over 17 levels: the peers report 2.29 bits/dim on the digits."""
    from inference.data.datasets import load_dataset

    bundle = load_dataset("digits")
    result = fit_em(CategoricalMixture(10, 64, 17), bundle.train.double(), seed=0, tol=1e-4, max_iter=300,
                    progress=False)
    bpd = result.bits_per_dim(bundle.test.double())
    assert bpd == pytest.approx(bundle.bits_per_dim(result.score_samples(bundle.test.double()).mean(), discrete=True))
    assert bpd <= 2.29


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, data, error, match",
    [
        ({}, np.zeros((2, D)), DataError, "at least n_components=3 observations"),
        ({}, np.array([[0.0, np.nan]] * 10), DataError, "finite"),
        ({}, np.zeros((10, 3)), DataError, r"shape \(n_samples, 2\)"),
        ({"reg_covar": -1e-3}, None, ConfigError, "reg_covar"),
        ({"init": "kmeans+++"}, None, ConfigError, "init"),
        ({"n_init": 0}, None, ConfigError, "n_init"),
        ({"max_iter": -1}, None, ConfigError, "max_iter"),
        ({"tol": -1.0}, None, ConfigError, "tol"),
        ({"init": {"weights": np.ones(K) / K, "banana": 1}}, None, ConfigError, "init"),
    ],
)
def test_bad_inputs_raise(kwargs, data, error, match, float64):
    x = blobs(30) if data is None else data
    with pytest.raises(error, match=match):
        fit_em(GaussianMixture(K, D), x, progress=False, **kwargs)


def test_models_fit_em_cannot_serve_raise(float64):
    x = blobs(30)
    with pytest.raises(ConfigError, match="priors"):
        fit_em(GaussianMixture(K, D, priors=True), x, progress=False)

    class Continuous(PyroModule):
        def __init__(self):
            super().__init__()
            self.loc = PyroParam(torch.zeros(()))

        def forward(self, x):
            import pyro
            import pyro.distributions as dist

            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(self.loc, 1.0))
                pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).expand([x.shape[0], 2]).to_event(1), obs=x)

    with pytest.raises(ConfigError, match="discrete and enumerable"):
        fit_em(Continuous(), x, progress=False)
