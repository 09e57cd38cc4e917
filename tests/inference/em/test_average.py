"""Averaged EM (inference.fit_em_average) and GaussianMixture.average: the average is the
equal-weight mixture of the members (checked against scipy densities written out), the runs are
fit_em's own runs at consecutive seeds, and its KL to a known density is below the members' mean
(Jensen, pointwise on the test draws). T10: the averaged density is a Gaussian mixture that
integrates to 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from inference import fit_em, fit_em_average
from inference.data.toy2d import get_toy_density
from vi_models import GaussianMixture
from vi_models.errors import ConfigError


def fitted(k: int, x: torch.Tensor, seed: int, covariance: str = "full") -> GaussianMixture:
    gm = GaussianMixture(k, x.shape[1], covariance=covariance, dtype=torch.float64)
    fit_em(gm, x, seed=seed, max_iter=50, progress=False)
    return gm


def scipy_log_density(gm: GaussianMixture, x: np.ndarray) -> np.ndarray:
    k, d = gm.n_components, gm.n_features
    cov = gm.covariances.numpy()
    full = {"full": lambda i: cov[i], "tied": lambda i: cov, "diag": lambda i: np.diag(cov[i]),
            "spherical": lambda i: cov[i] * np.eye(d)}[gm.covariance]
    dens = sum(float(gm.weights[i].detach()) * stats.multivariate_normal.pdf(x, gm.means[i].detach().numpy(), full(i)) for i in range(k))
    return np.log(dens)


@pytest.fixture(scope="module")
def moons() -> torch.Tensor:
    return get_toy_density("moons").sample(600, generator=torch.Generator().manual_seed(0)).double()


@pytest.mark.theory("T10")
@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_the_average_is_the_mixture_of_the_members(covariance, moons):
    members = [fitted(3, moons, seed, covariance) for seed in (0, 1, 2)]
    avg = GaussianMixture.average(members, weights=[1.0, 2.0, 1.0])
    assert avg.n_components == 9 and avg.covariance == ("full" if covariance == "tied" else covariance)
    x = moons[:50].numpy()
    want = np.log(sum(w * np.exp(scipy_log_density(m, x)) for w, m in zip((0.25, 0.5, 0.25), members)))
    np.testing.assert_allclose(avg.log_prob(moons[:50]).detach().numpy(), want, rtol=1e-10, atol=1e-10)
    # a density: integrates to 1 on a grid covering the data
    g = torch.linspace(-10, 10, 501, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = float(avg.log_prob(grid).detach().exp().sum()) * float(g[1] - g[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_fit_em_average_is_the_average_of_fit_em_runs_at_consecutive_seeds(moons):
    got = fit_em_average(GaussianMixture(4, 2, dtype=torch.float64), moons, n_fits=3, seed=5, max_iter=50)
    want = GaussianMixture.average([fitted(4, moons, seed) for seed in (5, 6, 7)])
    torch.testing.assert_close(got.log_prob(moons).detach(), want.log_prob(moons).detach(), rtol=1e-12, atol=1e-12)
    boot = fit_em_average(GaussianMixture(4, 2, dtype=torch.float64), moons, n_fits=2, bootstrap=True, max_iter=50)
    assert boot.n_components == 8 and not torch.allclose(boot.means, want.means[:8])


@pytest.mark.theory("T5")
def test_averaging_lowers_kl_to_a_known_density_below_the_members_mean():
    density = get_toy_density("moons")
    gen = torch.Generator().manual_seed(1)
    train = density.sample(2000, generator=gen).double()
    test = density.sample(20_000, generator=gen).double()
    log_p = density.log_prob(test).double()
    members = [fitted(8, train, seed) for seed in range(5)]
    kls = [float((log_p - m.log_prob(test).detach()).mean()) for m in members]
    kl_avg = float((log_p - GaussianMixture.average(members).log_prob(test).detach()).mean())
    assert kl_avg <= sum(kls) / len(kls)  # Jensen: log of a mean >= the mean of the logs, at every point
    assert kl_avg < min(kls)  # and here below the best member: the variance the average removes
    assert all(k > 0 for k in kls) and math.isfinite(kl_avg)


def test_bad_input_is_refused(moons):
    a, b = fitted(2, moons, 0), fitted(2, moons, 0, "diag")
    with pytest.raises(ConfigError, match="covariance"):
        GaussianMixture.average([a, b])
    with pytest.raises(ConfigError, match="non-empty"):
        GaussianMixture.average([])
    with pytest.raises(ConfigError, match="positive weights"):
        GaussianMixture.average([a, a], weights=[1.0, 0.0])
    with pytest.raises(ConfigError, match="n_init"):
        fit_em_average(GaussianMixture(2, 2, dtype=torch.float64), moons, n_fits=2, n_init=3)
    with pytest.raises(ConfigError, match="GaussianMixture"):
        fit_em_average(GaussianMixture(2, 2, priors=True, dtype=torch.float64), moons)


def test_cli_average_fits_evaluates_and_refuses_bad_options(tmp_path, capsys):
    import json

    from inference import load_dataset
    from inference.cli.commands import _open_run, _split_validation, main

    out = tmp_path / "avg"
    assert main(["fit", "gmm", "--data", "moons", "--out", str(out), "-k", "3", "--average", "4", "--max-iter", "30",
                 "--no-progress"]) == 0
    _, _, bundle, model, _, _ = _open_run(str(out), "cpu")
    assert model.n_components == 12
    # the run's data: the training split, then the validation rows (EM uses both); seeds 0..3
    split, val = _split_validation(bundle, 0.1, 0)
    rows = torch.cat([split.train, val]).double()
    with pytest.warns(Warning):  # max_iter=30 leaves some runs unconverged, as in the CLI
        want = fit_em_average(GaussianMixture(3, 2, dtype=torch.float64), rows, 4, max_iter=30)
    x = load_dataset("moons").test[:100].double()
    assert main(["evaluate", str(out), "--max-test", "100"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_log_likelihood"] == pytest.approx(float(want.log_prob(x).detach().mean()), abs=1e-6)
    capsys.readouterr()
    for bad in (["--average", "0"], ["--average", "2", "--n-init", "3"], ["--average", "2", "--method", "svi"]):
        assert main(["fit", "gmm", "--data", "moons", "--out", str(tmp_path / "bad"), "-k", "2", *bad]) == 2
        assert "--average" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_every_run_must_converge_for_the_average_to_say_so(moons):
    with pytest.warns(Warning):
        short = fit_em_average(GaussianMixture(4, 2, dtype=torch.float64), moons, n_fits=2, max_iter=1)
    assert short.converged_ is False
    assert fit_em_average(GaussianMixture(2, 2, dtype=torch.float64), moons, n_fits=2, max_iter=200).converged_ is True
    with pytest.raises(ConfigError, match="dtype and device"):
        GaussianMixture.average([fitted(2, moons, 0), GaussianMixture(2, 2, dtype=torch.float32)])
