"""Sufficient statistics of the mixtures' M-steps (vi_models.mixtures.statistics): they add over
disjoint chunks, the M-step of their sum is m_step on all the data for any shift, and it equals
the textbook weighted formulas written out per component (Bishop eqs. 9.24-9.26, 9.59-9.60)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vi_models import BernoulliMixture, CategoricalMixture, GaussianMixture
from vi_models.mixtures.gaussian import COVARIANCE_TYPES

N, K, D = 120, 3, 4


def _case(kind: str):
    g = torch.Generator().manual_seed(0)
    resp = torch.rand(N, K, generator=g, dtype=torch.float64)
    resp = resp / resp.sum(1, keepdim=True)
    if kind == "bernoulli":
        return BernoulliMixture(K, D, dtype=torch.float64), (torch.rand(N, D, generator=g) < 0.3).double(), resp
    if kind == "categorical":
        levels = torch.randint(0, 5, (N, D), generator=g)
        x = (levels + torch.rand(N, D, generator=g, dtype=torch.float64)) / 5
        return CategoricalMixture(K, D, 5, dtype=torch.float64), x, resp
    x = 100.0 + torch.randn(N, D, generator=g, dtype=torch.float64) @ torch.tril(torch.ones(D, D, dtype=torch.float64))
    return GaussianMixture(K, D, kind, dtype=torch.float64), x, resp


@pytest.mark.parametrize("kind", [*COVARIANCE_TYPES, "bernoulli", "categorical"])
def test_statistics_add_over_chunks_and_give_the_m_step_for_any_shift(kind):
    model, x, resp = _case(kind)
    want = model.m_step(x, resp, reg_covar=1e-6)
    for shift in (x.mean(0), x[7], torch.full((D,), 95.0, dtype=torch.float64)):
        parts = [model.sufficient_statistics(xc, rc, shift=shift) for xc, rc in zip(x.split(50), resp.split(50))]
        total = {k: sum(p[k] for p in parts) for k in parts[0]}
        whole = model.sufficient_statistics(x, resp, shift=shift)
        for k in whole:
            torch.testing.assert_close(total[k], whole[k], rtol=1e-12, atol=1e-9)
        got = model.m_step_from_statistics(total, shift=shift, reg_covar=1e-6)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_gaussian_m_step_is_the_weighted_formula_per_component(covariance):
    model, x, resp = _case(covariance)
    got = model.m_step_from_statistics(model.sufficient_statistics(x, resp), reg_covar=1e-6)  # shift: the origin
    xn, rn = x.numpy(), resp.numpy()
    nk = rn.sum(0)
    means = rn.T @ xn / nk[:, None]
    covs = np.stack([(rn[:, k, None] * (xn - means[k])).T @ (xn - means[k]) / nk[k] for k in range(K)])
    want = {"full": covs, "tied": (covs * nk[:, None, None]).sum(0) / N,
            "diag": covs.diagonal(0, 1, 2), "spherical": covs.diagonal(0, 1, 2).mean(-1)}[covariance]
    want = want + 1e-6 * (np.eye(D) if covariance in ("full", "tied") else 1.0)
    np.testing.assert_allclose(got["weights"].numpy(), nk / N, rtol=1e-12)
    np.testing.assert_allclose(got["means"].numpy(), means, rtol=1e-12)
    # uncentred around the origin with data at 100: the cancellation costs digits, still within 1e-7
    np.testing.assert_allclose(got["covariances"].numpy(), want, rtol=1e-7, atol=1e-7)


def test_discrete_m_steps_are_the_smoothed_weighted_frequencies():
    model, x, resp = _case("bernoulli")
    got = model.m_step(x, resp)
    nk = resp.sum(0)
    torch.testing.assert_close(got["probs"], (resp.T @ x + 1.0) / (nk[:, None] + 2.0))
    model, x, resp = _case("categorical")
    got = model.m_step(x, resp)
    levels = model.levels(x)
    for k in range(K):
        for j in range(D):
            counts = torch.stack([(resp[:, k] * (levels[:, j] == level)).sum() for level in range(5)])
            torch.testing.assert_close(got["probs"][k, j], (counts + 1.0) / (resp[:, k].sum() + 5.0))
