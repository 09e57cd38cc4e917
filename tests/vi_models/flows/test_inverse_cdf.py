"""THEORY T9: latent variables by the inverse CDF, checked with Kolmogorov-Smirnov tests."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from inference import ConfigError
from vi_models.flows.inverse_cdf import inverse_cdf_model

TARGETS = {
    "exponential": (dist.Exponential(torch.tensor(2.0)), stats.expon(scale=0.5)),
    "laplace": (dist.Laplace(torch.tensor(1.0), torch.tensor(0.5)), stats.laplace(loc=1.0, scale=0.5)),
    "cauchy": (dist.Cauchy(torch.tensor(-1.0), torch.tensor(2.0)), stats.cauchy(loc=-1.0, scale=2.0)),
}


@pytest.mark.theory("T9")
@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("base", ["uniform", "normal"])
def test_inverse_cdf_samples_follow_the_target(float64, name, base):
    target, reference = TARGETS[name]
    model = inverse_cdf_model(target, base=base)
    torch.manual_seed(0)
    x = model.sample((20_000,))
    assert stats.kstest(x.numpy(), reference.cdf).pvalue > 1e-3
    # The change-of-variables density equals the target's (THEORY T22, one dimension).
    grid = torch.tensor(reference.ppf([0.05, 0.3, 0.5, 0.7, 0.95]))
    assert torch.allclose(model.log_prob(grid), torch.tensor(reference.logpdf(grid.numpy())), atol=1e-8)


@pytest.mark.theory("T9")
def test_probability_integral_transform_is_uniform(float64):
    target = dist.Gamma(torch.tensor(3.0), torch.tensor(2.0))
    x = target.sample((20_000,))
    u = target.cdf(x) if hasattr(target, "cdf") and _has_cdf(target) else torch.tensor(stats.gamma(3.0, scale=0.5).cdf(x.numpy()))
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(x.numpy(), stats.gamma(3.0, scale=0.5).cdf).pvalue > 1e-3


def _has_cdf(d):
    try:
        d.cdf(torch.tensor(1.0))
        return True
    except NotImplementedError:
        return False


def test_rejects_targets_without_icdf():
    with pytest.raises(ConfigError, match="cdf/icdf"):
        inverse_cdf_model(dist.Gamma(torch.tensor(3.0), torch.tensor(2.0)))
    with pytest.raises(ConfigError, match="univariate"):
        inverse_cdf_model(dist.Normal(torch.zeros(2), 1.0).to_event(1))
