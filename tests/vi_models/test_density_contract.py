"""One contract for every density family: what ``log_prob``/``sample``/the Pyro model promise.

The first part covers the families that are Pyro models with one observed site (flows, MADE):
each is a :class:`Family` entry of :data:`FAMILIES`. The second part (:data:`EVERY_FAMILY`) puts
every family the package has behind the common density interface: VAE, Gaussian mixture, KDE,
RealNVP, spline flow, MAF, MADE, GAN (no density) and DDPM. A family's builder returns a
fresh model with small networks whose parameters are nudged off their near-identity start (so
the density is not just the base Gaussian), and ``data(n, generator)`` draws observations it
can score.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from guides import GaussianEncoder
from inference import fit, log_likelihood
from vi_models import DDPM, GAN, VAE, GaussianMixture, KernelDensity, NoDensityError
from vi_models.autoregressive.made import MADE
from vi_models.errors import ConfigError, DataError, VIModelsError
from vi_models.flows.models import MAF, RealNVP, SplineFlow
from vi_models.vae.vae import DATA_PLATE, OBSERVED


@dataclass(frozen=True)
class Family:
    """How to build and feed one density family.

    Attributes:
        build: ``dtype -> model`` with ``log_prob``, ``sample``, ``is_discrete`` and a Pyro ``forward``.
        data: ``(n, generator) -> (n, *data_shape)`` observations in the model's support (float64).
        grid: ``(low, high)`` box holding all but a negligible part of a 2-D density's mass, to
            integrate on; ``None`` when it does not apply.
        values: per-coordinate values of a discrete model (all configurations are enumerated).
    """

    build: Callable[[torch.dtype], nn.Module]
    data: Callable[[int, torch.Generator], torch.Tensor]
    grid: tuple[float, float] | None = None
    values: tuple[float, ...] | None = None


@torch.no_grad()
def _nudge(model: nn.Module, scale: float = 0.05) -> nn.Module:
    """Move every parameter a little (seeded by the caller), so the density is not the base one."""
    for p in model.parameters():
        p.add_(scale * torch.randn_like(p))
    return model


def _real2d(n: int, gen: torch.Generator) -> torch.Tensor:
    """Two correlated, skewed coordinates: a density no family fits exactly."""
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return torch.stack([z[:, 0], 0.5 * z[:, 0] ** 2 + 0.5 * z[:, 1] - 0.5], dim=-1)


def _unit2d(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(_real2d(n, gen)) * 0.98 + 0.01


def _binary4(n: int, gen: torch.Generator) -> torch.Tensor:
    """A first bit, then three noisy copies of it."""
    first = torch.rand(n, 1, generator=gen, dtype=torch.float64) < 0.3
    flips = torch.rand(n, 3, generator=gen, dtype=torch.float64) < 0.2
    return torch.cat([first, first ^ flips], -1).to(torch.float64)


def _levels3(n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 3, (n, 1), generator=gen)
    k = torch.cat([k, (k + torch.randint(0, 2, (n, 2), generator=gen)) % 3], -1)
    return (k + torch.rand(n, 3, generator=gen, dtype=torch.float64)) / 3


SMALL = {"hidden_dims": (16, 16)}
FAMILIES: dict[str, Family] = {
    "realnvp": Family(lambda dt: _nudge(RealNVP(2, 4, **SMALL, dtype=dt)), _real2d, grid=(-9.0, 9.0)),
    "realnvp-unit": Family(
        lambda dt: _nudge(RealNVP(2, 2, **SMALL, domain="unit", dtype=dt)), _unit2d, grid=(-0.0556, 1.0556)
    ),
    "spline": Family(lambda dt: _nudge(SplineFlow(2, 2, **SMALL, dtype=dt)), _real2d, grid=(-9.0, 9.0)),
    "maf": Family(lambda dt: _nudge(MAF(2, 3, **SMALL, dtype=dt)), _real2d, grid=(-9.0, 9.0)),
    "spline-mixture-base": Family(
        lambda dt: _nudge(SplineFlow(2, 2, **SMALL, base="mixture", num_components=3, dtype=dt)), _real2d,
        grid=(-9.0, 9.0),
    ),
    "made-gaussian-mixture": Family(
        lambda dt: _nudge(MADE(2, (16, 16), conditional="gaussian_mixture", num_components=3, dtype=dt)),
        _real2d,
        grid=(-9.0, 9.0),
    ),
    "made-bernoulli": Family(
        lambda dt: _nudge(MADE(4, (16, 16), conditional="bernoulli", dtype=dt)), _binary4, values=(0.0, 1.0)
    ),
    "made-categorical": Family(
        lambda dt: _nudge(MADE(3, (16, 16), conditional="categorical", num_levels=3, dtype=dt)),
        _levels3,
        values=(0.5 / 3, 1.5 / 3, 2.5 / 3),
    ),
    "made-categorical-3-orders": Family(
        lambda dt: _nudge(MADE(3, (16,), conditional="categorical", num_levels=3, num_orders=3, dtype=dt)),
        _levels3,
        values=(0.5 / 3, 1.5 / 3, 2.5 / 3),
    ),
}
#: The theory result each family's normalisation test checks (default: T22, change of variables).
THEORY = {name: "T25" for name in FAMILIES if name.startswith("made")}

B = 6


def _family_params(keys: list[str] | None = None) -> list:
    keys = list(FAMILIES) if keys is None else keys
    return [pytest.param(k, marks=pytest.mark.theory(THEORY.get(k, "T22")), id=k) for k in keys]


def build(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FAMILIES[name].build(dtype)


def data(name: str, n: int = B, seed: int = 1) -> torch.Tensor:
    return FAMILIES[name].data(n, torch.Generator().manual_seed(seed))


def _empty_guide(*args, **kwargs) -> None:
    """Guide of a model whose only sample site is observed: the ELBO is log p(x)."""


@pytest.mark.parametrize("name", list(FAMILIES))
def test_shapes_and_dtypes(name: str) -> None:
    model = build(name)
    x = data(name)
    lp = model.log_prob(x)
    assert lp.shape == (B,) and lp.dtype == torch.float64 and torch.isfinite(lp).all()
    s = model.sample(5)
    assert s.shape == (5, *x.shape[1:]) and s.dtype == torch.float64 and torch.isfinite(s).all()
    assert torch.isfinite(model.log_prob(s)).all(), "samples must lie in the support"
    assert isinstance(model.is_discrete, bool)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pyro_model_scores_log_prob(name: str) -> None:
    model = build(name)
    x = data(name)
    tr = poutine.trace(model).get_trace(x)
    sites = [s for s in tr.nodes.values() if s["type"] == "sample" and s["name"] != DATA_PLATE]
    assert [s["name"] for s in sites] == [OBSERVED] and sites[0]["is_observed"]
    assert [f.name for f in sites[0]["cond_indep_stack"]] == [DATA_PLATE]
    tr.compute_log_prob()
    torch.testing.assert_close(tr.nodes[OBSERVED]["log_prob"], model.log_prob(x))
    # The engine's exact path goes through model.log_prob.
    torch.testing.assert_close(log_likelihood(model, None, x, method="exact"), model.log_prob(x).detach())
    draw = model(num_samples=4)
    assert draw.shape == (4, *x.shape[1:])
    with pytest.raises(ConfigError, match="exactly one"):
        model()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_seeded_reproducibility(name: str) -> None:
    a, b = build(name, seed=3), build(name, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    s1 = a.sample(7, generator=torch.Generator().manual_seed(11))
    s2 = a.sample(7, generator=torch.Generator().manual_seed(11))
    assert torch.equal(s1, s2)
    pyro.set_rng_seed(5)
    m1 = a(num_samples=3)
    pyro.set_rng_seed(5)
    m2 = a(num_samples=3)
    assert torch.equal(m1, m2)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradients_reach_every_parameter(name: str) -> None:
    """Through the Pyro model and Trace_ELBO's loss_and_grads (the path inference.fit takes)."""
    model = build(name)
    x = data(name, n=16)
    loss = Trace_ELBO().loss_and_grads(model, _empty_guide, x)
    torch.testing.assert_close(torch.tensor(loss, dtype=torch.float64), -model.log_prob(x).sum().detach())
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {pname}"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient at {pname}"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_save_load_round_trip(name: str) -> None:
    model = build(name, seed=0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = build(name, seed=1)
    x = data(name)
    assert not torch.allclose(other.log_prob(x), model.log_prob(x))
    other.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(other.log_prob(x), model.log_prob(x))
    g = lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(other.sample(4, generator=g()), model.sample(4, generator=g()))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_dtype_move_and_data_checks(name: str) -> None:
    model = build(name).to(torch.float32)
    x32 = data(name).to(torch.float32)
    assert model.log_prob(x32).dtype == torch.float32
    assert model.sample(2).dtype == torch.float32
    with pytest.raises(DataError, match="dtype"):
        model.log_prob(x32.double())
    with pytest.raises(DataError, match="expected x of shape"):
        model.log_prob(x32[:, :1])


@pytest.mark.parametrize("name", _family_params([k for k, f in FAMILIES.items() if f.grid is not None]))
def test_density_integrates_to_one_on_grid(name: str) -> None:
    low, high = FAMILIES[name].grid
    model = build(name)
    n = 500
    step = (high - low) / n
    centres = torch.linspace(low + step / 2, high - step / 2, n, dtype=torch.float64)  # midpoint rule
    grid = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * step**2
    assert abs(float(mass) - 1.0) < 2e-3


@pytest.mark.parametrize("name", _family_params([k for k, f in FAMILIES.items() if f.values is not None]))
def test_discrete_mass_sums_to_one(name: str) -> None:
    fam = FAMILIES[name]
    model = build(name)
    assert model.is_discrete
    dim = data(name).shape[1]
    configs = torch.tensor(list(itertools.product(fam.values, repeat=dim)), dtype=torch.float64)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(configs), 0)
    assert abs(float(total)) < 1e-10


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fit_through_the_engine_decreases_the_loss(name: str) -> None:
    model = build(name)
    x = data(name, n=256)
    before = -float(model.log_prob(x).mean().detach())
    result = fit(model, None, x, loss="elbo", epochs=4, batch_size=64, lr=1e-2, seed=0, progress=False, check_convergence=False)
    after = -float(model.log_prob(x).mean().detach())
    assert math.isfinite(result.final_loss) and result.history["loss"][-1] < result.history["loss"][0]
    assert after < before


# ============================================================================ every family
#
# The density interface of issue 5, over every family the package has: ``log_prob`` (exact, or
# the VAE's IWAE estimate; a GAN raises NoDensityError), ``sample(n, generator=...)``, seeds,
# gradients of each family's training loss reaching every trainable parameter, state_dict
# round-trips, and exact densities integrating to 1 on a 2-D grid.



@dataclass(frozen=True)
class Density:
    """One family behind the common interface.

    Attributes:
        build: ``() -> (model, guide or None)``, float64, seeded by the caller.
        log_prob: ``(model, guide, x) -> (B,)``; ``None`` for a family without a density.
        loss: ``(model, guide, x) -> scalar`` the family trains on; ``None`` without parameters.
        exact: whether ``log_prob`` is the exact log-density (so it must integrate to 1).
        grid: ``(low, high, points per axis, tolerance)`` of the integration check.
    """

    build: Callable[[], tuple[nn.Module, nn.Module | None]]
    log_prob: Callable[..., torch.Tensor] | None
    loss: Callable[..., torch.Tensor] | None
    exact: bool = True
    grid: tuple[float, float, int, float] | None = (-9.0, 9.0, 400, 2e-3)


def _exact(model, guide, x):
    return model.log_prob(x)


def _nll(model, guide, x):
    return -model.log_prob(x).sum()


def _iwae(model, guide, x):
    torch.manual_seed(0)  # the estimate is random: common random numbers make it comparable
    return log_likelihood(model, guide, x, method="iwae", num_samples=64)


def _vae():
    model = VAE(2, 2, hidden_dims=(16,), likelihood="gaussian", dtype=torch.float64)
    return _nudge(model), _nudge(GaussianEncoder(2, 2, (16,), dtype=torch.float64))


def _gmm():
    model = GaussianMixture(3, 2, covariance="full", dtype=torch.float64)
    return _nudge(model, 0.7), None


def _kde():
    points = _real2d(40, torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item()))
    return KernelDensity("gaussian", 0.4, dtype=torch.float64).fit(points), None


def _gan():
    return GAN(2, 2, (16,), (16,), dtype=torch.float64), None


def _gan_loss(model, guide, x):
    fake = model(model.sample_latent(x.shape[0]))
    return model.discriminator_loss(x, fake) + model.generator_loss(fake)


def _ddpm():
    # T = 10 steps with a short schedule: abar_T ~ 0.4, so even an untrained network maps the
    # prior onto a box the grid covers.
    betas = torch.linspace(0.01, 0.15, 10, dtype=torch.float64)
    return _nudge(DDPM(2, T=10, schedule=betas, hidden_dim=16, num_blocks=1, dtype=torch.float64)), None


def _ddpm_log_prob(model, guide, x):
    return model.log_prob(x, trace="exact", rtol=1e-7, atol=1e-7)


def _from_pyro_family(name: str) -> Callable[[], tuple[nn.Module, None]]:
    return lambda: (FAMILIES[name].build(torch.float64), None)


EVERY_FAMILY: dict[str, Density] = {
    "vae": Density(_vae, _iwae, lambda m, g, x: Trace_ELBO().differentiable_loss(m, g, x), exact=False, grid=None),
    "gmm": Density(_gmm, _exact, _nll),
    "kde": Density(_kde, _exact, None),
    "realnvp": Density(_from_pyro_family("realnvp"), _exact, _nll, grid=None),
    "spline": Density(_from_pyro_family("spline"), _exact, _nll, grid=None),
    "maf": Density(_from_pyro_family("maf"), _exact, _nll, grid=None),
    "made": Density(_from_pyro_family("made-gaussian-mixture"), _exact, _nll, grid=None),
    "gan": Density(_gan, None, _gan_loss, exact=False, grid=None),
    "ddpm": Density(_ddpm, _ddpm_log_prob, lambda m, g, x: m.simple_loss(x).sum(), grid=(-7.0, 7.0, 50, 2e-2)),
}
# The flows' and MADE's grids are integrated by test_density_integrates_to_one_on_grid above
# (same builders): grid=None here keeps the file fast.
EVERY_THEORY = {"gmm": "T10", "kde": "T24", "made": "T25", "ddpm": "T21", "vae": "T7", "gan": "T28"}


def _every(keys: list[str] | None = None) -> list:
    keys = list(EVERY_FAMILY) if keys is None else keys
    return [pytest.param(k, marks=pytest.mark.theory(EVERY_THEORY.get(k, "T22")), id=k) for k in keys]


def build_any(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module | None]:
    torch.manual_seed(seed)
    return EVERY_FAMILY[name].build()


def _state(module: nn.Module | None) -> dict[str, torch.Tensor]:
    return {} if module is None else {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", _every())
def test_every_family_log_prob_and_sample_shapes(name: str) -> None:
    fam = EVERY_FAMILY[name]
    model, guide = build_any(name)
    x = _real2d(B, torch.Generator().manual_seed(1))
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 2) and s.dtype == torch.float64 and torch.isfinite(s).all()
    assert model.is_discrete is False  # a density on R^D
    if fam.log_prob is None:
        with pytest.raises(NoDensityError, match="not a density") as info:
            model.log_prob(x)
        assert isinstance(info.value, VIModelsError) and isinstance(info.value, NotImplementedError)
        return
    with torch.no_grad():
        lp = fam.log_prob(model, guide, x)
        assert lp.shape == (B,) and lp.dtype == torch.float64 and torch.isfinite(lp).all()
        assert torch.isfinite(fam.log_prob(model, guide, s)).all(), "samples must lie in the support"


@pytest.mark.parametrize("name", _every())
def test_every_family_is_reproducible_from_seeds(name: str) -> None:
    (a, ga), (b, gb) = build_any(name, seed=3), build_any(name, seed=3)
    for one, other in ((a, b), (ga, gb)):
        for (ka, va), (kb, vb) in zip(_state(one).items(), _state(other).items()):
            assert ka == kb and torch.equal(va, vb), ka
    draw = lambda: a.sample(7, generator=torch.Generator().manual_seed(11))
    assert torch.equal(draw(), draw())
    assert not torch.equal(draw(), a.sample(7, generator=torch.Generator().manual_seed(12)))


@pytest.mark.parametrize("name", _every())
def test_every_family_gradients_reach_every_parameter(name: str) -> None:
    fam = EVERY_FAMILY[name]
    model, guide = build_any(name)
    x = _real2d(16, torch.Generator().manual_seed(1))
    params = [(f"{label}.{n}", p) for label, mod in (("model", model), ("guide", guide)) if mod is not None
              for n, p in mod.named_parameters() if p.requires_grad]
    if fam.loss is None:  # KDE: nothing to train; the density is still differentiable in x
        assert params == []
        x.requires_grad_(True)
        model.log_prob(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        return
    assert params
    fam.loss(model, guide, x).backward()
    for pname, p in params:
        assert p.grad is not None, f"no gradient reached {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"zero or non-finite gradient at {pname}"


@pytest.mark.parametrize("name", _every())
def test_every_family_save_load_round_trip(name: str) -> None:
    fam = EVERY_FAMILY[name]
    model, guide = build_any(name, seed=0)
    buffers = []
    for module in (model, guide):
        buffer = io.BytesIO()
        torch.save(_state(module), buffer)
        buffer.seek(0)
        buffers.append(buffer)
    other, other_guide = build_any(name, seed=1)
    x = _real2d(B, torch.Generator().manual_seed(1))
    g = lambda: torch.Generator().manual_seed(0)
    assert not torch.allclose(other.sample(4, generator=g()), model.sample(4, generator=g()))
    for module, buffer in zip((other, other_guide), buffers):
        if module is not None:
            module.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(other.sample(4, generator=g()), model.sample(4, generator=g()))
    if fam.log_prob is not None:
        with torch.no_grad():
            torch.testing.assert_close(fam.log_prob(other, other_guide, x), fam.log_prob(model, guide, x))


@pytest.mark.parametrize("name", _every([k for k, f in EVERY_FAMILY.items() if f.exact and f.grid is not None]))
def test_every_exact_density_integrates_to_one(name: str) -> None:
    low, high, n, tol = EVERY_FAMILY[name].grid
    model, guide = build_any(name)
    step = (high - low) / n
    centres = torch.linspace(low + step / 2, high - step / 2, n, dtype=torch.float64)  # midpoint rule
    with torch.no_grad():
        mass = EVERY_FAMILY[name].log_prob(model, guide, torch.cartesian_prod(centres, centres)).exp().sum() * step**2
    assert abs(float(mass) - 1.0) < tol
