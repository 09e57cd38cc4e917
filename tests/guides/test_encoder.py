"""Tests of guides.encoder: q_phi(z | x) shapes and constraints, the registered analytic KL
(THEORY T4) and its use by TraceMeanField_ELBO."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from guides import GaussianEncoder
from vi_models import LATENT, OBSERVED, VAE
from vi_models.errors import ConfigError, DataError

F64 = torch.float64


@pytest.fixture(autouse=True)
def _pyro_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def random_tril(*batch: int, d: int) -> torch.Tensor:
    """Random lower-triangular factors with positive diagonal, shape (*batch, d, d)."""
    tril = torch.randn(*batch, d, d, dtype=F64).tril(-1)
    return tril + torch.diag_embed(torch.rand(*batch, d, dtype=F64) + 0.3)


# --------------------------------------------------------------------------- q(z | x)


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("encoder,x_dim,image_shape", [("mlp", (2, 3), None), ("conv", 64, (8, 8))])
def test_encode_shapes_and_constraints(covariance: str, encoder: str, x_dim, image_shape) -> None:
    guide = GaussianEncoder(
        x_dim, 4, hidden_dims=(8,), covariance=covariance, encoder=encoder, image_shape=image_shape,
        dtype=F64, conv_channels=(3,),
    )
    x = torch.randn(5, *guide.data_shape, dtype=F64)
    loc, scale = guide.encode(x)
    assert loc.shape == (5, 4)
    if covariance == "diag":
        assert scale.shape == (5, 4) and (scale > 0).all()
        assert isinstance(guide.distribution(x), Independent)
    else:
        assert scale.shape == (5, 4, 4)
        assert torch.equal(scale, scale.tril()) and (scale.diagonal(dim1=-2, dim2=-1) > 0).all()
        assert (scale.tril(-1) != 0).any()  # a genuinely full covariance
        assert isinstance(guide.distribution(x), MultivariateNormal)
    q = guide.distribution(x)
    assert q.batch_shape == (5,) and q.event_shape == (4,) and q.has_rsample
    z = guide(x)
    assert z.shape == (5, 4)


def test_full_covariance_with_one_latent() -> None:
    guide = GaussianEncoder(3, 1, hidden_dims=(8,), covariance="full")
    loc, tril = guide.encode(torch.randn(2, 3))
    assert loc.shape == (2, 1) and tril.shape == (2, 1, 1) and (tril > 0).all()


def test_num_levels_feeds_bin_centres() -> None:
    # Two dequantisations of the same levels k give the same q(z | x) when num_levels is set.
    k = torch.randint(0, 17, (3, 6)).to(F64)
    x1, x2 = (k + 0.1) / 17, (k + 0.9) / 17
    quantised = GaussianEncoder(6, 2, hidden_dims=(8,), num_levels=17, dtype=F64)
    raw = GaussianEncoder(6, 2, hidden_dims=(8,), dtype=F64)
    for a, b in zip(quantised.encode(x1), quantised.encode(x2)):
        assert torch.equal(a, b)
    assert not torch.equal(raw.encode(x1)[0], raw.encode(x2)[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"covariance": "lowrank"}, "expected covariance to be one of 'diag', 'full'"),
        ({"encoder": "conv"}, r"encoder='conv' needs one-channel images.*image_shape=\(8, 8\)"),
        ({"encoder": "rnn"}, "expected encoder to be one of"),
        ({"num_levels": 1}, "expected num_levels to be an integer >= 2"),
        ({"z_dim": 0}, "expected z_dim"),
        ({"activation": 3}, "expected activation as a zero-argument callable"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GaussianEncoder(**{"x_dim": 64, "z_dim": 2, **kwargs})


def test_data_errors() -> None:
    guide = GaussianEncoder((8, 8), 2, hidden_dims=(8,), num_levels=17)
    with pytest.raises(DataError, match=r"expected x of shape \(B, 8, 8\), got \(3, 64\)"):
        guide(torch.rand(3, 64))
    with pytest.raises(DataError, match=r"expected dequantised x in \[0, 1\).*num_levels=None"):
        guide(torch.full((3, 8, 8), 2.0))


# --------------------------------------------------------------------------- analytic KL


@pytest.mark.theory("T4")
@pytest.mark.parametrize("p_batch,q_batch", [((), ()), ((4,), ()), ((3, 1), (2,)), ((2,), (2,))])
def test_registered_kl_matches_closed_form(p_batch: tuple, q_batch: tuple) -> None:
    d = 3
    p = MultivariateNormal(torch.randn(*p_batch, d, dtype=F64), scale_tril=random_tril(*p_batch, d=d))
    s1 = torch.rand(*q_batch, d, dtype=F64) + 0.5
    m1 = torch.randn(*q_batch, d, dtype=F64)
    q = Independent(Normal(m1, s1), 1)
    got = kl_divergence(p, q)
    # Independent reference: torch's KL between two MultivariateNormals, S1 = diag(s1^2).
    expected = kl_divergence(p, MultivariateNormal(m1, scale_tril=torch.diag_embed(s1)))
    assert got.shape == torch.broadcast_shapes(p_batch, q_batch)
    torch.testing.assert_close(got, expected)


@pytest.mark.theory("T4")
def test_registered_kl_isotropic_formula() -> None:
    # q = N(mu, s^2 I) against N(0, I): 1/2 (d s^2 - d + ||mu||^2 - 2 d log s).
    d, s = 4, 0.7
    mu = torch.randn(d, dtype=F64)
    p = MultivariateNormal(mu, scale_tril=s * torch.eye(d, dtype=F64))
    prior = Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)
    expected = 0.5 * (d * s**2 - d + mu.pow(2).sum() - 2 * d * math.log(s))
    torch.testing.assert_close(kl_divergence(p, prior), expected)


def test_kl_falls_back_for_other_independents() -> None:
    p = MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2))
    with pytest.raises(NotImplementedError):
        kl_divergence(p, Independent(torch.distributions.Laplace(torch.zeros(2), torch.ones(2)), 1))


def _pair(covariance: str) -> tuple[VAE, GaussianEncoder]:
    model = VAE(5, 3, hidden_dims=(8,), dtype=F64)
    guide = GaussianEncoder(5, 3, hidden_dims=(8,), covariance=covariance, dtype=F64)
    with torch.no_grad():  # widen the off-diagonal of L so a wrong KL term would show
        guide.encoder_net.layers[-1].bias[6:] += 1.0
    return model, guide


@pytest.mark.theory("T4")
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_meanfield_uses_the_analytic_kl(covariance: str) -> None:
    # Pyro's TraceMeanField_ELBO calls kl_divergence(guide_site.fn, model_site.fn) on the
    # sites' own (plate-expanded) distributions: it must dispatch, also under vectorised particles.
    model, guide = _pair(covariance)
    x = torch.randn(4, 5, dtype=F64)
    with pyro.plate("particles", 7, dim=-2):
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    q, p = guide_tr.nodes[LATENT]["fn"], model_tr.nodes[LATENT]["fn"]
    loc, scale = guide.encode(x)
    tril = torch.diag_embed(scale) if covariance == "diag" else scale
    expected = kl_divergence(MultivariateNormal(loc, scale_tril=tril), MultivariateNormal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)))
    torch.testing.assert_close(kl_divergence(q, p), expected.expand(7, 4))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_meanfield_elbo_equals_trace_elbo_in_expectation(covariance: str) -> None:
    # E_q[log p(x|z) + log p(z) - log q(z|x)] (Trace_ELBO) equals E_q[log p(x|z)] - KL
    # (TraceMeanField_ELBO, analytic KL): check within Monte Carlo error.
    model, guide = _pair(covariance)
    x = torch.randn(4, 5, dtype=F64)
    n = 20_000
    kw = {"num_particles": n, "vectorize_particles": True, "max_plate_nesting": 1}
    with torch.no_grad():
        meanfield = TraceMeanField_ELBO(**kw).loss(model, guide, x)
        trace = Trace_ELBO(**kw).loss(model, guide, x)
        # Per-particle integrands, for the standard errors of both estimates.
        with pyro.plate("particles", n, dim=-2):
            guide_tr = poutine.trace(guide).get_trace(x)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
        guide_tr.compute_log_prob()
        model_tr.compute_log_prob()
        log_lik = model_tr.nodes[OBSERVED]["log_prob"].sum(-1)  # (n,)
        log_ratio = (model_tr.nodes[LATENT]["log_prob"] - guide_tr.nodes[LATENT]["log_prob"]).sum(-1)
        kl = kl_divergence(guide.distribution(x), model.prior()).sum()
    se = math.sqrt(((log_lik + log_ratio).var() + log_lik.var()) / n)
    assert abs(meanfield - trace) < 4 * se
    # The check has teeth: the KL is large compared with the Monte Carlo error.
    assert kl > 20 * se
    # The two estimators share the reconstruction term; the MC KL matches the analytic one.
    assert abs(-log_ratio.mean() - kl) < 4 * math.sqrt(log_ratio.var() / n)
