"""Tests of vi_models.vae: the model/guide contract over every configuration, closed-form
log-likelihoods, generation helpers and input validation."""

from __future__ import annotations

import io
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from scipy import stats

from guides import GaussianEncoder
from vi_models import DATA_PLATE, LATENT, OBSERVED, VAE
from vi_models.errors import ConfigError, DataError

LIKELIHOODS = ("gaussian", "bernoulli", "categorical")
COVARIANCES = ("diag", "full")
# (network, x_dim, image_shape): flat data through MLPs, image data and flat data viewed as
# images through the convolutional networks.
LAYOUTS = {
    "mlp-flat": ("mlp", 6, None),
    "conv-image": ("conv", (8, 8), None),
    "conv-flat": ("conv", 64, (8, 8)),
}
Z_DIM = 3
LEVELS = 5
B = 4


@pytest.fixture(autouse=True)
def _pyro_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def make_pair(
    likelihood: str, layout: str, covariance: str = "diag", dtype: torch.dtype = torch.float64
) -> tuple[VAE, GaussianEncoder]:
    network, x_dim, image_shape = LAYOUTS[layout]
    small = {"hidden_dims": (8,), "image_shape": image_shape, "dtype": dtype, "conv_channels": (3, 3)}
    model = VAE(x_dim, Z_DIM, likelihood=likelihood, num_levels=LEVELS, decoder=network, **small)
    guide = GaussianEncoder(
        x_dim,
        Z_DIM,
        covariance=covariance,
        encoder=network,
        num_levels=LEVELS if likelihood == "categorical" else None,
        **small,
    )
    return model, guide


def make_data(model: VAE, n: int = B, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    shape = (n, *model.data_shape)
    if model.likelihood == "gaussian":
        return torch.randn(shape, dtype=dtype)
    if model.likelihood == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.5, dtype=dtype))
    return (torch.randint(0, model.num_levels, shape).to(dtype) + torch.rand(shape, dtype=dtype)) / model.num_levels


def traces(model: VAE, guide: GaussianEncoder, x: torch.Tensor) -> tuple[poutine.Trace, poutine.Trace]:
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    return model_tr, guide_tr


CONTRACT = pytest.mark.parametrize(
    "likelihood,layout,covariance",
    [(lik, lay, cov) for lik in LIKELIHOODS for lay in LAYOUTS for cov in COVARIANCES],
)


# --------------------------------------------------------------------------- contract


@CONTRACT
def test_trace_shapes(likelihood: str, layout: str, covariance: str) -> None:
    model, guide = make_pair(likelihood, layout, covariance)
    x = make_data(model)
    model_tr, guide_tr = traces(model, guide, x)
    for tr in (model_tr, guide_tr):
        z = tr.nodes[LATENT]
        assert z["fn"].batch_shape == (B,) and z["fn"].event_shape == (Z_DIM,)
        assert z["value"].shape == (B, Z_DIM) and z["log_prob"].shape == (B,)
        assert [f.name for f in z["cond_indep_stack"]] == [DATA_PLATE]
    obs = model_tr.nodes[OBSERVED]
    assert obs["is_observed"]
    assert obs["fn"].batch_shape == (B,) and obs["fn"].event_shape == model.data_shape
    assert obs["log_prob"].shape == (B,)
    assert model.event_dim == len(model.data_shape)
    assert model.is_discrete == (likelihood != "gaussian")


@CONTRACT
def test_vectorised_particles(likelihood: str, layout: str, covariance: str) -> None:
    model, guide = make_pair(likelihood, layout, covariance)
    x = make_data(model)
    with pyro.plate("particles", 7, dim=-2):
        model_tr, guide_tr = traces(model, guide, x)
    assert guide_tr.nodes[LATENT]["value"].shape == (7, B, Z_DIM)
    for tr, site in ((guide_tr, LATENT), (model_tr, LATENT), (model_tr, OBSERVED)):
        assert tr.nodes[site]["log_prob"].shape == (7, B)
    # Each particle is an independent draw: the same x, different z.
    assert not torch.allclose(guide_tr.nodes[LATENT]["value"][0], guide_tr.nodes[LATENT]["value"][1])
    # The vectorised IWAE bound runs through the same path.
    iwae = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(iwae.loss(model, guide, x))


@CONTRACT
def test_gradients_reach_every_parameter(likelihood: str, layout: str, covariance: str) -> None:
    model, guide = make_pair(likelihood, layout, covariance)
    x = make_data(model)
    Trace_ELBO().differentiable_loss(model, guide, x).backward()
    for label, module in (("model", model), ("guide", guide)):
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{label}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{label}.{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{label}.{name} has an all-zero gradient"


@CONTRACT
def test_meanfield_elbo_runs(likelihood: str, layout: str, covariance: str) -> None:
    # The analytic-KL estimator must find a KL for both covariances (see also the
    # Monte Carlo check in tests/guides/test_encoder.py).
    model, guide = make_pair(likelihood, layout, covariance)
    x = make_data(model)
    model_tr, guide_tr = traces(model, guide, x)
    kl = torch.distributions.kl_divergence(guide_tr.nodes[LATENT]["fn"], model_tr.nodes[LATENT]["fn"])
    assert kl.shape == (B,) and (kl > 0).all()
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    assert torch.isfinite(loss)
    loss.backward()


@CONTRACT
def test_seeded_reproducibility(likelihood: str, layout: str, covariance: str) -> None:
    def run() -> tuple[float, torch.Tensor]:
        pyro.set_rng_seed(11)
        model, guide = make_pair(likelihood, layout, covariance)
        x = make_data(model)
        return Trace_ELBO().loss(model, guide, x), model.sample(3)

    loss_a, sample_a = run()
    loss_b, sample_b = run()
    assert loss_a == loss_b
    assert torch.equal(sample_a, sample_b)


@CONTRACT
def test_state_dict_round_trip(likelihood: str, layout: str, covariance: str) -> None:
    pyro.set_rng_seed(1)
    model_a, guide_a = make_pair(likelihood, layout, covariance)
    if likelihood == "gaussian":  # move the learned scale away from its initial value
        with torch.no_grad():
            model_a.scale_raw.add_(torch.randn_like(model_a.scale_raw))
    pyro.set_rng_seed(2)
    model_b, guide_b = make_pair(likelihood, layout, covariance)
    x = make_data(model_a)
    for a, b in ((model_a, model_b), (guide_a, guide_b)):
        buffer = io.BytesIO()
        torch.save(a.state_dict(), buffer)
        buffer.seek(0)
        b.load_state_dict(torch.load(buffer))
    for out_a, out_b in zip(guide_a.encode(x), guide_b.encode(x)):
        assert torch.equal(out_a, out_b)
    z = torch.randn(5, Z_DIM, dtype=torch.float64)
    value = model_a.decode(z).sample()
    assert torch.equal(model_a.decode(z).log_prob(value), model_b.decode(z).log_prob(value))
    losses = []
    for model, guide in ((model_a, guide_a), (model_b, guide_b)):
        pyro.set_rng_seed(5)
        losses.append(Trace_ELBO().loss(model, guide, x))
    assert losses[0] == losses[1]


@CONTRACT
def test_to_float64(likelihood: str, layout: str, covariance: str) -> None:
    model, guide = make_pair(likelihood, layout, covariance, dtype=torch.float32)
    x = make_data(model, dtype=torch.float64)
    with pytest.raises(DataError, match="dtype"):
        model(x)
    model, guide = model.to(torch.float64), guide.to(torch.float64)
    model_tr, guide_tr = traces(model, guide, x)
    assert guide_tr.nodes[LATENT]["value"].dtype == torch.float64
    assert model_tr.nodes[OBSERVED]["log_prob"].dtype == torch.float64
    assert model.sample(2).dtype == torch.float64
    assert math.isfinite(TraceMeanField_ELBO().loss(model, guide, x))


# --------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("network,x_dim,image_shape", [("mlp", (2, 3), None), ("conv", 64, (8, 8))])
def test_categorical_log_prob_matches_naive_loop(network: str, x_dim, image_shape) -> None:
    model = VAE(
        x_dim, Z_DIM, hidden_dims=(8,), likelihood="categorical", num_levels=LEVELS,
        decoder=network, image_shape=image_shape, dtype=torch.float64, conv_channels=(3,),
    )
    x = make_data(model, n=3)
    z = torch.randn(3, Z_DIM, dtype=torch.float64)
    tr = poutine.trace(poutine.condition(model, data={LATENT: z})).get_trace(x)
    tr.compute_log_prob()
    got = tr.nodes[OBSERVED]["log_prob"]  # (3,)

    raw = model.decoder_net(z).detach()
    # Documented layouts: the MLP emits (D, L) per observation (row-major over data_shape);
    # the convolutional decoder emits L maps of (H, W).
    logits = raw.reshape(3, -1, LEVELS) if network == "mlp" else raw.reshape(3, LEVELS, -1).transpose(1, 2)
    flat_x = x.reshape(3, -1)
    expected = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for j in range(flat_x.shape[1]):
            k = min(int(math.floor(float(flat_x[b, j]) * LEVELS)), LEVELS - 1)
            expected[b] += torch.log_softmax(logits[b, j], dim=0)[k]
    torch.testing.assert_close(got, expected)


def test_gaussian_log_prob_matches_scipy() -> None:
    model = VAE((2, 3), Z_DIM, hidden_dims=(8,), dtype=torch.float64)
    with torch.no_grad():
        model.scale_raw.copy_(torch.randn(2, 3))
    x, z = make_data(model, n=3), torch.randn(3, Z_DIM, dtype=torch.float64)
    got = model.decode(z).log_prob(x).detach()
    mu = model.decoder_net(z).detach().reshape(3, 2, 3).numpy()
    sigma = (np.log1p(np.exp(model.scale_raw.detach().numpy())) + 1e-3)[None]
    expected = stats.norm.logpdf(x.numpy(), mu, sigma).sum(axis=(1, 2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_fixed_gaussian_scale_and_floor() -> None:
    model = VAE(4, Z_DIM, hidden_dims=(8,), decoder_scale=0.3, dtype=torch.float64)
    assert not any("scale" in name for name, _ in model.named_parameters())
    z = torch.randn(2, Z_DIM, dtype=torch.float64)
    torch.testing.assert_close(model.decode(z).base_dist.scale, torch.full((2, 4), 0.3, dtype=torch.float64))
    assert model.to(torch.float32).scale.dtype == torch.float32
    learned = VAE(4, Z_DIM, hidden_dims=(8,))
    torch.testing.assert_close(learned.scale, torch.ones(4))  # initialised at 1
    with torch.no_grad():
        learned.scale_raw.fill_(-1e4)
    assert (learned.scale >= 1e-3).all()


def test_bernoulli_log_prob_matches_closed_form() -> None:
    model = VAE(5, Z_DIM, hidden_dims=(8,), likelihood="bernoulli", dtype=torch.float64)
    x, z = make_data(model, n=3), torch.randn(3, Z_DIM, dtype=torch.float64)
    p = torch.sigmoid(model.decoder_net(z)).detach()
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(model.decode(z).log_prob(x).detach(), expected)


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sample_reconstruct_interpolate(likelihood: str) -> None:
    model, guide = make_pair(likelihood, "conv-image")
    x = make_data(model)
    draws, means = model.sample(6), model.sample(6, mean=True)
    recon, recon_draw = model.reconstruct(x, guide), model.reconstruct(x, guide, mean=False)
    path = model.interpolate(x[0], x[1], guide, steps=5)
    assert draws.shape == means.shape == (6, 8, 8)
    assert recon.shape == recon_draw.shape == x.shape and path.shape == (5, 8, 8)
    assert not any(t.requires_grad for t in (draws, recon, path))
    if likelihood == "bernoulli":
        assert set(draws.unique().tolist()) <= {0.0, 1.0} and ((means > 0) & (means < 1)).all()
    if likelihood == "categorical":
        centres = (torch.arange(LEVELS, dtype=torch.float64) + 0.5) / LEVELS
        assert torch.isin(draws, centres).all() and torch.isin(recon_draw, centres).all()
        assert ((means > 0) & (means < 1)).all()
    # The endpoints of the path are the reconstructions of x_a and x_b.
    torch.testing.assert_close(path[[0, -1]], recon[:2])
    # The prior predictive through the model itself.
    prior_x = model(num_samples=3)
    assert prior_x.shape == (3, 8, 8)


def test_sample_generator_reproducible() -> None:
    model = VAE(6, Z_DIM, hidden_dims=(8,), likelihood="categorical", num_levels=LEVELS)
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_does_not_mutate_input() -> None:
    model, guide = make_pair("categorical", "mlp-flat")
    x = make_data(model)
    before = x.clone()
    Trace_ELBO().loss(model, guide, x)
    model.reconstruct(x, guide)
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"likelihood": "poisson"}, "expected likelihood to be one of"),
        ({"z_dim": 0}, "expected z_dim to be an integer >= 1"),
        ({"decoder": "conv"}, r"image_shape=\(8, 8\)"),
        ({"decoder": "resnet"}, "expected decoder to be one of"),
        ({"decoder_scale": 0.0}, "expected decoder_scale to be a float > 0 or 'learned'"),
        ({"decoder_scale": -1.0}, "expected decoder_scale"),
        ({"decoder_scale": "fixed"}, "expected decoder_scale"),
        ({"num_levels": 1}, "expected num_levels to be an integer >= 2"),
        ({"image_shape": (7, 7)}, "expected image_shape with H \\* W = 64"),
        ({"x_dim": 0}, "expected x_dim"),
        ({"hidden_dims": 32}, r"wrap a single size in a tuple"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    args = {"x_dim": 64, "z_dim": 2, **kwargs}
    with pytest.raises(ConfigError, match=match) as info:
        VAE(**args)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "likelihood,x,match",
    [
        ("gaussian", torch.zeros(4, 64), r"expected x of shape \(B, 8, 8\), got \(4, 64\); reshape it"),
        ("gaussian", torch.zeros(8, 8), r"add the batch dimension with x.unsqueeze\(0\)"),
        ("gaussian", torch.zeros(0, 8, 8), "non-empty"),
        ("gaussian", torch.zeros(2, 8, 8, dtype=torch.float64), "convert it with x.to"),
        ("gaussian", torch.zeros(2, 8, 8, dtype=torch.long), "expected floating-point x"),
        ("gaussian", torch.full((2, 8, 8), float("nan")), "finite"),
        ("gaussian", [[0.0]], "torch.Tensor"),
        ("bernoulli", torch.full((2, 8, 8), 0.5), r"expected binary x in \{0, 1\}.*binarise"),
        ("categorical", torch.ones(2, 8, 8), r"expected dequantised x in \[0, 1\)"),
        ("categorical", -0.1 * torch.ones(2, 8, 8), r"\(k \+ u\) / num_levels"),
    ],
)
def test_data_errors(likelihood: str, x, match: str) -> None:
    model = VAE((8, 8), 2, hidden_dims=(8,), likelihood=likelihood, dtype=torch.float32)
    with pytest.raises(DataError, match=match):
        model(x)


def test_value_checks_only_under_validation() -> None:
    # Support checks cost a pass over the data: they follow pyro.enable_validation.
    model = VAE(3, 2, hidden_dims=(8,), likelihood="categorical")
    with pyro.validation_enabled(False):
        model(torch.full((2, 3), 1.5))  # clamped to the top level, no error
    with pytest.raises(DataError):
        model(torch.full((2, 3), 1.5))


def test_forward_and_decode_argument_errors() -> None:
    model, guide = make_pair("gaussian", "mlp-flat")
    with pytest.raises(ConfigError, match="got neither"):
        model()
    with pytest.raises(ConfigError, match="got both"):
        model(make_data(model), num_samples=3)
    with pytest.raises(DataError, match=r"expected z of shape \(\.\.\., 3\)"):
        model.decode(torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="z_dim=3"):
        model.reconstruct(make_data(model), GaussianEncoder(6, 2, hidden_dims=(8,), dtype=torch.float64))
    with pytest.raises(DataError, match="one observation"):
        model.interpolate(make_data(model, n=2), make_data(model, n=1), guide)
