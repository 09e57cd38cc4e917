"""GANs and f-GANs (THEORY T28-T31), against scipy quadrature and hand-written critics.

References independent of the modules under test: densities from ``scipy.stats.norm``,
divergences integrated by ``scipy.integrate.quad`` from their definitions, optimal critics
``T* = f'(p/q)`` written out here from Nowozin et al. 2016 (Table 1, Table 2) and installed
in the GAN's critic, and ``torch.nn.functional.binary_cross_entropy`` for Goodfellow's losses.
Expectations under Gaussians use deterministic quantile points ``mu + sigma Phi^{-1}((i + 1/2)/n)``
instead of random draws, so their error is a quadrature error, not Monte Carlo noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, special, stats
from torch import nn

from inference import load_dataset
from inference.divergences.adversarial import AdversarialResult, fit_adversarial, optimal_discriminator
from inference.divergences.estimators import mmd, sliced_wasserstein
from inference.engine.checkpoint import CHECKPOINT_NAME, load_modules, save_checkpoint
from vi_models.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, VIModelsError
from vi_models.gan.gan import DIVERGENCES, GAN, GENERATOR_LOSSES, NoDensityError

LOG2 = math.log(2.0)
P_R = (0.0, 1.0)  # (mean, sd) of the "data" Gaussian
P_G = (0.5, 1.3)  # the generator's Gaussian: wider, so p_r / p_g stays bounded in the tails


# ---------------------------------------------------------------------- helpers


def gaussian_gan(mean: float, sd: float, *, divergence: str = "js", hidden=(32, 32), dtype=torch.float64) -> GAN:
    """A 1-D GAN whose generator is the affine map x = sd * z + mean, so p_g = N(mean, sd^2), frozen."""
    gan = GAN(1, latent_dim=1, generator_hidden=(), discriminator_hidden=hidden, divergence=divergence, dtype=dtype)
    (layer,) = [m for m in gan.generator.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        layer.weight.fill_(sd)
        layer.bias.fill_(mean)
    gan.generator.requires_grad_(False)
    return gan


def quantile_points(mean: float, sd: float, n: int = 20_000) -> torch.Tensor:
    """n deterministic 'samples' of N(mean, sd^2), shape (n, 1), float64."""
    u = (np.arange(n) + 0.5) / n
    return torch.from_numpy(mean + sd * special.ndtri(u))[:, None]


def log_ratio_np(x, p=P_R, q=P_G):
    return stats.norm.logpdf(x, *p) - stats.norm.logpdf(x, *q)


def quad(fn, lo=-30.0, hi=30.0) -> float:
    return integrate.quad(fn, lo, hi, epsabs=1e-12, epsrel=1e-10, limit=200)[0]


def scipy_divergence(name: str, p=P_R, q=P_G) -> float:
    """The divergences by quadrature from their definitions (THEORY T30), nats."""
    dp, dq = stats.norm(*p).pdf, stats.norm(*q).pdf
    if name in ("kl", "dv_kl"):
        return quad(lambda x: dp(x) * log_ratio_np(x, p, q))
    if name == "reverse_kl":
        return quad(lambda x: -dq(x) * log_ratio_np(x, p, q))
    if name == "js":  # 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q)/2
        def integrand(x):
            m = 0.5 * (dp(x) + dq(x))
            return 0.5 * dp(x) * math.log(dp(x) / m) + 0.5 * dq(x) * math.log(dq(x) / m)
        return quad(integrand, -15.0, 15.0)
    if name == "pearson":
        return quad(lambda x: (dp(x) - dq(x)) ** 2 / dq(x))
    if name == "hellinger":
        return quad(lambda x: (math.sqrt(dp(x)) - math.sqrt(dq(x))) ** 2)
    if name == "total_variation":
        return quad(lambda x: 0.5 * abs(dp(x) - dq(x)))
    raise AssertionError(name)


# Raw outputs v* with g_f(v*) = T* = f'(p/q) (Nowozin et al. Tables 1-2), from log r = log p/q.
OPTIMAL_RAW = {
    "js": lambda log_r: log_r,  # GAN row: T = log D, D* = r / (1 + r) = sigmoid(log r)
    "kl": lambda log_r: 1.0 + log_r,  # f'(r) = 1 + log r, g(v) = v
    "reverse_kl": lambda log_r: -log_r,  # f'(r) = -1/r, g(v) = -exp(v)
    "pearson": lambda log_r: 2.0 * torch.expm1(log_r),  # f'(r) = 2 (r - 1), g(v) = v
    "hellinger": lambda log_r: -0.5 * log_r,  # f'(r) = 1 - r^(-1/2), g(v) = 1 - exp(v)
    "total_variation": lambda log_r: 40.0 * torch.sign(log_r),  # f'(r) = sign(r - 1)/2, g = tanh/2
    "dv_kl": lambda log_r: log_r + 3.0,  # T = log r + c for any c
}


class ExactCritic(nn.Module):
    """V(x) = h(log p(x) - log q(x)) for two known Gaussians: the optimal critic, in closed form."""

    def __init__(self, h, p=P_R, q=P_G) -> None:
        super().__init__()
        self.h, self.p, self.q = h, torch.distributions.Normal(*p), torch.distributions.Normal(*q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, 1)
        return self.h(self.p.log_prob(x) - self.q.log_prob(x))


def with_exact_critic(divergence: str, p=P_R, q=P_G) -> GAN:
    gan = gaussian_gan(q[0], q[1], divergence=divergence)
    gan.discriminator.net = ExactCritic(OPTIMAL_RAW[divergence], p, q)
    return gan


# ---------------------------------------------------------------------- theory


@pytest.mark.theory("T28", "T29", "T31")
@pytest.mark.parametrize("p_g", [(1.0, 0.7), (0.0, 1.0)], ids=["p_g!=p_r", "p_g=p_r"])
def test_trained_discriminator_approaches_optimum(p_g):
    """Generator fixed to N(mu, s^2): the trained D(x) -> p_r / (p_r + p_g), its value -> 2 JS - 2 log 2."""
    gan = gaussian_gan(*p_g)
    data = torch.randn(16384, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = fit_adversarial(gan, data, epochs=10, batch_size=1024, lr_d=1e-2, betas=(0.9, 0.999),
                             progress=False, seed=0)
    grid = torch.linspace(-2.0, 2.5, 91, dtype=torch.float64)[:, None]
    d_star = torch.from_numpy(stats.norm.pdf(grid.numpy(), *P_R) / (stats.norm.pdf(grid.numpy(), *P_R)
                                                                      + stats.norm.pdf(grid.numpy(), *p_g)))[:, 0]
    err = (gan.prob_real(grid).detach() - d_star).abs()
    assert float(err.max()) < 0.08 and float(err.mean()) < 0.02  # the edges of the grid see few samples

    js = scipy_divergence("js", P_R, p_g)
    value = float(gan.objective(quantile_points(*P_R), quantile_points(*p_g)).detach())
    assert value <= 2 * js - 2 * LOG2 + 1e-3  # D* maximises the value (T28) ...
    assert value == pytest.approx(2 * js - 2 * LOG2, abs=0.01)  # ... which is 2 JS - 2 log 2 (T29)
    assert result.final_divergence == pytest.approx(js, abs=0.02)
    assert result.history["g_loss"] and all(math.isfinite(v) for v in result.history["g_loss"])


@pytest.mark.theory("T28", "T29")
@pytest.mark.parametrize("p_g", [(0.5, 1.3), (2.0, 0.5), (0.0, 1.0)])
def test_value_at_optimal_discriminator_is_2js_minus_2log2(p_g):
    """int p_r log D* + p_g log(1 - D*) by quadrature equals 2 JS - 2 log 2; -2 log 2 iff p_g = p_r."""
    def integrand(x):
        d = float(optimal_discriminator(torch.tensor(stats.norm.logpdf(x, *P_R)), torch.tensor(stats.norm.logpdf(x, *p_g))))
        # Where D* rounds to 0 or 1 the other density is below 1e-16 times this one: no mass there.
        real = stats.norm.pdf(x, *P_R) * math.log(d) if d > 0 else 0.0
        fake = stats.norm.pdf(x, *p_g) * math.log1p(-d) if d < 1 else 0.0
        return real + fake

    value = quad(integrand, -12.0, 12.0)
    js = scipy_divergence("js", P_R, p_g)
    assert value == pytest.approx(2 * js - 2 * LOG2, abs=1e-7)
    if p_g == P_R:
        assert js == pytest.approx(0.0, abs=1e-10) and value == pytest.approx(-2 * LOG2, abs=1e-9)
        x = torch.linspace(-3, 3, 7, dtype=torch.float64)
        assert torch.equal(optimal_discriminator(-x**2, -x**2), torch.full_like(x, 0.5))
    else:
        assert value > -2 * LOG2 + 1e-3


@pytest.mark.theory("T29")
def test_gan_objective_at_global_optimum_is_minus_2log2():
    """p_g = p_r: the optimal critic is D = 1/2 everywhere and V(D*, G) = -2 log 2 exactly."""
    gan = with_exact_critic("js", P_R, P_R)
    x = torch.randn(500, 1, dtype=torch.float64)
    assert torch.equal(gan.prob_real(x), torch.full((500,), 0.5, dtype=torch.float64))
    assert float(gan.objective(x, gan.sample(300)).detach()) == pytest.approx(-2 * LOG2, abs=1e-15)
    assert float(gan.divergence_estimate(x, gan.sample(300))) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.theory("T29", "T30", "T31")
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_dual_bound_at_optimal_critic_equals_divergence(divergence):
    """F(T*) = D_f(p_r || p_g) for T* = f'(p_r / p_g) (DV: T* = log p_r/p_g + c); GAN: F = 2 JS - 2 log 2."""
    # E_p[T*] with T* = -q/p needs q/p bounded under p: give reverse KL the narrower p_g.
    p, q = (P_G, P_R) if divergence == "reverse_kl" else (P_R, P_G)
    gan = with_exact_critic(divergence, p, q)
    x_r, x_g = quantile_points(*p, 200_000), quantile_points(*q, 200_000)
    expected = scipy_divergence(divergence, p, q)
    assert float(gan.divergence_estimate(x_r, x_g)) == pytest.approx(expected, rel=2e-3, abs=1e-4)
    objective = float(gan.objective(x_r, x_g).detach())
    assert objective == pytest.approx(2 * expected - 2 * LOG2 if divergence == "js" else expected, rel=2e-3, abs=2e-4)
    # any other critic gives a lower bound: shift the optimal raw output
    gan.discriminator.net = ExactCritic(lambda log_r: OPTIMAL_RAW[divergence](0.8 * log_r + 0.1), p, q)
    assert float(gan.divergence_estimate(x_r, x_g)) < expected


@pytest.mark.theory("T28")
def test_optimal_discriminator_is_sigmoid_of_log_ratio_and_stable():
    log_p_r = torch.tensor([-1.0, -800.0, -2.0, 0.0], dtype=torch.float64)
    log_p_g = torch.tensor([-1.0, -801.0, -900.0, 3.0], dtype=torch.float64)
    p_r, p_g = log_p_r.exp(), log_p_g.exp()
    d = optimal_discriminator(log_p_r, log_p_g)
    assert torch.allclose(d[[0, 3]], (p_r / (p_r + p_g))[[0, 3]])
    assert float(d[1]) == pytest.approx(math.e / (1 + math.e))  # both densities underflow; the ratio does not
    assert float(d[2]) == 1.0


# ---------------------------------------------------------------------- losses


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_minimax_generator_gradient_is_the_objective_gradient(divergence):
    """The minimax generator loss differs from F only by the real-data term: same generator gradient."""
    torch.manual_seed(0)
    gan = GAN(2, latent_dim=3, generator_hidden=(8,), discriminator_hidden=(8,), divergence=divergence,
              generator_loss="minimax", dtype=torch.float64)
    x_real, z = torch.randn(32, 2, dtype=torch.float64), gan.sample_latent(16)
    params = list(gan.generator.parameters())
    grads_loss = torch.autograd.grad(gan.generator_loss(gan(z)), params)
    grads_obj = torch.autograd.grad(gan.objective(x_real, gan(z)), params)
    for a, b in zip(grads_loss, grads_obj):
        assert torch.allclose(a, b, atol=1e-12)
    # the critic's loss reaches every critic parameter, the generator loss every generator parameter
    named = list(gan.discriminator.named_parameters())
    d_grads = torch.autograd.grad(gan.discriminator_loss(x_real, gan(z).detach()), [p for _, p in named])
    for (name, _), g in zip(named, d_grads):
        if divergence == "dv_kl" and name == "net.layers.2.bias":  # the DV bound is invariant to T + c (T31)
            assert torch.equal(g, torch.zeros_like(g))
        else:
            assert bool((g != 0).any()), name
    assert all(bool((g != 0).any()) for g in grads_loss)


def test_js_losses_are_goodfellows_cross_entropies():
    torch.manual_seed(0)
    gan = GAN(3, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,), dtype=torch.float64)
    x_real, x_fake = torch.randn(20, 3, dtype=torch.float64), gan.sample(12)
    d_real, d_fake = gan.prob_real(x_real), gan.prob_real(x_fake)
    bce = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
    assert torch.allclose(gan.discriminator_loss(x_real, x_fake), bce)
    assert torch.allclose(gan.objective(x_real, x_fake), torch.log(d_real).mean() + torch.log1p(-d_fake).mean())
    assert torch.allclose(gan.generator_loss(x_fake), F.binary_cross_entropy(d_fake, torch.ones_like(d_fake)))
    gan.generator_loss_name = "minimax"
    assert torch.allclose(gan.generator_loss(x_fake), torch.log1p(-d_fake).mean())
    assert torch.allclose(gan.discriminator(x_real), torch.log(d_real))  # T = log D (GAN row of Table 1)


@pytest.mark.parametrize("generator_loss", GENERATOR_LOSSES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_every_divergence_trains_a_few_steps(divergence, generator_loss):
    gan = GAN(2, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,), divergence=divergence,
              generator_loss=generator_loss)
    result = fit_adversarial(gan, torch.randn(128, 2), epochs=2, batch_size=64, progress=False, seed=0)
    assert isinstance(result, AdversarialResult) and result.epochs_run == 2 and result.num_train == 128
    assert set(result.history) == {"d_loss", "g_loss", "divergence", "time"}
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in result.history.values())
    assert result.config["divergence"] == divergence and result.config["generator_loss"] == generator_loss


# ---------------------------------------------------------------------- the model contract


@pytest.mark.parametrize("data_dim, shape", [(3, (3,)), ((4, 2), (4, 2))])
def test_shapes_seeds_and_state_dict_round_trip(data_dim, shape):
    gan = GAN(data_dim, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,), dtype=torch.float64)
    x = gan.sample(5, generator=torch.Generator().manual_seed(3))
    assert x.shape == (5, *shape) and x.dtype == torch.float64 and not x.requires_grad
    assert torch.equal(x, gan.sample(5, generator=torch.Generator().manual_seed(3)))
    assert gan.discriminator(x).shape == (5,) and gan.discriminator_loss(x, x).shape == ()
    other = GAN(data_dim, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,), dtype=torch.float64)
    other.load_state_dict(gan.state_dict())
    assert torch.equal(other.sample(5, generator=torch.Generator().manual_seed(3)), x)
    assert GAN.is_discrete is False


def test_log_prob_raises_no_density_error():
    gan = GAN(2, latent_dim=2, generator_hidden=(4,), discriminator_hidden=(4,))
    with pytest.raises(NoDensityError, match="samples, not a density") as info:
        gan.log_prob(torch.zeros(3, 2))
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, VIModelsError)
    assert "KernelDensity" in str(info.value) and "likelihood model" in str(info.value)


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("generator_loss", GENERATOR_LOSSES)
def test_gan_moves_samples_toward_a_2d_toy(generator_loss):
    bundle = load_dataset("moons", n_samples=2000, n_test=1000)
    gan = GAN(2, latent_dim=2, generator_hidden=(64, 64), discriminator_hidden=(64, 64), generator_loss=generator_loss)

    def distances():
        fake = gan.sample(1000, generator=torch.Generator().manual_seed(1))
        sw = sliced_wasserstein(fake, bundle.test, 200, generator=torch.Generator().manual_seed(0))
        return float(sw), float(mmd(fake, bundle.test, bandwidth=0.5))

    sw0, mmd0 = distances()
    result = fit_adversarial(gan, bundle, epochs=30, batch_size=128, lr_g=2e-3, lr_d=2e-3, progress=False, seed=0)
    sw1, mmd1 = distances()
    assert sw1 < sw0 / 3 and mmd1 < mmd0 / 3
    assert result.history["divergence"][-1] < result.history["divergence"][0]


def test_checkpoint_resume_is_bit_exact(tmp_path):
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * 2 + 1

    def make():
        torch.manual_seed(7)
        return GAN(2, latent_dim=2, generator_hidden=(16,), discriminator_hidden=(16,), divergence="kl")

    options = {"batch_size": 64, "d_steps": 2, "lr_g": 1e-3, "lr_d": 1e-3, "progress": False, "seed": 3}
    straight = make()
    full = fit_adversarial(straight, data, epochs=4, checkpoint_dir=tmp_path / "a", **options)
    resumed = make()
    fit_adversarial(resumed, data, epochs=2, checkpoint_dir=tmp_path / "b", **options)
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    second = fit_adversarial(make(), data, epochs=4, checkpoint_dir=tmp_path / "b", resume=True, **options)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, second.gan.state_dict()[key]), key
    for key in ("d_loss", "g_loss", "divergence"):
        assert full.history[key] == second.history[key]
    assert second.epochs_run == 4

    loaded = make()
    load_modules(tmp_path / "b" / CHECKPOINT_NAME, loaded, None)  # the engine's loader reads it
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in loaded.state_dict().items())

    js_gan = GAN(2, latent_dim=2, generator_hidden=(16,), discriminator_hidden=(16,), divergence="js")
    with pytest.raises(CheckpointError, match="divergence='kl'"):
        fit_adversarial(js_gan, data, epochs=5, checkpoint_dir=tmp_path / "b", resume=True, **options)
    save_checkpoint(tmp_path / "c" / CHECKPOINT_NAME, {"epoch": 1})
    with pytest.raises(CheckpointError, match="not written by fit_adversarial"):
        fit_adversarial(make(), data, epochs=5, checkpoint_dir=tmp_path / "c", resume=True, **options)


def test_callback_stops_and_non_finite_loss_names_epoch_and_step(tmp_path):
    data = torch.randn(128, 2)
    gan = GAN(2, latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,))
    result = fit_adversarial(gan, data, epochs=5, batch_size=64, progress=False, seed=0,
                             callbacks=[lambda epoch, logs: epoch == 2])
    assert result.stopped_early and result.epochs_run == 2

    def poison(epoch, logs):
        with torch.no_grad():
            next(gan.generator.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"discriminator loss became nan at epoch 2, step 1.*intact"):
        fit_adversarial(gan, data, epochs=3, batch_size=64, progress=False, seed=0, checkpoint_dir=tmp_path,
                        callbacks=[poison])


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs, match", [
    ({"divergence": "wasserstein"}, "expected divergence to be one of"),
    ({"generator_loss": "hinge"}, "expected generator_loss to be one of"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"discriminator_hidden": 16}, "discriminator_hidden|hidden_dims"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GAN(2, **kwargs)
    with pytest.raises(ConfigError):
        GAN(0)


def test_bad_batches_and_calls():
    gan = GAN(2, latent_dim=2, generator_hidden=(4,), discriminator_hidden=(4,))
    x = torch.randn(6, 2)
    with pytest.raises(DataError, match=r"expected x_real of shape \(B, 2\), got \(6, 3\)"):
        gan.discriminator_loss(torch.randn(6, 3), x)
    with pytest.raises(DataError, match="dtype"):
        gan.discriminator_loss(x.double(), x)
    with pytest.raises(DataError, match="finite"):
        gan.discriminator_loss(torch.full((6, 2), float("nan")), x)
    with pytest.raises(ConfigError, match="n to be an integer >= 1"):
        gan.sample(0)
    with pytest.raises(ConfigError, match="divergence='js'"):
        GAN(2, divergence="kl").prob_real(x)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": -1}, ConfigError, "epochs"),
    ({"batch_size": 0}, ConfigError, "batch_size"),
    ({"lr_g": 0.0}, ConfigError, "lr_g"),
    ({"lr_d": float("nan")}, ConfigError, "lr_d"),
    ({"betas": (1.0, 0.9)}, ConfigError, "betas"),
    ({"d_steps": 0}, ConfigError, "d_steps"),
    ({"resume": True}, ConfigError, "checkpoint_dir"),
    ({"device": "tpu9"}, ConfigError, "device"),
])
def test_bad_fit_arguments(kwargs, error, match):
    gan = GAN(2, latent_dim=2, generator_hidden=(4,), discriminator_hidden=(4,))
    with pytest.raises(error, match=match):
        fit_adversarial(gan, torch.randn(16, 2), progress=False, **kwargs)


def test_bad_fit_data_and_models():
    gan = GAN(2, latent_dim=2, generator_hidden=(4,), discriminator_hidden=(4,))
    with pytest.raises(DataError, match="finite"):
        fit_adversarial(gan, torch.tensor([[0.0, float("inf")]] * 4), progress=False)
    with pytest.raises(DataError, match=r"shape \(B, 2\)"):
        fit_adversarial(gan, torch.randn(16, 3), progress=False)
    with pytest.raises(ConfigError, match="expected a GAN module"):
        fit_adversarial(nn.Linear(2, 2), torch.randn(16, 2), progress=False)
    gan.discriminator.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters in gan.discriminator"):
        fit_adversarial(gan, torch.randn(16, 2), progress=False)
