"""Tests of inference.data.toy2d against closed forms and an independent port of FFJORD's generator.

Each density must integrate to one on a grid, its sampler must agree with its log density
(binned chi-square and the entropy identity E_p[log p] = int p log p), and FFJORD's own
generator (ported to numpy below, using scikit-learn where FFJORD does) must agree with it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import sklearn.datasets
import torch
from scipy import stats

from inference.data.toy2d import TOY_DENSITIES, Pinwheel, ToyDensity, get_toy_density
from vi_models.errors import ConfigError, DataError

NAMES = sorted(TOY_DENSITIES)
# 8gaussians checks a Gaussian mixture's density and sampler (T10), pinwheel a change of variables (T22)
THEORY = {"8gaussians": "T10", "pinwheel": "T22"}
N_SAMPLES = 20_000
COARSE = 10  # grid cells per side of a chi-square bin


def ffjord_reference(name: str, n: int, rng: np.random.RandomState) -> np.ndarray:
    """FFJORD ``lib/toy_data.py::inf_train_gen`` in numpy, float64, with ``rng`` in place of
    the global ``np.random`` (2spirals, checkerboard) and of scikit-learn's default seed."""
    if name == "swissroll":
        return sklearn.datasets.make_swiss_roll(n_samples=n, noise=1.0, random_state=rng)[0][:, [0, 2]] / 5
    if name == "circles":
        return sklearn.datasets.make_circles(n_samples=n, factor=0.5, noise=0.08, random_state=rng)[0] * 3
    if name == "moons":
        data = sklearn.datasets.make_moons(n_samples=n, noise=0.1, random_state=rng)[0]
        return data * 2 + np.array([-1, -0.2])
    if name == "8gaussians":
        s = 1.0 / np.sqrt(2)
        centers = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
        centers = [(4.0 * x, 4.0 * y) for x, y in centers]
        dataset = []
        for _ in range(n):
            point = rng.randn(2) * 0.5
            center = centers[rng.randint(8)]
            point[0] += center[0]
            point[1] += center[1]
            dataset.append(point)
        return np.array(dataset) / 1.414
    if name == "pinwheel":
        num_classes, rate = 5, 0.25
        rads = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
        features = rng.randn(n, 2) * np.array([0.3, 0.1])
        features[:, 0] += 1.0
        labels = np.repeat(np.arange(num_classes), n // num_classes)
        angles = rads[labels] + rate * np.exp(features[:, 0])
        rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
        rotations = np.reshape(rotations.T, (-1, 2, 2))
        return 2 * rng.permutation(np.einsum("ti,tij->tj", features, rotations))
    if name == "2spirals":
        m = np.sqrt(rng.rand(n // 2, 1)) * 540 * (2 * np.pi) / 360
        d1x = -np.cos(m) * m + rng.rand(n // 2, 1) * 0.5
        d1y = np.sin(m) * m + rng.rand(n // 2, 1) * 0.5
        x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
        return x + rng.randn(*x.shape) * 0.1
    if name == "checkerboard":
        x1 = rng.rand(n) * 4 - 2
        x2 = rng.rand(n) - rng.randint(0, 2, n) * 2 + np.floor(x1) % 2
        return np.concatenate([x1[:, None], x2[:, None]], 1) * 2
    raise AssertionError(name)


@dataclass
class GridDensity:
    """A density evaluated at the centres of an h x h grid over its bounds."""

    density: ToyDensity
    h: float
    log_p: np.ndarray  # (nx, ny)

    @property
    def mass(self) -> np.ndarray:
        return np.exp(self.log_p) * self.h**2

    def chi_square_p_value(self, points: np.ndarray) -> float:
        """p-value of the counts of ``points`` in COARSE x COARSE-cell bins against the grid mass."""
        xmin, _, ymin, _ = self.density.bounds
        nx, ny = self.log_p.shape
        expected = self.mass.reshape(nx // COARSE, COARSE, ny // COARSE, COARSE).sum((1, 3)) * len(points)
        ix = np.floor((points[:, 0] - xmin) / (COARSE * self.h)).astype(int)
        iy = np.floor((points[:, 1] - ymin) / (COARSE * self.h)).astype(int)
        inside = (ix >= 0) & (ix < nx // COARSE) & (iy >= 0) & (iy < ny // COARSE)
        assert inside.all(), f"{(~inside).sum()} points outside the bounds {self.density.bounds}"
        observed = np.zeros_like(expected)
        np.add.at(observed, (ix, iy), 1)
        expected, observed = expected.ravel(), observed.ravel()
        small = expected < 5  # pool sparse bins so the chi-square approximation holds
        expected = np.append(expected[~small], expected[small].sum())
        observed = np.append(observed[~small], observed[small].sum())
        statistic = ((observed - expected) ** 2 / np.maximum(expected, 1e-300)).sum()
        return float(stats.chi2.sf(statistic, df=len(expected) - 1))


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=[pytest.mark.theory(THEORY[n])] if n in THEORY else []) for n in NAMES],
)
def grid(request: pytest.FixtureRequest) -> GridDensity:
    density = get_toy_density(request.param)
    h = {"pinwheel": 0.08, "2spirals": 0.075}.get(request.param, 0.05)
    xmin, xmax, ymin, ymax = density.bounds
    nx, ny = round((xmax - xmin) / h), round((ymax - ymin) / h)
    assert nx % COARSE == 0 and ny % COARSE == 0
    xs = xmin + h * (np.arange(nx) + 0.5)
    ys = ymin + h * (np.arange(ny) + 0.5)
    centres = torch.as_tensor(np.stack(np.meshgrid(xs, ys, indexing="ij"), -1))
    return GridDensity(density, h, density.log_prob(centres).numpy())


def test_integrates_to_one(grid: GridDensity) -> None:
    total = grid.mass.sum()
    if grid.density.name == "checkerboard":
        # cell centres never sit on a square's edge: the midpoint sum is exact
        assert total == pytest.approx(1.0, abs=1e-12)
    else:
        assert total == pytest.approx(1.0, abs=1e-6)


def test_samples_agree_with_log_prob(grid: GridDensity) -> None:
    x = grid.density.sample(N_SAMPLES, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert grid.chi_square_p_value(x.numpy()) > 1e-4
    # E_p[log p] from samples against the grid's int p log p (the negative entropy)
    log_p = grid.density.log_prob(x).numpy()
    mass = grid.mass
    neg_entropy = (mass * np.where(mass > 0, grid.log_p, 0.0)).sum()
    assert abs(log_p.mean() - neg_entropy) < 4 * log_p.std() / math.sqrt(N_SAMPLES) + 1e-9


def test_ffjord_generator_agrees_with_log_prob_and_sampler(grid: GridDensity) -> None:
    name = grid.density.name
    reference = ffjord_reference(name, N_SAMPLES, np.random.RandomState(0))
    assert grid.chi_square_p_value(reference) > 1e-4
    ours = grid.density.sample(N_SAMPLES, generator=torch.Generator().manual_seed(2), dtype=torch.float64).numpy()
    for direction in (0.0, 0.7, 1.9):  # marginals along three directions, two-sample KS
        u = np.array([math.cos(direction), math.sin(direction)])
        assert stats.ks_2samp(ours @ u, reference @ u).pvalue > 1e-4
    if name == "pinwheel":
        # the check has power: FFJORD's rotation by -a, mirrored to a rotation by +a, is rejected
        assert grid.chi_square_p_value(reference * np.array([1.0, -1.0])) < 1e-12


@pytest.mark.parametrize("name", ["moons", "swissroll", "2spirals"])
def test_quadrature_converged(name: str) -> None:
    """Doubling the nodes moves log p by < 1e-8 at samples and wherever log p > -50 in the bounds."""
    density = get_toy_density(name)
    xmin, xmax, ymin, ymax = density.bounds
    uniform = torch.rand(2000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    spread = torch.tensor([xmin, ymin]) + uniform * torch.tensor([xmax - xmin, ymax - ymin])
    samples = density.sample(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = torch.cat([samples, spread])
    log_p = density.log_prob(x)
    finer = type(density)(panels=2 * density.panels, order=density.order).log_prob(x)
    assert (log_p > -50).sum() > 1500
    assert (log_p - finer)[log_p > -50].abs().max() < 1e-8


def test_circles_matches_direct_angle_quadrature() -> None:
    """The Bessel closed form equals a brute-force average over the ring's angle."""
    x = torch.tensor([[0.0, 0.0], [3.1, 0.2], [-1.0, 1.2], [0.5, -4.0]], dtype=torch.float64)
    theta = torch.linspace(0, 2 * math.pi, 4001, dtype=torch.float64)[:-1]
    s2 = 0.24**2
    p = 0.0
    for radius in (3.0, 1.5):
        ring = radius * torch.stack([theta.cos(), theta.sin()], -1)
        sq = ((x[:, None, :] - ring) ** 2).sum(-1)
        p = p + 0.5 * torch.exp(-sq / (2 * s2)).mean(-1) / (2 * math.pi * s2)
    np.testing.assert_allclose(get_toy_density("circles").log_prob(x).numpy(), p.log().numpy(), rtol=1e-10)


@pytest.mark.theory("T22")
def test_pinwheel_log_det_matches_autograd() -> None:
    density = Pinwheel()
    gen = torch.Generator().manual_seed(4)
    # spread out enough that some points have a negative determinant (the fold region)
    features = torch.randn(40, 2, generator=gen, dtype=torch.float64) * torch.tensor([0.8, 1.5])
    features[:, 0] += 1.0
    labels = torch.randint(0, 5, (40,), generator=gen)
    for f, c in zip(features, labels):
        jac = torch.autograd.functional.jacobian(lambda v, c=c: density.transform(v[None], c[None])[0], f)
        expected = torch.linalg.det(jac).abs().log()
        assert float(density.log_abs_det_jacobian(f[None])[0]) == pytest.approx(float(expected), abs=1e-10)
    assert (1 + 0.25 * features[:, 1] * features[:, 0].exp() < 0).any()


def test_pinwheel_finds_the_generating_preimage() -> None:
    """p(x) >= (1/5) N(f) / |det dx/df| for the (f, c) that produced x."""
    density = Pinwheel()
    gen = torch.Generator().manual_seed(5)
    f = torch.randn(2000, 2, generator=gen, dtype=torch.float64) * torch.tensor([0.3, 0.1])
    f[:, 0] += 1.0
    x = density.transform(f, torch.randint(0, 5, (2000,), generator=gen))
    normal = torch.distributions.Normal(
        torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.3, 0.1], dtype=torch.float64)
    )
    term = normal.log_prob(f).sum(-1) - density.log_abs_det_jacobian(f) - math.log(5)
    assert (density.log_prob(x) >= term - 1e-9).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "checkerboard"])
def test_log_prob_is_differentiable(name: str) -> None:
    density = get_toy_density(name)
    x = density.sample(2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.autograd.gradcheck(density.log_prob, (x.requires_grad_(),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible_and_leaves_global_rng_alone(name: str) -> None:
    density = get_toy_density(name)
    state = torch.get_rng_state()
    a = density.sample(50, generator=torch.Generator().manual_seed(7))
    b = density.sample(50, generator=torch.Generator().manual_seed(7))
    c = density.sample(50, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dtype_device_and_shapes() -> None:
    density = get_toy_density("moons")
    x = density.sample(12, generator=torch.Generator().manual_seed(0), dtype=torch.float32, device="cpu")
    assert x.shape == (12, 2) and x.dtype == torch.float32
    lp = density.log_prob(x.reshape(3, 4, 2))
    assert lp.shape == (3, 4) and lp.dtype == torch.float32
    assert torch.allclose(lp.reshape(-1), density.log_prob(x.double()).float())
    assert get_toy_density("checkerboard").log_prob(torch.tensor([[0.5, 2.5], [5.0, 0.0]])).isneginf().all()


@pytest.mark.parametrize(
    ("alias", "name"),
    [("8-gaussians", "8gaussians"), ("Swiss Roll", "swissroll"), ("swiss-roll", "swissroll"),
     ("2-spirals", "2spirals"), ("two_spirals", "2spirals"), ("PINWHEEL", "pinwheel")],
)
def test_aliases(alias: str, name: str) -> None:
    assert get_toy_density(alias).name == name


def test_bad_input_errors() -> None:
    with pytest.raises(ConfigError, match=r"8gaussians.*got 'banana'"):
        get_toy_density("banana")
    with pytest.raises(DataError, match=r"expected points of shape \(\.\.\., 2\), got shape \(5, 3\)"):
        get_toy_density("moons").log_prob(torch.zeros(5, 3))
    with pytest.raises(ConfigError, match="n to be an integer >= 1"):
        get_toy_density("moons").sample(0)
    with pytest.raises(ConfigError, match="floating dtype"):
        get_toy_density("moons").sample(3, dtype=torch.int64)
