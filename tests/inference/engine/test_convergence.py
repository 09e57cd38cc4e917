"""The SVI convergence verdict: stationary noise passes, a real trend fails, fit warns."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import ConvergenceWarning, fit
from inference.engine.convergence import elbo_converged


@pytest.mark.parametrize("seed", range(5))
def test_stationary_noise_is_converged_and_a_trend_is_not(seed):
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=3.0, size=600)
    # AR(1) noise as SVI produces: correlated successive steps must not fake a trend
    ar = np.zeros(600)
    for i in range(1, 600):
        ar[i] = 0.8 * ar[i - 1] + noise[i]
    assert elbo_converged(100.0 + ar).converged
    trend = 100.0 + np.linspace(5.0, 0.0, 600) + rng.normal(scale=0.3, size=600)
    report = elbo_converged(trend)
    assert not report.converged and report.t_statistic < -2
    tiny = 100.0 + np.linspace(0.05, 0.0, 600) + rng.normal(scale=0.001, size=600)
    assert elbo_converged(tiny, rtol=1e-3).converged  # significant but negligible


def test_too_few_steps_is_not_converged():
    assert not elbo_converged([1.0, 2.0]).converged


def _model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def test_fit_warns_when_stopped_early_and_not_when_converged():
    x = torch.randn(256) + 20.0
    with pytest.warns(ConvergenceWarning, match="not converged"):
        result = fit(_model, None, x, epochs=3, batch_size=8, lr=0.01, progress=False, seed=0)
    assert result.converged_ is False
    pyro.clear_param_store()
    result = fit(_model, None, x, epochs=40, batch_size=32, lr=0.5, progress=False, seed=0)
    assert result.converged_ is True
