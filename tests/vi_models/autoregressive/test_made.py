"""Tests of vi_models.autoregressive.MADE: the autoregressive property of the masks, the exact
density against scipy's conditionals, and ancestral sampling against the conditionals (T25).

The shared density contract (shapes, seeds, gradients, save/load, normalisation) lives in
test_density_contract.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from vi_models import VAE
from vi_models.autoregressive.made import MADE
from vi_models.errors import ConfigError, DataError

ORDER = [2, 0, 3, 1]


@torch.no_grad()
def make_made(conditional: str, dim: int = 4, order=ORDER, seed: int = 0, **kwargs) -> MADE:
    torch.manual_seed(seed)
    made = MADE(dim, (24, 24), conditional=conditional, order=order, dtype=torch.float64, **kwargs)
    for p in made.parameters():
        p.add_(0.3 * torch.randn_like(p))  # a spread-out, strongly dependent distribution
    return made


@pytest.mark.parametrize("conditional", ["gaussian_mixture", "bernoulli", "categorical"])
def test_conditional_j_depends_only_on_earlier_coordinates(conditional: str) -> None:
    made = make_made(conditional, num_components=2, num_levels=4)
    x = torch.randn(4, dtype=torch.float64) if conditional == "gaussian_mixture" else torch.rand(4, dtype=torch.float64)
    # d params / d input through the network's features (the site value is discrete for categorical)
    jac = torch.autograd.functional.jacobian(lambda u: made.nets[0](u).reshape(-1, 4), x)  # (P, D_out, D_in)
    depends = jac.abs().sum(0) > 0  # (D_out, D_in)
    position = {v: i for i, v in enumerate(ORDER)}
    allowed = torch.tensor([[position[k] < position[j] for k in range(4)] for j in range(4)])
    assert not (depends & ~allowed).any(), "a conditional sees its own or a later coordinate"
    assert (depends | ~allowed).all(), "the masks cut a permitted dependency"


@pytest.mark.theory("T25")
def test_gaussian_mixture_log_prob_is_the_product_of_scipy_conditionals() -> None:
    made = make_made("gaussian_mixture", num_components=3)
    x = torch.randn(5, 4, dtype=torch.float64)
    params = made.conditionals(x).detach().numpy()  # (B, D, 3K)
    expected = np.zeros(5)
    for b, j in itertools.product(range(5), range(4)):
        logits, loc, raw = np.split(params[b, j], 3)
        weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        scale = np.logaddexp(0, raw) + 1e-3  # softplus + floor
        expected[b] += np.log(np.sum(weights * stats.norm.pdf(x[b, j].item(), loc, scale)))
    np.testing.assert_allclose(made.log_prob(x).detach().numpy(), expected, rtol=1e-10)


@pytest.mark.theory("T25")
@pytest.mark.parametrize("num_orders", [1, 3])
def test_categorical_sampling_matches_the_conditionals(num_orders: int) -> None:
    """Ancestral draws, tallied over all 27 configurations, against exp(log_prob): chi-square."""
    made = make_made("categorical", dim=3, order=[1, 2, 0], num_levels=3, num_orders=num_orders)
    values = [(k + 0.5) / 3 for k in range(3)]
    configs = torch.tensor(list(itertools.product(values, repeat=3)), dtype=torch.float64)
    probs = made.log_prob(configs).detach().exp()
    n = 20_000
    draws = made.sample(n, generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) <= set(values)
    codes = (made.levels(draws) * torch.tensor([9, 3, 1])).sum(-1)
    counts = torch.bincount(codes, minlength=27).numpy()
    assert stats.chisquare(counts, (probs * n).numpy()).pvalue > 1e-3


@pytest.mark.theory("T25")
def test_gaussian_mixture_sampling_matches_the_density() -> None:
    """Moments of ancestral draws against the same moments integrated over the exact density."""
    made = make_made("gaussian_mixture", dim=2, order=[1, 0], num_components=2)
    draws = made.sample(40_000, generator=torch.Generator().manual_seed(0))
    step = 0.05
    centres = torch.arange(-10 + step / 2, 10, step, dtype=torch.float64)
    grid = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        w = made.log_prob(grid).exp() * step**2
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-3)
    mean = (w[:, None] * grid).sum(0)
    cov = (w[:, None, None] * (grid - mean)[:, :, None] * (grid - mean)[:, None, :]).sum(0)
    sem = (cov.diagonal() / draws.shape[0]).sqrt()
    assert ((draws.mean(0) - mean).abs() < 5 * sem).all()
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0.05, atol=0.05)


def test_ensemble_over_orders_is_the_uniform_mixture_of_its_members() -> None:
    ensemble = make_made("bernoulli", num_orders=3)
    assert ensemble.orders.shape == (3, 4) and ensemble.orders[0].tolist() == ORDER
    x = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    members = []
    for m in range(3):  # each member on its own: a one-network MADE with that order and those weights
        single = MADE(4, (24, 24), conditional="bernoulli", order=ensemble.orders[m], dtype=torch.float64)
        single.nets[0].load_state_dict(ensemble.nets[m].state_dict())
        members.append(single.log_prob(x))
    expected = torch.logsumexp(torch.stack(members), 0) - np.log(3)
    torch.testing.assert_close(ensemble.log_prob(x), expected)


def test_from_members_averages_separately_fitted_models() -> None:
    members = [make_made("bernoulli", order=torch.randperm(4, generator=torch.Generator().manual_seed(s)), seed=s)
               for s in range(3)]
    ensemble = MADE.from_members(members)
    assert ensemble.num_orders == 3 and torch.equal(ensemble.orders[1], members[1].orders[0])
    x = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    expected = torch.logsumexp(torch.stack([m.log_prob(x) for m in members]), 0) - np.log(3)
    torch.testing.assert_close(ensemble.log_prob(x), expected)
    with torch.no_grad():  # copied, not shared
        members[0].nets[0].layers[0].weight.add_(1.0)
    torch.testing.assert_close(ensemble.log_prob(x), expected)
    with pytest.raises(ConfigError, match="built alike"):
        MADE.from_members([members[0], MADE(4, (8,), conditional="bernoulli")])


def test_categorical_matches_the_vae_levels_and_forward_observes_levels() -> None:
    made = MADE(64, (64,), conditional="categorical", num_levels=17)
    vae = VAE(64, 2, (8,), likelihood="categorical", num_levels=17)
    x = (torch.randint(0, 17, (5, 64)) + torch.rand(5, 64)) / 17
    assert torch.equal(made.levels(x), vae.levels(x))
    assert torch.equal(made(x), made.levels(x))
    assert made(num_samples=2).dtype == torch.long
    assert made.is_discrete and MADE(3, (8,), conditional="bernoulli").is_discrete
    assert not MADE(3, (8,)).is_discrete


def test_sampling_takes_one_pass_per_coordinate() -> None:
    made = MADE(5, (8,), conditional="bernoulli")
    calls = []
    handle = made.nets[0].register_forward_hook(lambda *args: calls.append(1))
    made.sample(3)
    handle.remove()
    assert len(calls) == 5


def test_made_validation_errors() -> None:
    with pytest.raises(ConfigError, match="conditional"):
        MADE(3, (8,), conditional="poisson")
    with pytest.raises(ConfigError, match="hidden width"):
        MADE(8, (4,))
    with pytest.raises(ConfigError, match="permutation"):
        MADE(3, (8,), order=[0, 0, 1])
    with pytest.raises(ConfigError, match="dim"):
        MADE(1, (8,))
    with pytest.raises(DataError, match="binary"):
        MADE(3, (8,), conditional="bernoulli").log_prob(torch.full((2, 3), 0.5))
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        MADE(3, (8,), conditional="categorical").log_prob(torch.full((2, 3), 1.0))
