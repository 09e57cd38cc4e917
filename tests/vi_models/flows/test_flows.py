"""Tests of vi_models.flows and guides.flow_encoder: change of variables (T22), affine coupling
(T23) against hand computations and autograd, the flow prior and the flow posterior of the VAE.

The shared density contract (shapes, seeds, gradients, save/load, integrating to 1) lives in
test_density_contract.py.
"""

from __future__ import annotations

import functools

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from guides import GaussianEncoder
from guides.flow_encoder import FlowEncoder
from inference import fit
from vi_models.errors import ConfigError, DataError
from vi_models.flows.models import MAF, NormalizingFlow, RealNVP, SplineFlow
from vi_models.flows.prior_vae import FlowPriorVAE
from vi_models.vae.vae import DATA_PLATE, LATENT

DIM = 3  # odd: the coupling halves differ in size

FLOWS = {
    "realnvp": lambda: RealNVP(DIM, 3, (16,), dtype=torch.float64),
    "realnvp-random-perm": lambda: RealNVP(DIM, 3, (16,), permutation="random", dtype=torch.float64),
    "spline": lambda: SplineFlow(DIM, 2, (16,), count_bins=5, dtype=torch.float64),
    "maf": lambda: MAF(DIM, 2, (16,), dtype=torch.float64),
    "realnvp-unit": lambda: RealNVP(DIM, 2, (16,), domain="unit", dtype=torch.float64),
}


@torch.no_grad()
def make_flow(name: str, seed: int = 0) -> NormalizingFlow:
    torch.manual_seed(seed)
    flow = FLOWS[name]()
    for p in flow.parameters():  # off the near-identity start: a non-trivial bijection
        p.add_(0.1 * torch.randn_like(p))
    return flow


def base_points(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def autograd_log_det(fn, points: torch.Tensor) -> torch.Tensor:
    """log|det d fn / d u| at each row of ``points``, from the full autograd Jacobian."""
    out = []
    for u in points:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0)).squeeze(0), u)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


# ---------------------------------------------------------------------- T23: affine coupling


@pytest.mark.theory("T23")
def test_affine_coupling_matches_the_formula() -> None:
    flow = make_flow("realnvp")
    layer = flow.layers[0]  # the AffineCoupling (the permutation is a separate step)
    x = base_points()
    d = DIM // 2
    t, s = layer.nn(x[:, :d])  # hypernetwork outputs (t(x_{1:d}), s(x_{1:d})), s within [-5, 3]
    s = s.clamp(-5, 3)
    y = layer(x)
    torch.testing.assert_close(y[:, :d], x[:, :d])  # y_{1:d} = x_{1:d}
    torch.testing.assert_close(y[:, d:], x[:, d:] * torch.exp(s) + t)  # y_{d+1:D} = x * exp(s) + t
    y = y.clone()  # a fresh tensor: no cached inverse
    torch.testing.assert_close(layer.inv(y)[:, d:], (y[:, d:] - t) * torch.exp(-s))  # inverse formula
    torch.testing.assert_close(layer.log_abs_det_jacobian(x, layer(x)), s.sum(-1))  # log|det| = sum s
    torch.testing.assert_close(autograd_log_det(layer, x), s.sum(-1))  # triangular Jacobian


# ---------------------------------------------------------------------- T22: change of variables


@pytest.mark.theory("T22")
@pytest.mark.parametrize("name", list(FLOWS))
def test_log_det_equals_autograd_jacobian(name: str) -> None:
    flow = make_flow(name)
    z = base_points()
    f = flow.transform()
    x = f(z)
    torch.testing.assert_close(f.log_abs_det_jacobian(z, x), autograd_log_det(flow.transform(), z))


@pytest.mark.theory("T22")
@pytest.mark.parametrize("name", list(FLOWS))
def test_inverse_round_trips(name: str) -> None:
    flow = make_flow(name)
    z = base_points(64)
    x = flow.transform()(z)
    # Fresh transforms and cloned tensors: the inverse is computed, not read from a cache.
    torch.testing.assert_close(flow.transform().inv(x.clone()), z, atol=1e-9, rtol=1e-9)
    x2 = flow.sample(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flow.transform()(flow.transform().inv(x2.clone())), x2, atol=1e-9, rtol=1e-9)


@pytest.mark.theory("T22")
@pytest.mark.parametrize("name", list(FLOWS))
def test_log_prob_is_base_density_minus_log_det(name: str) -> None:
    """log p(x) = log N(f^-1(x); 0, I) - log|det df/dz| at z = f^-1(x), Jacobian by autograd."""
    flow = make_flow(name)
    x = flow.sample(8, generator=torch.Generator().manual_seed(1))
    z = flow.transform().inv(x.clone())
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    expected = base - autograd_log_det(flow.transform(), z)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_no_stale_cached_inverse_after_a_parameter_update() -> None:
    flow = make_flow("realnvp")
    x = base_points(16)
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    first = flow.log_prob(x)
    (-first.mean()).backward()
    opt.step()
    torch.testing.assert_close(flow.log_prob(x), flow.log_prob(x.clone()))  # same object, fresh value
    assert not torch.allclose(flow.log_prob(x), first)


def test_initialize_standardises_the_data() -> None:
    torch.manual_seed(0)
    flow = RealNVP(2, 2, (8,), dtype=torch.float64)  # near-identity couplings
    data = torch.randn(2000, 2, dtype=torch.float64) * torch.tensor([3.0, 0.5], dtype=torch.float64) + 4.0
    flow.initialize(data)
    u = flow.actnorm.inv(data.clone())
    torch.testing.assert_close(u.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(u.std(0), torch.ones(2, dtype=torch.float64), atol=1e-10, rtol=0)
    with torch.no_grad():
        assert flow.log_prob(data).mean() > RealNVP(2, 2, (8,), dtype=torch.float64).log_prob(data).mean()


def test_flow_validation_errors() -> None:
    with pytest.raises(ConfigError, match="dim"):
        RealNVP(1)
    with pytest.raises(ConfigError, match="domain"):
        SplineFlow(2, domain="positive")
    with pytest.raises(ConfigError, match="alpha"):
        RealNVP(2, domain="unit", alpha=0.5)
    with pytest.raises(ConfigError, match="hidden width"):
        MAF(4, hidden_dims=(3,))
    with pytest.raises(ConfigError, match="permutation"):
        RealNVP(2, permutation="shuffle")
    flow = RealNVP(2, 2, (8,), domain="unit")
    with pytest.raises(DataError, match=r"in \[0, 1\)"):
        flow.log_prob(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(DataError, match="at least 2 rows"):
        flow.initialize(torch.rand(1, 2))


# ---------------------------------------------------------------------- the flow prior


def test_flow_prior_vae() -> None:
    torch.manual_seed(0)
    vae = FlowPriorVAE(6, 2, (8,), flow_layers=2, flow_hidden_dims=(8,), dtype=torch.float64)
    guide = GaussianEncoder(6, 2, (8,), dtype=torch.float64)
    z = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(vae.prior().log_prob(z), vae.prior_flow.log_prob(z))
    x = torch.randn(4, 6, dtype=torch.float64)
    # No analytic KL against a flow: TraceMeanField_ELBO falls back to the Monte-Carlo term.
    pyro.set_rng_seed(0)
    elbo = Trace_ELBO().differentiable_loss(vae, guide, x)
    pyro.set_rng_seed(0)
    meanfield = TraceMeanField_ELBO().differentiable_loss(vae, guide, x)
    torch.testing.assert_close(elbo, meanfield)
    elbo.backward()
    assert all(p.grad is not None for p in vae.prior_flow.parameters())
    g = lambda: torch.Generator().manual_seed(0)
    assert vae.sample(3).shape == (3, 6)
    torch.testing.assert_close(vae.sample(3, generator=g()), vae.sample(3, generator=g()))
    result = fit(vae, guide, x.repeat(8, 1), epochs=3, batch_size=16, lr=1e-2, seed=0, progress=False, check_convergence=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    with pytest.raises(ConfigError, match="prior_flow"):
        FlowPriorVAE(6, 3, (8,), prior_flow=RealNVP(2, 1, (4,)))
    with pytest.raises(ConfigError, match="z_dim >= 2"):
        FlowPriorVAE(6, 1, (8,))


# ---------------------------------------------------------------------- the flow posterior

ENCODERS = [("iaf", True), ("iaf", False), ("coupling", True), ("coupling", False)]


@pytest.mark.theory("T22")
@pytest.mark.parametrize("flow,conditional", ENCODERS)
def test_flow_encoder_density_is_change_of_variables(flow: str, conditional: bool) -> None:
    torch.manual_seed(0)
    guide = FlowEncoder(5, 3, (8,), 2, (8,), flow=flow, conditional=conditional, dtype=torch.float64)
    with torch.no_grad():
        for p in guide.flows.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 5, dtype=torch.float64)
    tr = poutine.trace(guide).get_trace(x)
    site = tr.nodes[LATENT]
    assert site["value"].shape == (4, 3) and [f.name for f in site["cond_indep_stack"]] == [DATA_PLATE]
    loc, scale = guide.base_encoder.encode(x)
    z0 = loc + scale * torch.randn(4, 3, dtype=torch.float64)
    expected = []
    for i in range(4):
        fn = functools.partial(_push, guide, x[i : i + 1])
        base = torch.distributions.Normal(loc[i], scale[i]).log_prob(z0[i]).sum()
        expected.append(base - autograd_log_det(fn, z0[i : i + 1])[0])
    zk = torch.cat([_push(guide, x[i : i + 1], z0[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(guide.distribution(x).log_prob(zk.clone()), torch.stack(expected))
    assert guide.encode(x)[0].shape == (4, 3)


def _push(guide: FlowEncoder, x: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    for t in guide.transforms(x):
        z0 = t(z0)
    return z0


@pytest.mark.parametrize("loss", ["elbo", "iwae"])
def test_flow_encoder_fits_a_vae(loss: str) -> None:
    from vi_models import VAE

    torch.manual_seed(0)
    x = (torch.randint(0, 5, (64, 6)) + torch.rand(64, 6)) / 5
    vae = VAE(6, 2, (8,), likelihood="categorical", num_levels=5)
    guide = FlowEncoder(6, 2, (8,), 2, (8,), num_levels=5)
    result = fit(vae, guide, x, loss=loss, num_particles=3, epochs=4, batch_size=32, lr=1e-2, seed=0,
                 progress=False, check_convergence=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    pyro.set_rng_seed(0)
    elbo = Trace_ELBO().loss(vae, guide, x)
    pyro.set_rng_seed(0)
    assert TraceMeanField_ELBO().loss(vae, guide, x) == pytest.approx(elbo)


def test_flow_encoder_validation_errors() -> None:
    with pytest.raises(ConfigError, match="z_dim >= 2"):
        FlowEncoder(6, 1)
    with pytest.raises(ConfigError, match="flow_hidden_dims"):
        FlowEncoder(6, 4, flow_hidden_dims=(3,))
    with pytest.raises(ConfigError, match="flow"):
        FlowEncoder(6, 2, flow="planar")
    guide = FlowEncoder(6, 2, (8,), 1, (8,), num_levels=5)
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        guide(torch.full((2, 6), 2.0))


# ---------------------------------------------------------------------- the mixture base


def _mixture_log_prob(flow: NormalizingFlow, z: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k prod_j N(z_j; mu_kj, sigma_kj^2), written out from the base's parameters."""
    base = flow.base_mixture
    log_w = torch.log_softmax(base.logits, 0)
    comp = torch.distributions.Normal(base.means, base.log_scales.exp()).log_prob(z.unsqueeze(-2)).sum(-1)
    return torch.logsumexp(log_w + comp, -1)


@pytest.mark.theory("T22")
@pytest.mark.parametrize("cls", [RealNVP, SplineFlow, MAF])
def test_mixture_base_log_prob_is_change_of_variables(cls) -> None:
    """log p(x) = log p_0(f^-1(x)) - log|det df/dz| with the mixture density written out by hand."""
    torch.manual_seed(0)
    flow = cls(DIM, 2, (16,), base="mixture", num_components=4, dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = flow.sample(8, generator=torch.Generator().manual_seed(1))
    z = flow.transform().inv(x.clone())
    expected = _mixture_log_prob(flow, z) - autograd_log_det(flow.transform(), z)
    torch.testing.assert_close(flow.log_prob(x), expected)
    # every parameter of the base gets a gradient
    flow.log_prob(x).sum().backward()
    base = flow.base_mixture
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in (base.logits, base.means, base.log_scales))


def test_mixture_base_initialize_starts_from_the_em_fit() -> None:
    """After inference.initialize_flow, the flow's density is the diagonal mixture EM finds for the standardised
    data (checked against scikit-learn's GaussianMixture on the same points), and its samples
    have that mixture's mean."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from inference import initialize_flow

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 1.0], [0.0, 6.0]], dtype=torch.float64)
    scales = torch.tensor([[0.5, 1.0], [1.0, 0.3], [0.7, 0.7]], dtype=torch.float64)
    k = torch.randint(0, 3, (3000,), generator=gen)
    x = centres[k] + scales[k] * torch.randn(3000, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    flow = initialize_flow(SplineFlow(2, 2, (16,), base="mixture", num_components=3, dtype=torch.float64), x)
    u = flow.transform().inv(x.clone()).detach()  # the data in base space
    sk = SkGaussianMixture(3, covariance_type="diag", random_state=0, tol=1e-10, max_iter=1000).fit(u.numpy())
    with torch.no_grad():
        ours = flow.log_prob(x)
        change_of_variables = ours - flow.base().log_prob(u)  # -log|det df/dz|: ActNorm and near-identity layers
    expected = torch.from_numpy(sk.score_samples(u.numpy())) + change_of_variables
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert float(change_of_variables.std()) < 0.05  # the layers start close to the identity
    samples = flow.sample(200_000, generator=torch.Generator().manual_seed(1))
    mean_u = torch.from_numpy(sk.weights_ @ sk.means_)
    expected_mean = flow.transform()(mean_u.unsqueeze(0)).squeeze(0).detach()
    torch.testing.assert_close(samples.mean(0), expected_mean, atol=0.03, rtol=0)
    torch.testing.assert_close(flow.sample(5, generator=torch.Generator().manual_seed(2)),
                               flow.sample(5, generator=torch.Generator().manual_seed(2)))


def test_mixture_base_validation_errors() -> None:
    with pytest.raises(ConfigError, match="base"):
        SplineFlow(2, base="student")
    with pytest.raises(ConfigError, match="num_components"):
        RealNVP(2, base="mixture", num_components=0)
